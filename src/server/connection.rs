//! One client connection: its socket, buffers, request parser and arena.
//!
//! A `Connection` is owned by exactly one thread at a time: its home reactor
//! while it reads and writes, or a pipeline stage while a request is being
//! decided (it travels as `Box<Connection>`). Whoever holds it may write a
//! response into it; only the home reactor touches the socket.
//!
//! Invariants:
//! - Arena memory never outlives its request: the arena is reset before the
//!   next request is parsed.
//! - Buffers are bounded: input by the head limit plus one read, the body by
//!   the body limit, output by the reactor's write high-water mark; an idle
//!   connection gives large buffers back.

use std::io::{self, Read, Write};
use std::time::Instant;

use bumpalo::Bump;
use mio::net::TcpStream;
use stoat_http::{HttpError, Limits, Progress, RequestHead, RequestParser};

use super::response::{ApiError, Response};
use super::routes::Route;
use super::OpenConnections;
use crate::commit::parse::{self, CommitRequest, StatusQuery};
use crate::config::LimitsConfig;
use crate::subscribe::stream::Subscription;

/// Buffers above this size are released once a request is done, so that an
/// idle connection holds almost no memory.
const RETAINED_BUFFER_BYTES: usize = 16 * 1024;
/// An arena that grew beyond this for one request is replaced, not reused.
const RETAINED_ARENA_BYTES: usize = 64 * 1024;

pub struct Connection {
    /// The key of this connection in its home reactor's table.
    pub(super) key: usize,
    /// The index of the home reactor.
    pub(super) home: usize,
    stream: TcpStream,
    input: Vec<u8>,
    input_consumed: usize,
    parser: RequestParser,
    body: Vec<u8>,
    output: Vec<u8>,
    output_written: usize,
    arena: Bump,
    route: Route,
    /// The route found when the head arrived ahead of its body, so that it
    /// is not looked up again when the body is complete.
    pub(super) head_route: Option<Route>,
    request_id: String,
    keep_alive: bool,
    response_status: u16,
    /// When the current request had fully arrived (for latency metrics).
    pub(super) received_at: Instant,
    /// When the sequencer took the current request off its queue (until
    /// then, when it arrived): splits its wait into queue and batch wait.
    taken_at: Instant,
    /// When the first byte of the current request arrived, if one is in progress.
    pub(super) request_started: Option<Instant>,
    pub(super) last_activity: Instant,
    /// Close once the output is written (error, `Connection: close`, shutdown).
    pub(super) close_after_write: bool,
    /// The peer shut down its side; nothing more will arrive.
    pub(super) peer_closed: bool,
    /// The parsed commit, when the route is `/v1/commit`.
    commit: CommitRequest,
    /// The parsed query, when the route is `/v1/status`.
    status_query: StatusQuery,
    /// Set once the connection is a subscribe stream; it stays one.
    pub(super) subscription: Option<Box<Subscription>>,
    /// The socket may have input: a readable event came since the last
    /// WouldBlock or short read. Reads happen only then.
    pub(super) input_ready: bool,
    /// An event said the peer closed its side (or the socket failed): kept,
    /// since no further event will come, so reads go on to the end.
    pub(super) read_closed: bool,
    _open: OpenConnections,
}

impl Connection {
    pub(super) fn new(key: usize, home: usize, stream: TcpStream, limits: Limits, open: OpenConnections) -> Self {
        let now = Instant::now();
        Connection {
            key,
            home,
            stream,
            input: Vec::new(),
            input_consumed: 0,
            parser: RequestParser::new(limits),
            body: Vec::new(),
            output: Vec::new(),
            output_written: 0,
            arena: Bump::new(),
            route: Route::Unknown,
            head_route: None,
            request_id: String::new(),
            keep_alive: true,
            response_status: 0,
            received_at: now,
            taken_at: now,
            request_started: None,
            last_activity: now,
            close_after_write: false,
            peer_closed: false,
            commit: CommitRequest::default(),
            status_query: StatusQuery::default(),
            subscription: None,
            input_ready: true,
            read_closed: false,
            _open: open,
        }
    }

    /// The head of the current request.
    pub fn head(&self) -> &RequestHead {
        self.parser.head()
    }

    /// The (de-chunked) body of the current request.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// When the current request had fully arrived.
    pub fn received_at(&self) -> Instant {
        self.received_at
    }

    /// When the sequencer took the current request off its queue.
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// Stage 1: the current request is taken off its queue at `at`.
    pub fn set_taken_at(&mut self, at: Instant) {
        self.taken_at = at;
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// The request id echoed in `X-Request-Id`: the client's, or generated.
    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    /// The current request's commit, once parsed by [`Connection::parse_commit`].
    pub fn commit(&self) -> &CommitRequest {
        &self.commit
    }

    /// The current request's status query, once parsed.
    pub fn status_query(&self) -> &StatusQuery {
        &self.status_query
    }

    /// Parses the body as a commit, in the request's arena.
    pub fn parse_commit(&mut self, json: &mut parse::JsonScratch, limits: &LimitsConfig) -> Result<(), String> {
        parse::parse_commit(&self.body, &self.arena, json, limits, &mut self.commit)
    }

    /// Parses the target's query as a status lookup.
    pub fn parse_status_query(&mut self) -> Result<(), String> {
        parse::parse_status_query(self.parser.head().query(), &mut self.status_query)
    }

    /// Scratch memory for the current request; reset before the next one.
    pub fn arena(&self) -> &Bump {
        &self.arena
    }

    /// Writes a complete response for the current request.
    pub fn respond(&mut self, status: u16, content_type: &str, body: &[u8], extra_header: Option<(&str, &[u8])>) {
        let close = !self.keep_alive;
        Response { status, content_type, body, request_id: &self.request_id, close, extra_header }
            .write_to(&mut self.output);
        self.response_status = status;
        self.close_after_write |= close;
    }

    pub fn respond_json(&mut self, status: u16, body: &[u8]) {
        self.respond(status, "application/json", body, None);
    }

    /// Writes a JSON response whose body `build` writes into a buffer in
    /// the request's arena (no heap allocation for the body). `build` is
    /// also given the connection, to read the request from without a copy.
    pub fn respond_json_with(
        &mut self,
        status: u16,
        extra_header: Option<(&str, &[u8])>,
        build: impl FnOnce(&mut bumpalo::collections::Vec<'_, u8>, &Connection),
    ) {
        // The arena is moved out for the call so that the body can borrow it
        // while the response is written into `self`; an empty `Bump` costs
        // no allocation.
        let arena = std::mem::take(&mut self.arena);
        {
            let mut body = bumpalo::collections::Vec::with_capacity_in(128, &arena);
            build(&mut body, self);
            self.respond(status, "application/json", &body, extra_header);
        }
        self.arena = arena;
    }

    pub fn respond_error(&mut self, error: &ApiError) {
        self.respond_json_with(error.status(), error.extra_headers(), |body, _| error.write_body(body));
    }

    pub(super) fn response_status(&self) -> u16 {
        self.response_status
    }

    pub(super) fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sets up the per-request state once a request has been parsed.
    /// `now`: the reactor's clock (read once per turn of its loop).
    pub(super) fn begin_response(&mut self, route: Route, request_id: &str, keep_alive: bool, now: Instant) {
        self.route = route;
        self.request_id.clear();
        self.request_id.push_str(request_id);
        self.keep_alive = keep_alive;
        self.received_at = now;
        self.taken_at = now;
    }

    /// Runs the parser over the unconsumed input.
    pub(super) fn parse(&mut self) -> Result<Progress, HttpError> {
        let (used, progress) = self.parser.parse(&self.input[self.input_consumed..], &mut self.body)?;
        self.input_consumed += used;
        if self.input_consumed == self.input.len() {
            self.input.clear();
            self.input_consumed = 0;
        }
        Ok(progress)
    }

    /// Reads once from the socket into `scratch` and keeps what arrived.
    /// `Ok(0)` means the peer closed its side.
    pub(super) fn read_some(&mut self, scratch: &mut [u8], now: Instant) -> io::Result<usize> {
        let read = self.stream.read(scratch)?;
        if read > 0 {
            if self.input_consumed > 0 {
                self.input.drain(..self.input_consumed);
                self.input_consumed = 0;
            }
            self.input.extend_from_slice(&scratch[..read]);
            self.last_activity = now;
            self.request_started.get_or_insert(self.last_activity);
        }
        Ok(read)
    }

    pub(super) fn has_unparsed_input(&self) -> bool {
        self.input_consumed < self.input.len()
    }

    pub(super) fn has_output(&self) -> bool {
        self.output_written < self.output.len()
    }

    pub(super) fn output_len(&self) -> usize {
        self.output.len() - self.output_written
    }

    /// Turns the connection into a subscribe stream: writes the stream's
    /// response head; events follow until the connection closes.
    pub(super) fn begin_stream(&mut self, subscription: Box<Subscription>) {
        super::response::write_stream_head(&mut self.output, &self.request_id);
        self.response_status = 200;
        self.close_after_write = true;
        self.subscription = Some(subscription);
    }

    /// The output buffer, for a stream's checkpoint and filtered events.
    pub(super) fn output_mut(&mut self) -> &mut Vec<u8> {
        &mut self.output
    }

    /// Writes `bytes` straight to the socket (a stream's shared events),
    /// once the output buffer is empty.
    pub(super) fn write_direct(&mut self, bytes: &[u8], now: Instant) -> io::Result<usize> {
        debug_assert!(!self.has_output());
        let written = self.stream.write(bytes)?;
        if written > 0 {
            self.last_activity = now;
        }
        Ok(written)
    }

    /// Drops input a stream's client sent (it has nothing to say).
    pub(super) fn discard_input(&mut self) {
        self.input.clear();
        self.input_consumed = 0;
    }

    pub(super) fn write_interim(&mut self, bytes: &[u8]) {
        self.output.extend_from_slice(bytes);
    }

    /// Writes as much output as the socket takes. `Ok(true)` when all of it
    /// went out.
    pub(super) fn flush(&mut self, now: Instant) -> io::Result<bool> {
        while self.output_written < self.output.len() {
            match self.stream.write(&self.output[self.output_written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => {
                    self.output_written += written;
                    self.last_activity = now;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(error) => return Err(error),
            }
        }
        if self.output.capacity() > RETAINED_BUFFER_BYTES {
            self.output = Vec::new();
        } else {
            self.output.clear();
        }
        self.output_written = 0;
        Ok(true)
    }

    /// Ends the current request: the arena and body are reset for the next.
    pub(super) fn finish_request(&mut self, now: Instant) {
        if self.arena.allocated_bytes() > RETAINED_ARENA_BYTES {
            self.arena = Bump::new();
        } else {
            self.arena.reset();
        }
        if self.body.capacity() > RETAINED_BUFFER_BYTES {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        if self.input.is_empty() && self.input.capacity() > RETAINED_BUFFER_BYTES {
            self.input = Vec::new();
        }
        self.request_started = if self.has_unparsed_input() { Some(now) } else { None };
        self.route = Route::Unknown;
        self.head_route = None;
    }

    /// True while part of a request has arrived but not all of it.
    pub(super) fn request_in_progress(&self) -> bool {
        self.parser.in_progress() || self.has_unparsed_input()
    }

    /// True while the head of the next request has not fully arrived.
    pub(super) fn awaiting_head(&self) -> bool {
        self.parser.awaiting_head()
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("key", &self.key).field("home", &self.home).finish()
    }
}
