//! One reactor thread: a `mio::Poll`, the connections placed on it, and the
//! loop that reads, parses, answers or hands off, and writes.
//!
//! Events are edge-triggered: a connection is driven until it has nothing to
//! read (its socket said WouldBlock, or a read did not fill the buffer, and
//! no event came since), or until it is handed off (its return drives it
//! again, with any event that came meanwhile), or until its output passes
//! the high-water mark (the writable edge drives it again), or until its
//! turn's request budget is spent (it is queued to be driven again before
//! the next poll). An event that reports the peer's close is kept, and reads
//! go on to the end of the stream, since no later event will come for it.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use stoat_http::{write_continue, HttpError, Limits, Progress};

use super::connection::Connection;
use super::handlers::{self, Answer, StreamStart};
use super::response::{ApiError, Response};
use super::routes::{self, Resolved, Route};
use super::{Mail, OpenConnections, PipelineSender, ReactorHandles, ServerContext};
use crate::ops::metrics::RequestRecorder;
use crate::pipeline::StageMessage;
use crate::retention::worker::{PolicyRequest, RetentionMessage};
use crate::subscribe::history::{HistoryAnswer, HistoryRequest};
use crate::subscribe::stream::{Advance, Subscription};

pub(super) const LISTENER: Token = Token(usize::MAX - 1);
pub(super) const WAKER: Token = Token(usize::MAX - 2);

/// Bytes read from a socket at a time, into the reactor's one scratch buffer.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Stop parsing a connection's requests while this much output is unsent.
const WRITE_HIGH_WATER_BYTES: usize = 256 * 1024;
/// Requests answered for one connection before the others get a turn.
const REQUESTS_PER_TURN: usize = 64;
/// How often timeouts are checked.
const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// Bytes written to one stream before the others get a turn.
const STREAM_BYTES_PER_TURN: usize = 256 * 1024;

enum Slot {
    Home(Box<Connection>),
    /// Owned by the pipeline. Its events wait until it returns: `readable`
    /// remembers that input arrived meanwhile and `read_closed` that the
    /// peer closed its side (with edge-triggered events, the only notice).
    Away {
        readable: bool,
        read_closed: bool,
    },
}

/// What driving a connection ended with.
enum Drive {
    /// Waiting for readiness.
    Keep,
    /// Its turn's budget is spent: drive it again before the next poll.
    Again,
    Close,
    /// A complete request for the pipeline.
    HandOff,
    /// A complete policy request for the retention worker.
    HandOffRetention(PolicyRequest),
}

pub(super) struct Reactor {
    index: usize,
    poll: Poll,
    listener: Option<TcpListener>,
    mailbox: Receiver<Mail>,
    reactors: Arc<ReactorHandles>,
    pipeline: PipelineSender,
    retention: Sender<RetentionMessage>,
    context: Arc<ServerContext>,
    connections: Slab<Slot>,
    scratch: Box<[u8]>,
    recorder: RequestRecorder,
    limits: Limits,
    next_placement: usize,
    again: Vec<usize>,
    shutdown_deadline: Option<Instant>,
    /// The clock, read once per turn of the loop (when the poll returns)
    /// rather than at every read and write: the time of activity for idle
    /// timeouts and when a request was received.
    now: Instant,
    /// Accepting failed for lack of file descriptors; retried on each sweep.
    accept_paused: bool,
    /// simd-json's scratch space and tape, reused for every commit parsed here.
    json: crate::commit::parse::JsonScratch,
    /// Keys of the connections that are subscribe streams.
    streams: std::collections::HashSet<usize>,
    /// Tells a stream's history answers from an earlier stream's.
    next_stream_serial: u64,
    history: Sender<HistoryRequest>,
    /// Reused list of keys to drive.
    stream_keys: Vec<usize>,
}

impl Reactor {
    pub(super) fn new(
        index: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        mailbox: Receiver<Mail>,
        reactors: Arc<ReactorHandles>,
        pipeline: PipelineSender,
        retention: Sender<RetentionMessage>,
        history: Sender<HistoryRequest>,
        context: Arc<ServerContext>,
    ) -> io::Result<Reactor> {
        if let Some(listener) = listener.as_mut() {
            poll.registry().register(listener, LISTENER, Interest::READABLE)?;
        }
        let config = &context.settings.config;
        let limits =
            Limits { head_bytes_max: config.server.header_bytes_max, body_bytes_max: config.limits.body_bytes_max };
        Ok(Reactor {
            index,
            poll,
            listener,
            mailbox,
            reactors,
            pipeline,
            retention,
            recorder: RequestRecorder::new(context.metrics.clone()),
            context,
            connections: Slab::new(),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            limits,
            next_placement: 0,
            again: Vec::new(),
            shutdown_deadline: None,
            now: Instant::now(),
            accept_paused: false,
            json: crate::commit::parse::JsonScratch::default(),
            streams: std::collections::HashSet::new(),
            next_stream_serial: 0,
            history,
            stream_keys: Vec::new(),
        })
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + SWEEP_INTERVAL;
        loop {
            let timeout = if self.again.is_empty() {
                next_sweep.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(reactor = self.index, %error, "poll failed; reactor stops");
                return;
            }
            self.now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => self.read_mail(),
                    Token(key) => {
                        let closed = event.is_read_closed() || event.is_error();
                        if event.is_readable() || closed {
                            match self.connections.get_mut(key) {
                                Some(Slot::Home(connection)) => {
                                    connection.input_ready = true;
                                    connection.read_closed |= closed;
                                }
                                Some(Slot::Away { readable, read_closed }) => {
                                    *readable = true;
                                    *read_closed |= closed;
                                }
                                None => {}
                            }
                        }
                        self.service(key);
                    }
                }
            }
            for key in std::mem::take(&mut self.again) {
                self.service(key);
            }
            let now = self.now;
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_INTERVAL;
            }
            if let Some(deadline) = self.shutdown_deadline {
                if self.connections.is_empty() || now >= deadline {
                    if !self.connections.is_empty() {
                        tracing::warn!(
                            reactor = self.index,
                            open = self.connections.len(),
                            "shutdown deadline passed; closing"
                        );
                    }
                    return;
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _peer)) => self.place(stream),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => {}
                Err(error) => {
                    // Out of file descriptors (EMFILE/ENFILE) or similar: the
                    // pending connections wait in the backlog; the listener's
                    // edge has been consumed, so the sweep retries.
                    tracing::warn!(%error, "accept failed; retrying shortly");
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    /// Counts a new connection and gives it to a reactor, or refuses it.
    fn place(&mut self, stream: TcpStream) {
        self.context.metrics.connections_accepted.inc();
        let _ = stream.set_nodelay(true);
        let max = self.context.settings.config.server.max_connections;
        let Some(open) = OpenConnections::try_open(&self.context.open_connections, max) else {
            self.context.metrics.connections_refused.inc();
            refuse_connection(stream, max);
            return;
        };
        let target = self.next_placement % self.reactors.0.len();
        self.next_placement = self.next_placement.wrapping_add(1);
        if target == self.index {
            self.adopt(stream, open);
        } else {
            self.reactors.0[target].send(Mail::Accepted(stream, open));
        }
    }

    fn adopt(&mut self, stream: TcpStream, open: OpenConnections) {
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let mut connection = Box::new(Connection::new(key, self.index, stream, self.limits, open));
        // Registering reports readiness that already exists, so nothing that
        // arrived before this point is missed.
        let registered =
            self.poll.registry().register(connection.stream_mut(), Token(key), Interest::READABLE | Interest::WRITABLE);
        match registered {
            Ok(()) => {
                entry.insert(Slot::Home(connection));
            }
            Err(error) => tracing::warn!(%error, "cannot register a connection; closing it"),
        }
    }

    fn read_mail(&mut self) {
        self.reactors.0[self.index].clear_wake();
        while let Ok(mail) = self.mailbox.try_recv() {
            match mail {
                Mail::Accepted(stream, open) => self.adopt(stream, open),
                Mail::Returned(connections) => {
                    for connection in connections {
                        self.welcome_back(connection);
                    }
                }
                Mail::Shutdown => self.begin_shutdown(),
                Mail::FeedAdvanced => {
                    self.reactors.0[self.index].feed_pending.store(false, std::sync::atomic::Ordering::Release);
                    self.drive_streams(|_| true);
                }
                Mail::History(request, answer) => self.history_arrived(request, answer),
            }
        }
    }

    /// Drives every stream that `pick` selects.
    fn drive_streams(&mut self, mut pick: impl FnMut(&mut Subscription) -> bool) {
        let mut keys = std::mem::take(&mut self.stream_keys);
        keys.clear();
        for &key in &self.streams {
            if let Some(Slot::Home(connection)) = self.connections.get_mut(key) {
                if connection.subscription.as_deref_mut().is_some_and(&mut pick) {
                    keys.push(key);
                }
            }
        }
        for &key in &keys {
            self.service(key);
        }
        self.stream_keys = keys;
    }

    fn history_arrived(&mut self, request: HistoryRequest, answer: HistoryAnswer) {
        let Some(Slot::Home(connection)) = self.connections.get_mut(request.key) else { return };
        match connection.subscription.as_deref_mut() {
            Some(subscription) if subscription.serial == request.serial => subscription.history_arrived(answer),
            // The stream it was for has closed.
            _ => return,
        }
        self.service(request.key);
    }

    /// Removes a connection, forgetting its stream if it is one.
    fn remove(&mut self, key: usize) {
        if let Some(Slot::Home(connection)) = self.connections.try_remove(key) {
            if let Some(subscription) = &connection.subscription {
                self.streams.remove(&key);
                let handle = &self.reactors.0[self.index];
                handle.streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                self.context.published.stream_opened(false);
                if !subscription.is_durable() {
                    handle.eager_streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                }
                let state = if subscription.counted_catching_up { "catching_up" } else { "live" };
                self.context.metrics.subscribers(state).dec();
            }
        }
    }

    /// A connection back from the pipeline, its response written into it.
    fn welcome_back(&mut self, mut connection: Box<Connection>) {
        let key = connection.key;
        self.complete_request(&mut connection);
        match self.connections.get_mut(key) {
            Some(slot @ Slot::Away { .. }) => {
                if let Slot::Away { readable, read_closed } = *slot {
                    connection.input_ready |= readable;
                    connection.read_closed |= read_closed;
                }
                *slot = Slot::Home(connection);
            }
            // Cannot happen: the slot stays reserved while away.
            _ => panic!("connection {key} returned to reactor {} without a reserved slot", self.index),
        }
        self.service(key);
    }

    /// Drives the connection with this key if it is at home.
    fn service(&mut self, key: usize) {
        let Some(slot) = self.connections.get_mut(key) else {
            return;
        };
        if matches!(slot, Slot::Away { .. }) {
            return;
        }
        let Slot::Home(mut connection) = std::mem::replace(slot, Slot::Away { readable: false, read_closed: false })
        else {
            return;
        };
        loop {
            match self.drive(&mut connection) {
                Drive::Keep => break,
                Drive::Again => {
                    self.again.push(key);
                    break;
                }
                Drive::Close => {
                    self.connections[key] = Slot::Home(connection);
                    self.remove(key);
                    return;
                }
                Drive::HandOff => match self.pipeline.try_send(connection) {
                    Ok(()) => return,
                    Err(error) => {
                        let is_full = matches!(error, TrySendError::Full(_));
                        let StageMessage::Request(returned) = error.into_inner() else {
                            return;
                        };
                        connection = returned;
                        let error = if is_full {
                            ApiError::TooManyRequests("the commit pipeline queue is full; retry shortly".into())
                        } else {
                            ApiError::Unavailable("the commit pipeline has stopped".into())
                        };
                        connection.respond_error(&error);
                        self.complete_request(&mut connection);
                    }
                },
                Drive::HandOffRetention(request) => {
                    match self.retention.try_send(RetentionMessage::Request { connection, request }) {
                        Ok(()) => return,
                        Err(error) => {
                            let is_full = matches!(error, TrySendError::Full(_));
                            let RetentionMessage::Request { connection: returned, .. } = error.into_inner() else {
                                return;
                            };
                            connection = returned;
                            let error = if is_full {
                                ApiError::TooManyRequests("the retention queue is full; retry shortly".into())
                            } else {
                                ApiError::Unavailable("the retention worker has stopped".into())
                            };
                            connection.respond_error(&error);
                            self.complete_request(&mut connection);
                        }
                    }
                }
            }
        }
        self.connections[key] = Slot::Home(connection);
    }

    fn drive(&mut self, connection: &mut Connection) -> Drive {
        let mut budget = REQUESTS_PER_TURN;
        loop {
            if connection.subscription.is_some() {
                return self.drive_stream(connection);
            }
            if connection.has_output() {
                match connection.flush(self.now) {
                    Err(_) => return Drive::Close,
                    Ok(false) if connection.close_after_write || connection.output_len() >= WRITE_HIGH_WATER_BYTES => {
                        return Drive::Keep;
                    }
                    Ok(_) => {}
                }
            }
            if connection.close_after_write {
                return if connection.has_output() { Drive::Keep } else { Drive::Close };
            }
            if budget == 0 {
                return Drive::Again;
            }
            match connection.parse() {
                Err(error) => self.refuse_request(connection, error),
                Ok(Progress::HeadReady) => self.on_head(connection),
                Ok(Progress::Complete) => {
                    budget -= 1;
                    match self.dispatch(connection) {
                        Answer::ToPipeline => return Drive::HandOff,
                        Answer::ToRetention(request) => return Drive::HandOffRetention(request),
                        Answer::Stream(start) => self.start_stream(connection, start),
                        Answer::Written => {}
                    }
                }
                Ok(Progress::NeedMore) => {
                    if connection.peer_closed || (self.shutdown_deadline.is_some() && !connection.request_in_progress())
                    {
                        connection.close_after_write = true;
                        continue;
                    }
                    // Edge-triggered: after a read that did not fill the
                    // buffer, or a WouldBlock, the socket was drained, and
                    // new input brings a new event. Reading again before it
                    // would only return WouldBlock (one system call per
                    // request saved, as tokio does). Once the peer's close
                    // was reported no event will follow it, so reads go on
                    // until they return the end of the stream.
                    if !connection.input_ready {
                        return Drive::Keep;
                    }
                    match connection.read_some(&mut self.scratch, self.now) {
                        Ok(0) => connection.peer_closed = true,
                        Ok(read) => connection.input_ready = read == self.scratch.len() || connection.read_closed,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                            connection.input_ready = false;
                            return Drive::Keep;
                        }
                        Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                        Err(_) => return Drive::Close,
                    }
                }
            }
        }
    }

    /// Makes the connection a subscribe stream (see `crate::subscribe`).
    fn start_stream(&mut self, connection: &mut Connection, start: StreamStart) {
        let serial = self.next_stream_serial;
        self.next_stream_serial += 1;
        let StreamStart { after, durable, prefix } = start;
        let subscription = Box::new(Subscription::new(serial, after, durable, prefix, Instant::now()));
        connection.begin_stream(subscription);
        self.recorder.record(connection.route().name(), 200, connection.received_at.elapsed());
        connection.finish_request(self.now);
        self.streams.insert(connection.key);
        let handle = &self.reactors.0[self.index];
        handle.streams.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.context.published.stream_opened(true);
        if !durable {
            handle.eager_streams.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        self.context.metrics.subscribers("live").inc();
    }

    /// Runs a stream: drops what the client sends, writes what is pending,
    /// asks for history when behind, and produces the next events, until the
    /// socket is full, there is nothing to send, or its turn is over.
    fn drive_stream(&mut self, connection: &mut Connection) -> Drive {
        let Some(mut subscription) = connection.subscription.take() else { return Drive::Close };
        let drive = self.run_stream(connection, &mut subscription);
        let catching_up = subscription.is_catching_up();
        if catching_up != subscription.counted_catching_up {
            let metrics = &self.context.metrics;
            let (from, to) = if catching_up { ("live", "catching_up") } else { ("catching_up", "live") };
            metrics.subscribers(from).dec();
            metrics.subscribers(to).inc();
            subscription.counted_catching_up = catching_up;
        }
        connection.subscription = Some(subscription);
        drive
    }

    fn run_stream(&mut self, connection: &mut Connection, subscription: &mut Subscription) -> Drive {
        while connection.input_ready {
            match connection.read_some(&mut self.scratch, self.now) {
                Ok(0) => return Drive::Close,
                Ok(_) => connection.discard_input(),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => connection.input_ready = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Drive::Close,
            }
        }
        let mut budget = STREAM_BYTES_PER_TURN;
        let metrics = &self.context.metrics;
        loop {
            if connection.has_output() {
                match connection.flush(self.now) {
                    Err(_) => return Drive::Close,
                    Ok(false) => return Drive::Keep,
                    Ok(true) => {}
                }
            }
            if let Some(bytes) = subscription.shared() {
                match connection.write_direct(bytes, self.now) {
                    Ok(0) => return Drive::Close,
                    Ok(written) => {
                        subscription.shared_written(written);
                        metrics.subscribe_bytes.inc_by(written as u64);
                        budget = budget.saturating_sub(written);
                        continue;
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Drive::Keep,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return Drive::Close,
                }
            }
            if subscription.is_ended() {
                return Drive::Close;
            }
            if budget == 0 {
                return Drive::Again;
            }
            let feed = &self.context.feed;
            if let Some((after, at_batch_end)) = subscription.history_wanted(feed) {
                let (reactor, key, serial) = (self.index, connection.key, subscription.serial);
                let request = HistoryRequest { reactor, key, serial, after, at_batch_end };
                if self.history.try_send(request).is_ok() {
                    subscription.history_requested();
                }
            }
            let before = connection.output_len();
            match subscription.advance(feed, &self.context.published, connection.output_mut(), Instant::now()) {
                Advance::Progress { events } => {
                    metrics.subscribe_events.inc_by(events as u64);
                    let appended = connection.output_len() - before;
                    metrics.subscribe_bytes.inc_by(appended as u64);
                    budget = budget.saturating_sub(appended);
                }
                Advance::Idle => return Drive::Keep,
            }
        }
    }

    /// A head with a body to follow: refuse now if the route is wrong (so an
    /// `Expect: 100-continue` client never sends its body), else invite it.
    fn on_head(&mut self, connection: &mut Connection) {
        let head = connection.head();
        let (route, routing_error) = route_request(head.method, head.path());
        if let Some(error) = routing_error {
            let request_id = self.request_id_for_error(connection);
            connection.begin_response(route, &request_id, false, self.now);
            connection.respond_error(&error);
            self.complete_request(connection);
            return;
        }
        connection.head_route = Some(route);
        let head = connection.head();
        if head.expect_continue {
            let mut interim = Vec::with_capacity(32);
            write_continue(&mut interim);
            connection.write_interim(&interim);
        }
    }

    /// Routes a complete request and answers it or hands it off.
    fn dispatch(&mut self, connection: &mut Connection) -> Answer {
        let head_route = connection.head_route.take();
        let head = connection.head();
        let keep_alive = head.keep_alive && self.shutdown_deadline.is_none();
        let (route, routing_error) = match head_route {
            Some(route) => (route, None),
            None => route_request(head.method, head.path()),
        };
        let mut id_buffer = [0u8; REQUEST_ID_BYTES_MAX];
        let mut uuid_buffer = uuid::Uuid::encode_buffer();
        let (request_id, id_error) = match client_request_id(head.header("x-request-id"), &mut id_buffer) {
            Ok(Some(id)) => (id, None),
            Ok(None) => (new_request_id_in(&mut uuid_buffer), None),
            Err(error) => (new_request_id_in(&mut uuid_buffer), Some(error)),
        };
        connection.begin_response(route, request_id, keep_alive, self.now);
        if let Some(error) = id_error.or(routing_error) {
            connection.respond_error(&error);
            self.complete_request(connection);
            return Answer::Written;
        }
        let queue_depth = self.pipeline.queued();
        let answer = handlers::answer(route, connection, &self.context, queue_depth, &mut self.json);
        if let Answer::Written = answer {
            self.complete_request(connection);
        }
        answer
    }

    /// Answers a request that could not be parsed, and closes after it: the
    /// rest of the input can no longer be trusted to be framed.
    fn refuse_request(&mut self, connection: &mut Connection, error: HttpError) {
        let request_id = self.request_id_for_error(connection);
        connection.begin_response(Route::Unknown, &request_id, false, self.now);
        connection.respond_error(&ApiError::from(error));
        self.complete_request(connection);
    }

    fn request_id_for_error(&self, connection: &Connection) -> String {
        let mut id_buffer = [0u8; REQUEST_ID_BYTES_MAX];
        match client_request_id(connection.head().header("x-request-id"), &mut id_buffer) {
            Ok(Some(id)) => id.to_owned(),
            _ => new_request_id(),
        }
    }

    /// Records the finished request and resets the connection for the next.
    fn complete_request(&mut self, connection: &mut Connection) {
        self.recorder.record(connection.route().name(), connection.response_status(), connection.received_at.elapsed());
        connection.finish_request(self.now);
        if self.shutdown_deadline.is_some() && !connection.request_in_progress() {
            connection.close_after_write = true;
        }
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        let timeout = Duration::from_millis(self.context.settings.config.server.shutdown_timeout_ms);
        self.shutdown_deadline = Some(Instant::now() + timeout);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.sweep(Instant::now());
    }

    /// Closes connections past their timeouts (and, when shutting down,
    /// every connection with nothing in flight).
    fn sweep(&mut self, now: Instant) {
        if self.accept_paused {
            self.accept_paused = false;
            self.accept();
        }
        let server = &self.context.settings.config.server;
        let timeouts = Timeouts {
            idle: Duration::from_millis(server.idle_timeout_ms),
            header: Duration::from_millis(server.header_read_timeout_ms),
            request: Duration::from_millis(server.request_read_timeout_ms),
        };
        let shutting_down = self.shutdown_deadline.is_some();
        let mut expired = Vec::new();
        for (key, slot) in self.connections.iter() {
            if let Slot::Home(connection) = slot {
                match timeouts.verdict(connection, now, shutting_down) {
                    Verdict::Keep => {}
                    Verdict::TimedOut => {
                        self.context.metrics.connections_timed_out.inc();
                        expired.push(key);
                    }
                    Verdict::CloseIdle => expired.push(key),
                }
            }
        }
        for key in expired {
            self.remove(key);
        }
        let interval = Duration::from_millis(self.context.settings.config.subscribe.checkpoint_interval_ms);
        let feed = self.context.feed.clone();
        let published = self.context.published.clone();
        let metrics = self.context.metrics.clone();
        self.drive_streams(|subscription| {
            if shutting_down {
                subscription.end("unavailable", "the server is shutting down".into(), None);
                return true;
            }
            if now.saturating_duration_since(subscription.last_checkpoint) >= interval && !subscription.checkpoint_due {
                subscription.checkpoint_due = true;
                let (class, newest) = if subscription.is_durable() {
                    ("durable", published.durable_version())
                } else {
                    ("committed", published.committed_version())
                };
                metrics.subscriber_lag(class).observe(newest.saturating_sub(subscription.position()) as f64);
                return true;
            }
            // A history read that found the queue full asks again.
            subscription.history_wanted(&feed).is_some()
        });
    }
}

struct Timeouts {
    idle: Duration,
    header: Duration,
    request: Duration,
}

enum Verdict {
    Keep,
    TimedOut,
    CloseIdle,
}

impl Timeouts {
    fn verdict(&self, connection: &Connection, now: Instant, shutting_down: bool) -> Verdict {
        if connection.subscription.is_some() {
            // Streams write checkpoints, and a reader that stalls is served
            // from storage when it resumes; they end when the client goes
            // (or, at shutdown, after their error event).
            return Verdict::Keep;
        }
        if connection.request_in_progress() {
            let started = connection.request_started.unwrap_or(connection.last_activity);
            let elapsed = now.saturating_duration_since(started);
            if (connection.awaiting_head() && elapsed > self.header) || elapsed > self.request {
                return Verdict::TimedOut;
            }
            return Verdict::Keep;
        }
        if now.saturating_duration_since(connection.last_activity) > self.idle {
            return Verdict::TimedOut;
        }
        if shutting_down && !connection.has_output() {
            return Verdict::CloseIdle;
        }
        Verdict::Keep
    }
}

/// The route (the metrics label) and, when the request cannot be served
/// there, the error to answer with.
fn route_request(method: stoat_http::Method, path: &str) -> (Route, Option<ApiError>) {
    match routes::resolve(method, path) {
        Resolved::Found(route) => (route, None),
        Resolved::NotFound => {
            (Route::Unknown, Some(ApiError::NotFound(format!("no such path: {}", truncate(path, 200)))))
        }
        Resolved::MethodNotAllowed { route, allow } => {
            let message = format!("{} does not take {}; allowed: {allow}", route.path_description(), method.as_str());
            (route, Some(ApiError::MethodNotAllowed { allow, message }))
        }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

const REQUEST_ID_BYTES_MAX: usize = 128;

/// The client's `X-Request-Id`, if given and well-formed (1-128 characters
/// of `[A-Za-z0-9._:-]`, the same rule as a commit's `request_id`).
fn client_request_id<'a>(
    value: Option<&[u8]>,
    buffer: &'a mut [u8; REQUEST_ID_BYTES_MAX],
) -> Result<Option<&'a str>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let valid = (1..=REQUEST_ID_BYTES_MAX).contains(&value.len())
        && value.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if !valid {
        return Err(ApiError::BadRequest(
            "X-Request-Id: must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'".into(),
        ));
    }
    buffer[..value.len()].copy_from_slice(value);
    Ok(std::str::from_utf8(&buffer[..value.len()]).ok())
}

fn new_request_id() -> String {
    new_request_id_in(&mut uuid::Uuid::encode_buffer()).to_owned()
}

/// A new request id written into `buffer`: no allocation, and no trip
/// through `fmt` (`to_string` cost about 275 instructions per request).
fn new_request_id_in(buffer: &mut [u8]) -> &str {
    uuid::Uuid::new_v4().hyphenated().encode_lower(buffer)
}

/// Answers a connection over `server.max_connections` with a 503 and closes
/// it. Best effort: the socket is new, so the short response fits in its
/// send buffer.
fn refuse_connection(mut stream: TcpStream, max: usize) {
    use std::io::Write;
    let error = ApiError::Unavailable(format!("the server has {max} connections open; retry shortly"));
    let mut out = Vec::with_capacity(256);
    let request_id = new_request_id();
    Response {
        status: error.status(),
        content_type: "application/json",
        body: &error.body(),
        request_id: &request_id,
        close: true,
        extra_header: error.extra_headers(),
    }
    .write_to(&mut out);
    let _ = stream.write(&out);
}
