//! A small, general HTTP/1.1 server (feature `server`): one mio reactor
//! thread that accepts, reads, parses with [`RequestParser`] and writes, and
//! a pool of worker threads that run a [`Handler`] on complete requests.
//!
//! Used by fake_s3. The Stoat server has its own reactor, tuned for its
//! pipeline; both share the parser and the response writer of this crate.
//!
//! A connection is owned by one thread at a time: the reactor while it reads
//! and writes, or a worker while its request is handled (it travels as
//! `Box<Connection>`, and the reactor ignores its events until it returns).
//! A handler's reply may ask for a delay (the reactor holds the response
//! until it is due, without blocking any thread) or for the connection to be
//! dropped without an answer; both exist for fault injection.
//!
//! Invariants:
//! - Only the reactor thread touches a socket.
//! - Responses on a connection go out in request order: the next request is
//!   parsed only once the previous response has been written in full.
//! - Memory per connection is bounded by the parser's [`Limits`] plus the
//!   response being written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::{
    write_continue, write_response_head, HttpError, Limits, Method, Progress, RequestHead, RequestParser, ResponseHead,
};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Bytes read from a socket per call.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How often idle connections are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// Input buffers above this are released between requests.
const RETAINED_BUFFER_BYTES: usize = 64 * 1024;

/// A complete request as a handler sees it.
#[derive(Debug)]
pub struct Request<'a> {
    pub head: &'a RequestHead,
    /// The decoded body. The handler may take it (`std::mem::take`) to keep
    /// it without a copy.
    pub body: &'a mut Vec<u8>,
    pub peer: Option<SocketAddr>,
}

/// A response body: owned bytes, or a range of bytes shared with others
/// (an object served to many readers without a copy per reader).
#[derive(Clone)]
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    Shared(Arc<dyn AsRef<[u8]> + Send + Sync>, Range<usize>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.len())
    }
}

impl Body {
    pub fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::Bytes(bytes) => bytes.len(),
            Body::Shared(_, range) => range.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Body::Empty => &[],
            Body::Bytes(bytes) => bytes,
            Body::Shared(shared, range) => shared.as_ref().as_ref().get(range.clone()).unwrap_or(&[]),
        }
    }
}

/// What a handler answers: a response, and how the connection treats it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Headers written as given (besides Content-Length and Connection).
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Body,
    /// The Content-Length announced when it is not the body's length (a
    /// HEAD response announces the length a GET would send).
    pub content_length: Option<u64>,
    /// Hold the response this long before writing it.
    pub delay: Duration,
    /// Close the connection once the response is written.
    pub close: bool,
    /// Close the connection (after `delay`) without writing anything.
    pub drop_connection: bool,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            content_length: None,
            delay: Duration::ZERO,
            close: false,
            drop_connection: false,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, body: Body) -> Response {
        self.body = body;
        self
    }
}

/// The application: called on a worker thread for every complete request.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request<'_>) -> Response;

    /// The answer to a request that could not be parsed (the connection is
    /// closed after it). `head` is present when the head was parsed.
    fn refuse(&self, error: &HttpError, head: Option<&RequestHead>) -> Response {
        let _ = head;
        let message = error.to_string().into_bytes();
        Response::new(error.status()).header("Content-Type", "text/plain").body(Body::Bytes(message))
    }
}

/// Settings of a [`Server`].
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Threads that run the handler.
    pub workers: usize,
    pub max_connections: usize,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits { head_bytes_max: 64 * 1024, body_bytes_max: 64 * 1024 * 1024 },
            workers: 8,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// A running server; stopped (threads joined, connections closed) by
/// [`Server::stop`] or on drop.
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    waker: Arc<Waker>,
    threads: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts serving `listener` (already bound) with `handler`.
    pub fn start<H: Handler>(
        listener: std::net::TcpListener,
        config: ServerConfig,
        handler: Arc<H>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let (work_sender, work_receiver) = crossbeam_channel::unbounded::<Box<Connection>>();
        let (done_sender, done_receiver) = crossbeam_channel::unbounded::<Box<Connection>>();
        let mut threads = Vec::new();
        for index in 0..config.workers.max(1) {
            let work = work_receiver.clone();
            let done = done_sender.clone();
            let waker = waker.clone();
            let handler = handler.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-worker-{index}"))
                    .spawn(move || run_worker(&*handler, work, done, &waker))?,
            );
        }
        let mut reactor = Reactor {
            poll,
            listener: TcpListener::from_std(listener),
            connections: Slab::new(),
            work: work_sender,
            done: done_receiver,
            stopping: stopping.clone(),
            timers: BinaryHeap::new(),
            config,
            handler,
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        };
        reactor.poll.registry().register(&mut reactor.listener, LISTENER, Interest::READABLE)?;
        threads.push(std::thread::Builder::new().name("http-reactor".into()).spawn(move || reactor.run())?);
        Ok(Server { local_addr, stopping, waker, threads })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection and joins the threads.
    pub fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        for thread in self.threads.drain(..).rev() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_worker(
    handler: &dyn HandlerObject,
    work: Receiver<Box<Connection>>,
    done: Sender<Box<Connection>>,
    waker: &Waker,
) {
    while let Ok(mut connection) = work.recv() {
        connection.handle(handler);
        if done.send(connection).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// Object-safe view of a handler, so workers need no generic parameter.
trait HandlerObject: Send + Sync {
    fn handle(&self, request: Request<'_>) -> Response;
}

impl<H: Handler> HandlerObject for H {
    fn handle(&self, request: Request<'_>) -> Response {
        Handler::handle(self, request)
    }
}

enum Slot {
    Home(Box<Connection>),
    /// With a worker; its events are ignored until it returns.
    Away,
    /// Its response is held back until the timer for it fires.
    Parked(Box<Connection>),
}

struct Reactor<H: Handler> {
    poll: Poll,
    listener: TcpListener,
    connections: Slab<Slot>,
    work: Sender<Box<Connection>>,
    done: Receiver<Box<Connection>>,
    stopping: Arc<AtomicBool>,
    /// Connections whose response is held back, by due time.
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    config: ServerConfig,
    handler: Arc<H>,
    scratch: Box<[u8]>,
}

/// What driving a connection ended with.
enum Drive {
    Keep,
    Close,
    HandOff,
}

impl<H: Handler> Reactor<H> {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        while !self.stopping.load(Ordering::SeqCst) {
            let now = Instant::now();
            let mut timeout = next_sweep.saturating_duration_since(now);
            if let Some(Reverse((due, _))) = self.timers.peek() {
                timeout = timeout.min(due.saturating_duration_since(now));
            }
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.collect_done(),
                    Token(key) => self.service(key),
                }
            }
            self.fire_timers(Instant::now());
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    if self.connections.len() >= self.config.max_connections {
                        continue; // dropped: closes the socket
                    }
                    let _ = stream.set_nodelay(true);
                    let entry = self.connections.vacant_entry();
                    let key = entry.key();
                    let registered =
                        self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE);
                    if registered.is_ok() {
                        let connection = Connection::new(key, stream, Some(peer), self.config.limits);
                        entry.insert(Slot::Home(Box::new(connection)));
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock, or out of descriptors: the backlog waits; the
                // sweep tries again.
                Err(_) => return,
            }
        }
    }

    /// Connections back from the workers, their responses inside.
    fn collect_done(&mut self) {
        let now = Instant::now();
        while let Ok(connection) = self.done.try_recv() {
            let key = connection.key;
            match connection.due {
                Some(due) if due > now => {
                    self.timers.push(Reverse((due, key)));
                    self.connections[key] = Slot::Parked(connection);
                }
                _ => {
                    self.connections[key] = Slot::Home(connection);
                    self.service(key);
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((due, key))) = self.timers.peek() {
            if due > now {
                return;
            }
            self.timers.pop();
            if let Some(slot @ Slot::Parked(_)) = self.connections.get_mut(key) {
                if let Slot::Parked(connection) = std::mem::replace(slot, Slot::Away) {
                    *slot = Slot::Home(connection);
                    self.service(key);
                }
            }
        }
    }

    fn service(&mut self, key: usize) {
        // Events of a connection that is with a worker or parked are
        // ignored: it is driven again when it comes home, which reads and
        // writes whatever became ready meanwhile.
        let Some(slot @ Slot::Home(_)) = self.connections.get_mut(key) else {
            return;
        };
        let Slot::Home(mut connection) = std::mem::replace(slot, Slot::Away) else {
            return;
        };
        // A response held back (or a drop decided) by the handler takes
        // effect here, once it is due.
        connection.due = None;
        match connection.drive(&*self.handler, &mut self.scratch) {
            Drive::Keep => self.connections[key] = Slot::Home(connection),
            Drive::Close => {
                self.connections.remove(key);
            }
            Drive::HandOff => {
                connection.last_activity = Instant::now();
                if let Err(error) = self.work.send(connection) {
                    // The workers have stopped: the server is stopping.
                    drop(error);
                    self.connections.remove(key);
                }
            }
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.accept();
        let idle_timeout = self.config.idle_timeout;
        let expired: Vec<usize> = self
            .connections
            .iter()
            .filter_map(|(key, slot)| match slot {
                Slot::Home(connection) if now.duration_since(connection.last_activity) > idle_timeout => Some(key),
                _ => None,
            })
            .collect();
        for key in expired {
            self.connections.remove(key);
        }
    }
}

/// One client connection: its socket, parser and buffers.
struct Connection {
    key: usize,
    stream: TcpStream,
    peer: Option<SocketAddr>,
    parser: RequestParser,
    input: Vec<u8>,
    body: Vec<u8>,
    /// The response head (and small bodies) not yet written.
    output: Vec<u8>,
    output_written: usize,
    /// The response body after `output`, not yet written from `body_written`.
    output_body: Body,
    body_written: usize,
    /// The response is held until then.
    due: Option<Instant>,
    /// Close without writing anything more (an injected fault, or an error).
    drop_now: bool,
    close_after_write: bool,
    peer_closed: bool,
    last_activity: Instant,
}

impl Connection {
    fn new(key: usize, stream: TcpStream, peer: Option<SocketAddr>, limits: Limits) -> Connection {
        Connection {
            key,
            stream,
            peer,
            parser: RequestParser::new(limits),
            input: Vec::new(),
            body: Vec::new(),
            output: Vec::new(),
            output_written: 0,
            output_body: Body::Empty,
            body_written: 0,
            due: None,
            drop_now: false,
            close_after_write: false,
            peer_closed: false,
            last_activity: Instant::now(),
        }
    }

    /// Runs on a worker: the handler's response becomes the output.
    fn handle(&mut self, handler: &dyn HandlerObject) {
        let head = self.parser.head();
        let is_head = head.method == Method::Head;
        let keep_alive = head.keep_alive;
        let request = Request { head, body: &mut self.body, peer: self.peer };
        // A handler bug must cost one request, not a worker thread and a
        // connection slot that would never come back.
        let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(request)))
            .unwrap_or_else(|_| {
                Response::new(500).header("Content-Type", "text/plain").body(Body::Bytes(b"handler panicked".to_vec()))
            });
        if self.body.capacity() > RETAINED_BUFFER_BYTES {
            self.body = Vec::new();
        }
        self.set_response(response, is_head, keep_alive);
    }

    fn set_response(&mut self, response: Response, is_head: bool, keep_alive: bool) {
        if !response.delay.is_zero() {
            self.due = Some(Instant::now() + response.delay);
        }
        if response.drop_connection {
            self.drop_now = true;
            return;
        }
        let close = response.close || !keep_alive;
        let headers: Vec<(&str, &[u8])> =
            response.headers.iter().map(|(name, value)| (name.as_str(), value.as_slice())).collect();
        let no_body = is_head || response.status == 204 || response.status == 304;
        let length = response.content_length.unwrap_or(response.body.len() as u64);
        let head = ResponseHead {
            status: response.status,
            content_type: None,
            content_length: if response.status == 204 || response.status == 304 { None } else { Some(length as usize) },
            close,
            headers: &headers,
        };
        write_response_head(&mut self.output, &head);
        self.close_after_write |= close;
        if !no_body {
            match response.body {
                Body::Bytes(bytes) if bytes.len() <= 16 * 1024 => self.output.extend_from_slice(&bytes),
                body => {
                    self.output_body = body;
                    self.body_written = 0;
                }
            }
        }
    }

    fn has_output(&self) -> bool {
        self.output_written < self.output.len() || self.body_written < self.output_body.len()
    }

    /// Writes what it can; `Ok(true)` when everything is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.output_written < self.output.len() {
            match self.stream.write(&self.output[self.output_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.output_written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        while self.body_written < self.output_body.len() {
            match self.stream.write(&self.output_body.bytes()[self.body_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.body_written += n,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.output.clear();
        self.output_written = 0;
        self.output_body = Body::Empty;
        self.body_written = 0;
        if self.output.capacity() > RETAINED_BUFFER_BYTES {
            self.output = Vec::new();
        }
        Ok(true)
    }

    /// Reads, parses, writes until the socket would block, a request is
    /// complete (hand-off), or the connection is done.
    fn drive(&mut self, handler: &dyn HandlerRefuse, scratch: &mut [u8]) -> Drive {
        if self.drop_now {
            return Drive::Close;
        }
        loop {
            if self.has_output() {
                match self.flush() {
                    Err(_) => return Drive::Close,
                    Ok(false) => return Drive::Keep,
                    Ok(true) => self.last_activity = Instant::now(),
                }
            }
            if self.close_after_write {
                return Drive::Close;
            }
            match self.parser.parse(&self.input, &mut self.body) {
                Err(error) => {
                    // The head is whole once the body is being read, and also
                    // when a declared length was refused right after the head.
                    let head_parsed =
                        !self.parser.awaiting_head() || matches!(error, HttpError::PayloadTooLarge { .. });
                    let head = head_parsed.then(|| self.parser.head());
                    let mut response = handler.refuse(&error, head);
                    response.close = true;
                    response.delay = Duration::ZERO;
                    self.input.clear();
                    self.set_response(response, false, false);
                }
                Ok((used, progress)) => {
                    self.input.drain(..used);
                    match progress {
                        Progress::Complete => return Drive::HandOff,
                        Progress::HeadReady => {
                            if self.parser.head().expect_continue {
                                write_continue(&mut self.output);
                            }
                        }
                        Progress::NeedMore => {
                            if self.peer_closed {
                                return Drive::Close;
                            }
                            match self.read_some(scratch) {
                                Ok(0) => self.peer_closed = true,
                                Ok(_) => self.last_activity = Instant::now(),
                                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drive::Keep,
                                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                                Err(_) => return Drive::Close,
                            }
                        }
                    }
                }
            }
        }
    }

    fn read_some(&mut self, scratch: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(scratch)?;
        self.input.extend_from_slice(&scratch[..n]);
        if self.input.is_empty() && self.input.capacity() > RETAINED_BUFFER_BYTES {
            self.input = Vec::new();
        }
        Ok(n)
    }
}

/// The part of a handler the reactor calls itself.
trait HandlerRefuse {
    fn refuse(&self, error: &HttpError, head: Option<&RequestHead>) -> Response;
}

impl<H: Handler> HandlerRefuse for H {
    fn refuse(&self, error: &HttpError, head: Option<&RequestHead>) -> Response {
        Handler::refuse(self, error, head)
    }
}

#[cfg(test)]
mod tests;
