//! The S3 client's event loop: one thread on mio keeps many requests in
//! flight, one per pooled HTTP/1.1 keep-alive connection, with connect,
//! read and per-operation timeouts and jittered exponential backoff between
//! attempts.
//!
//! Invariants: every operation taken in gets exactly one completion (also
//! when the store is dropped: the rest fail as transient); at most
//! `connections_max` connections and `queue_depth` operations exist at once;
//! a connection carries one request at a time and goes back to the pool only
//! after a complete response that allows keep-alive; what to retry is
//! decided by `operation.rs`, when to retry here.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use slab::Slab;

use super::operation::{Operation, Step};
use super::request::Target;
use super::response::{Response, ResponseError, ResponseParser};
use super::S3Options;
use crate::log::store::{Completion, OpId, OpOutput, StoreError};
use crate::ops::metrics::{S3Metrics, S3OperationLabels, S3RequestLabels};
use crate::random::SplitMix64;

pub(super) const WAKER: Token = Token(0);
const HEAD_BYTES_MAX: usize = 64 * 1024;
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// An operation the store hands to the client thread. The thread stops when
/// the store drops its sender.
pub(super) struct Submission {
    pub op_id: OpId,
    pub operation: Operation,
    pub reply: Sender<Completion>,
}

/// The delay before attempt `attempt + 1` (`attempt >= 1`): doubling from
/// `first` up to `max`, then a uniformly random point in its upper half, so
/// that clients that failed together do not retry together.
pub fn backoff_delay(attempt: u32, first: Duration, max: Duration, random: &mut SplitMix64) -> Duration {
    let doubled = first.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let ceiling = doubled.min(max).as_micros().max(2) as u64;
    Duration::from_micros(ceiling / 2 + random.below(ceiling / 2 + 1))
}

struct Pending {
    op_id: OpId,
    reply: Sender<Completion>,
    operation: Operation,
    /// Attempts of the current step so far.
    attempts: u32,
    deadline: Instant,
}

enum State {
    Connecting { since: Instant, op: usize },
    Idle { since: Instant },
    Busy { op: usize, out: Vec<u8>, written: usize, parser: ResponseParser, sent_at: Instant, last_progress: Instant },
}

struct Connection {
    stream: TcpStream,
    /// The TLS session on an https connection (boxed: it is large).
    tls: Option<Box<rustls::ClientConnection>>,
    state: State,
}

/// TLS settings and the name checked against the server's certificate.
pub(super) type TlsSettings = (Arc<rustls::ClientConfig>, ServerName<'static>);

/// Why an attempt failed without a usable response.
struct Failure {
    reason: String,
    code: &'static str,
}

pub(super) struct Client {
    poll: Poll,
    inbox: Receiver<Submission>,
    target: Target,
    /// `HOST:PORT` to connect to.
    address: String,
    tls: Option<TlsSettings>,
    options: S3Options,
    metrics: S3Metrics,
    random: SplitMix64,
    ops: Slab<Pending>,
    ready: VecDeque<usize>,
    backoff: Vec<(Instant, usize)>,
    connections: Slab<Connection>,
    /// Idle connections, most recently used last.
    idle: Vec<usize>,
    stopping: bool,
}

impl Client {
    pub(super) fn new(
        poll: Poll,
        inbox: Receiver<Submission>,
        target: Target,
        address: String,
        tls: Option<TlsSettings>,
        options: S3Options,
        metrics: S3Metrics,
    ) -> Client {
        let random = SplitMix64::new(options.seed);
        Client {
            poll,
            inbox,
            target,
            address,
            tls,
            options,
            metrics,
            random,
            ops: Slab::new(),
            ready: VecDeque::new(),
            backoff: Vec::new(),
            connections: Slab::new(),
            idle: Vec::new(),
            stopping: false,
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stopping {
            let timeout = self.next_deadline().map(|deadline| deadline.saturating_duration_since(Instant::now()));
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(%error, "S3 client: poll failed; failing every operation");
                    break;
                }
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.on_connection_event(event.token().0 - 1);
                }
            }
            self.take_messages();
            self.check_timers(Instant::now());
            self.dispatch();
        }
        self.fail_all("the S3 store was closed");
    }

    fn take_messages(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(Submission { op_id, operation, reply }) => self.admit(op_id, operation, reply),
                Err(TryRecvError::Disconnected) => {
                    self.stopping = true;
                    return;
                }
                Err(TryRecvError::Empty) => return,
            }
        }
    }

    fn admit(&mut self, op_id: OpId, operation: Operation, reply: Sender<Completion>) {
        if operation.is_empty() {
            let _ = reply.send(Completion { op_id, result: Ok(OpOutput::Deleted) });
            return;
        }
        let deadline = Instant::now() + self.options.operation_timeout;
        let key = self.ops.insert(Pending { op_id, reply, operation, attempts: 0, deadline });
        self.metrics.in_flight.inc();
        self.ready.push_back(key);
    }

    fn complete(&mut self, key: usize, result: Result<OpOutput, StoreError>) {
        let pending = self.ops.remove(key);
        self.metrics.in_flight.dec();
        let _ = pending.reply.send(Completion { op_id: pending.op_id, result });
    }

    fn fail_all(&mut self, reason: &str) {
        for key in self.ops.iter().map(|(key, _)| key).collect::<Vec<_>>() {
            self.complete(key, Err(StoreError::transient(reason)));
        }
    }

    /// Starts ready operations on idle or new connections, as far as the
    /// connection limit allows.
    fn dispatch(&mut self) {
        while let Some(&key) = self.ready.front() {
            let connection = match self.idle.pop() {
                Some(connection) => Some(connection),
                None if self.connections.len() < self.options.connections_max => None,
                None => return,
            };
            self.ready.pop_front();
            if Instant::now() >= self.ops[key].deadline {
                self.give_up(key, "the operation timed out before it could be sent".into());
                if let Some(connection) = connection {
                    self.idle.push(connection);
                }
                continue;
            }
            match connection {
                Some(connection) => self.start_attempt(connection, key),
                None => self.connect(key),
            }
        }
    }

    fn connect(&mut self, key: usize) {
        let address = self.address.to_socket_addrs().map(|mut addresses| addresses.next());
        let stream = match address {
            Ok(Some(address)) => TcpStream::connect(address),
            Ok(None) => Err(io::Error::other("the endpoint's host resolves to no address")),
            Err(error) => Err(error),
        };
        let mut stream = match stream {
            Ok(stream) => stream,
            Err(error) => return self.retry(key, Failure { reason: format!("connect: {error}"), code: "Connection" }),
        };
        let tls = match &self.tls {
            None => None,
            Some((config, name)) => match rustls::ClientConnection::new(config.clone(), name.clone()) {
                Ok(session) => Some(Box::new(session)),
                Err(error) => return self.complete(key, Err(StoreError::permanent(format!("TLS: {error}")))),
            },
        };
        let entry = self.connections.vacant_entry();
        let token = Token(entry.key() + 1);
        if let Err(error) = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            return self.retry(key, Failure { reason: format!("register: {error}"), code: "Connection" });
        }
        entry.insert(Connection { stream, tls, state: State::Connecting { since: Instant::now(), op: key } });
    }

    /// Sends the operation's current request on a connected connection.
    fn start_attempt(&mut self, connection: usize, key: usize) {
        let pending = &mut self.ops[key];
        let head_only = false;
        let request = pending.operation.request(&self.target).clone();
        let out = match self.target.encode(&request, SystemTime::now()) {
            Ok(out) => out,
            Err(error) => {
                self.idle.push(connection);
                return self.complete(key, Err(StoreError::permanent(error)));
            }
        };
        let now = Instant::now();
        let parser = ResponseParser::new(head_only, HEAD_BYTES_MAX, self.options.response_bytes_max);
        self.connections[connection].state =
            State::Busy { op: key, out, written: 0, parser, sent_at: now, last_progress: now };
        self.drive(connection);
    }

    fn on_connection_event(&mut self, connection: usize) {
        let Some(entry) = self.connections.get_mut(connection) else { return };
        match entry.state {
            State::Connecting { op, .. } => {
                let connected = match entry.stream.take_error() {
                    Ok(Some(error)) | Err(error) => Err(error),
                    Ok(None) => match entry.stream.peer_addr() {
                        Ok(_) => Ok(true),
                        Err(error) if error.kind() == io::ErrorKind::NotConnected => Ok(false),
                        Err(error) => Err(error),
                    },
                };
                match connected {
                    Ok(false) => {}
                    Ok(true) => {
                        let _ = entry.stream.set_nodelay(true);
                        self.start_attempt(connection, op);
                    }
                    Err(error) => {
                        self.connections.remove(connection);
                        self.retry(op, Failure { reason: format!("connect: {error}"), code: "Connection" });
                    }
                }
            }
            State::Idle { .. } => self.check_idle(connection),
            State::Busy { .. } => self.drive(connection),
        }
    }

    /// An idle connection that became readable was closed by the server (or
    /// sent bytes nobody asked for): either way it is done.
    fn check_idle(&mut self, connection: usize) {
        let mut byte = [0u8; 1];
        let read = self.connections[connection].stream.read(&mut byte);
        let done = !matches!(read, Err(error) if error.kind() == io::ErrorKind::WouldBlock);
        if done {
            self.close(connection);
        }
    }

    fn close(&mut self, connection: usize) {
        self.idle.retain(|&idle| idle != connection);
        if let Some(mut entry) = self.connections.try_remove(connection) {
            let _ = self.poll.registry().deregister(&mut entry.stream);
        }
    }

    /// Writes what is left of the request and reads what has arrived.
    fn drive(&mut self, connection: usize) {
        let outcome = self.exchange(connection);
        let State::Busy { op, sent_at, ref out, .. } = self.connections[connection].state else { return };
        // A server may answer before it has read the whole request (an
        // early error): such a connection is not reusable.
        let request_sent = out.is_empty();
        match outcome {
            Ok(None) => {}
            Ok(Some(response)) => {
                let keep = response.keep_alive && request_sent && self.idle.len() < self.options.target_pool_size;
                if keep {
                    self.connections[connection].state = State::Idle { since: Instant::now() };
                    self.idle.push(connection);
                } else {
                    self.close(connection);
                }
                self.metrics.observe(self.ops[op].operation.kind(), sent_at.elapsed().as_secs_f64());
                self.on_response(op, response);
            }
            Err(failure) => {
                self.close(connection);
                self.retry(op, failure);
            }
        }
    }

    /// Sends what it can of the request and parses what has arrived; over
    /// TLS, also moves the handshake along (its messages go both ways).
    fn exchange(&mut self, connection: usize) -> Result<Option<Response>, Failure> {
        let entry = &mut self.connections[connection];
        let State::Busy { out, written, parser, last_progress, .. } = &mut entry.state else { return Ok(None) };
        let stream = &mut entry.stream;
        // A failed send still reads: a server may answer early (an error
        // before the whole body arrived) and close, and that answer, when it
        // is complete, is the outcome.
        match entry.tls.as_deref_mut() {
            None => {
                let sent = send_plain(stream, out, written, last_progress);
                let received = receive(parser, last_progress, |buffer| stream.read(buffer));
                prefer_response(sent, received)
            }
            Some(tls) => {
                let sent = send_tls(tls, stream, out, written, last_progress);
                let received = receive(parser, last_progress, |buffer| read_tls(tls, stream, buffer));
                if sent.is_err() {
                    return prefer_response(sent, received);
                }
                // Reading may have produced handshake or alert messages.
                let flushed = send_tls(tls, stream, out, written, last_progress);
                prefer_response(flushed, received)
            }
        }
    }

    fn on_response(&mut self, key: usize, response: Response) {
        let status = response.status;
        let kind = self.ops[key].operation.kind();
        match self.ops[key].operation.on_response(&self.target, response) {
            Step::Complete(result) => {
                let outcome = if (200..300).contains(&status) || result.is_ok() { "ok" } else { "failed" };
                self.count(kind, outcome);
                if let Err(StoreError::Permanent { .. } | StoreError::AlreadyExists { .. }) = &result {
                    self.metrics.error(&format!("HTTP{status}"));
                }
                self.complete(key, result);
            }
            Step::Continue => {
                self.count(kind, "ok");
                self.ops[key].attempts = 0;
                self.ready.push_front(key);
            }
            Step::Retry { reason, code } => {
                self.metrics.error(&code);
                self.retry_after_failure(key, reason);
            }
        }
    }

    fn count(&self, operation: &'static str, outcome: &'static str) {
        self.metrics.requests.get_or_create(&S3RequestLabels { operation, outcome }).inc();
    }

    fn retry(&mut self, key: usize, failure: Failure) {
        self.metrics.error(failure.code);
        self.retry_after_failure(key, failure.reason);
    }

    /// Schedules the next attempt after a backoff, or gives up when the
    /// attempts or the operation's time are spent.
    fn retry_after_failure(&mut self, key: usize, reason: String) {
        let kind = self.ops[key].operation.kind();
        let pending = &mut self.ops[key];
        pending.attempts += 1;
        let attempts = pending.attempts;
        let delay = backoff_delay(attempts, self.options.backoff_first, self.options.backoff_max, &mut self.random);
        let at = Instant::now() + delay;
        if attempts >= self.options.attempts_max || at >= pending.deadline {
            self.count(kind, "failed");
            return self.give_up(key, format!("{reason} (after {attempts} attempts)"));
        }
        self.count(kind, "retried");
        self.metrics.retries.get_or_create(&S3OperationLabels { operation: kind }).inc();
        tracing::debug!(operation = kind, attempts, delay_ms = delay.as_millis() as u64, %reason, "S3: retrying");
        self.backoff.push((at, key));
    }

    fn give_up(&mut self, key: usize, reason: String) {
        tracing::warn!(operation = self.ops[key].operation.kind(), %reason, "S3: operation failed");
        self.complete(key, Err(StoreError::transient(reason)));
    }

    fn check_timers(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.backoff.retain(|&(at, key)| {
            let is_due = at <= now;
            if is_due {
                due.push(key);
            }
            !is_due
        });
        self.ready.extend(due);
        let mut expired = Vec::new();
        for (key, connection) in &self.connections {
            match connection.state {
                State::Connecting { since, op } if now >= since + self.options.connect_timeout => {
                    expired.push((key, Some((op, "connect timed out"))));
                }
                State::Busy { last_progress, op, .. } if now >= last_progress + self.options.read_timeout => {
                    expired.push((key, Some((op, "no response progress within the read timeout"))));
                }
                State::Busy { op, .. } | State::Connecting { op, .. } if now >= self.ops[op].deadline => {
                    expired.push((key, Some((op, "the operation timed out"))));
                }
                State::Idle { since } if now >= since + self.options.idle_timeout => expired.push((key, None)),
                _ => {}
            }
        }
        for (connection, op) in expired {
            self.close(connection);
            if let Some((op, reason)) = op {
                self.retry(op, Failure { reason: reason.into(), code: "Timeout" });
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let backoff = self.backoff.iter().map(|&(at, _)| at);
        let connections = self.connections.iter().map(|(_, connection)| match connection.state {
            State::Connecting { since, op } => (since + self.options.connect_timeout).min(self.ops[op].deadline),
            State::Busy { last_progress, op, .. } => {
                (last_progress + self.options.read_timeout).min(self.ops[op].deadline)
            }
            State::Idle { since } => since + self.options.idle_timeout,
        });
        let ready = (!self.ready.is_empty()).then(Instant::now);
        backoff.chain(connections).chain(ready).min()
    }
}

/// A complete response wins over a failure to send; otherwise the send
/// failure, then whatever receiving gave.
fn prefer_response(
    sent: Result<(), Failure>,
    received: Result<Option<Response>, Failure>,
) -> Result<Option<Response>, Failure> {
    match (sent, received) {
        (_, Ok(Some(response))) => Ok(Some(response)),
        (Err(failure), _) => Err(failure),
        (Ok(()), received) => received,
    }
}

fn connection_failure(what: &str, error: impl std::fmt::Display) -> Failure {
    Failure { reason: format!("{what}: {error}"), code: "Connection" }
}

/// Writes the request's bytes until done or the socket is full.
fn send_plain(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    written: &mut usize,
    last_progress: &mut Instant,
) -> Result<(), Failure> {
    while *written < out.len() {
        match stream.write(&out[*written..]) {
            Ok(0) => return Err(connection_failure("send", "the connection closed")),
            Ok(count) => {
                *written += count;
                *last_progress = Instant::now();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(connection_failure("send", error)),
        }
    }
    // The request is out: its bytes are no longer needed.
    *out = Vec::new();
    *written = 0;
    Ok(())
}

/// Hands the request to the TLS session (which buffers it until the
/// handshake is done), then writes the session's records until done or the
/// socket is full.
fn send_tls(
    tls: &mut rustls::ClientConnection,
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    written: &mut usize,
    last_progress: &mut Instant,
) -> Result<(), Failure> {
    loop {
        let handed_before = *written;
        while *written < out.len() {
            match tls.writer().write(&out[*written..]) {
                Ok(0) => break,
                Ok(count) => *written += count,
                Err(error) => return Err(connection_failure("TLS", error)),
            }
        }
        while tls.wants_write() {
            match tls.write_tls(stream) {
                Ok(0) => return Err(connection_failure("send", "the connection closed")),
                Ok(_) => *last_progress = Instant::now(),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(connection_failure("send", error)),
            }
        }
        if *written == out.len() {
            *out = Vec::new();
            *written = 0;
            return Ok(());
        }
        // The session's buffer was full (or the handshake is not done):
        // go on only if this round handed it anything.
        if *written == handed_before {
            return Ok(());
        }
    }
}

/// Reads plaintext from a TLS connection: `Ok(0)` at the end (close_notify
/// or the socket closing), `WouldBlock` when nothing more is there yet.
fn read_tls(tls: &mut rustls::ClientConnection, stream: &mut TcpStream, buffer: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.reader().read(buffer) {
            Ok(count) => return Ok(count),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
        match tls.read_tls(stream) {
            Ok(0) => return Ok(0),
            Ok(_) => {
                tls.process_new_packets().map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Reads with `read` until it would block, feeding the parser.
fn receive(
    parser: &mut ResponseParser,
    last_progress: &mut Instant,
    mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> Result<Option<Response>, Failure> {
    let mut buffer = [0u8; READ_CHUNK_BYTES];
    loop {
        match read(&mut buffer) {
            Ok(0) => {
                return match parser.finish() {
                    Ok(response) => Ok(Some(response)),
                    Err(error) => Err(response_failure(error, parser.started())),
                }
            }
            Ok(count) => {
                *last_progress = Instant::now();
                match parser.feed(&buffer[..count]) {
                    Ok(Some(response)) => return Ok(Some(response)),
                    Ok(None) => {}
                    Err(error) => return Err(response_failure(error, true)),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(connection_failure("receive", error)),
        }
    }
}

fn response_failure(error: ResponseError, started: bool) -> Failure {
    match error {
        ResponseError::Truncated if !started => {
            Failure { reason: "the connection closed before any response".into(), code: "Connection" }
        }
        other => Failure { reason: other.to_string(), code: "BadResponse" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut random = SplitMix64::new(7);
        let (first, max) = (Duration::from_millis(50), Duration::from_secs(2));
        for attempt in 1..12 {
            let ceiling = (first * (1 << (attempt - 1).min(20))).min(max);
            for _ in 0..50 {
                let delay = backoff_delay(attempt, first, max, &mut random);
                assert!(delay >= ceiling / 2 && delay <= ceiling, "attempt {attempt}: {delay:?}");
            }
        }
    }
}
