//! The HTTP/1.1 request parser: a pure state machine that takes the bytes a
//! connection has received and reports how far it got.
//!
//! The caller keeps the unconsumed bytes and passes them again with whatever
//! arrived since; the parser says how many it consumed. Heads are parsed with
//! `httparse` once the blank line that ends them is present, so a client that
//! sends one byte at a time costs a linear scan, not a quadratic re-parse.
//! Bodies (Content-Length or chunked) are appended to a buffer the caller owns.

use std::ops::Range;

/// Size limits applied while parsing; a request over either is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers (and, for chunked bodies, the trailers).
    pub head_bytes_max: usize,
    /// Decoded body bytes.
    pub body_bytes_max: u64,
}

/// Longest chunk-size or trailer line accepted; real clients send a few bytes.
const CHUNK_LINE_BYTES_MAX: usize = 1024;
/// httparse needs a fixed header array; more headers than this is a 431.
const HEADERS_MAX: usize = 64;

/// Why a request cannot be parsed. Each maps to exactly one status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("request line and headers exceed {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: u64 },
}

impl HttpError {
    /// The HTTP status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::HeadTooLarge { .. } => 431,
            HttpError::PayloadTooLarge { .. } => 413,
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        HttpError::BadRequest(message.into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Patch => "PATCH",
            Method::Other => "OTHER",
        }
    }
}

/// How the body of a request is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request line and headers. The raw bytes are kept in one buffer
/// that is reused from request to request; fields are ranges into it.
#[derive(Debug)]
pub struct RequestHead {
    raw: Vec<u8>,
    target: Range<usize>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The client sent `Expect: 100-continue` and waits before its body.
    pub expect_continue: bool,
    pub body: BodyKind,
}

impl RequestHead {
    fn new() -> Self {
        RequestHead {
            raw: Vec::new(),
            target: 0..0,
            headers: Vec::new(),
            method: Method::Other,
            minor_version: 1,
            keep_alive: true,
            expect_continue: false,
            body: BodyKind::None,
        }
    }

    fn clear(&mut self) {
        // A large head (up to the limit) must not pin its buffer for the life
        // of an idle keep-alive connection.
        if self.raw.capacity() > 4096 {
            self.raw = Vec::new();
        } else {
            self.raw.clear();
        }
        self.headers.clear();
        self.target = 0..0;
        self.method = Method::Other;
        self.minor_version = 1;
        self.keep_alive = true;
        self.expect_continue = false;
        self.body = BodyKind::None;
    }

    /// The request target in origin form, e.g. `/v1/status?request_id=a`.
    pub fn target(&self) -> &str {
        // The target was checked to be UTF-8 when the head was parsed; it is
        // empty only for an absolute-form target with no path, which is `/`.
        match std::str::from_utf8(&self.raw[self.target.clone()]) {
            Ok("") | Err(_) => "/",
            Ok(target) => target,
        }
    }

    /// The target up to (not including) `?`.
    pub fn path(&self) -> &str {
        let target = self.target();
        query_start(target).map_or(target, |at| &target[..at])
    }

    /// The target after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        let target = self.target();
        query_start(target).map(|at| &target[at + 1..])
    }

    /// The value of the first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        // Compared as bytes: no UTF-8 check of every name on every lookup.
        self.headers
            .iter()
            .find(|(found, _)| self.raw[found.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| &self.raw[value.clone()])
    }

    /// All headers in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(name, value)| {
            // Header names are httparse tokens: ASCII, hence UTF-8.
            let name = std::str::from_utf8(&self.raw[name.clone()]).unwrap_or("");
            (name, &self.raw[value.clone()])
        })
    }
}

/// What a call to [`RequestParser::parse`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// All input that could be used was consumed; call again with more.
    NeedMore,
    /// The head is parsed and a body follows: the caller may answer
    /// `100 Continue` now, then calls again to read the body.
    HeadReady,
    /// The request (head and body) is complete. The next call starts the
    /// next request on the connection.
    Complete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Head,
    Body { remaining: u64 },
    ChunkSize,
    ChunkData { remaining: u64 },
    ChunkDataEnd,
    Trailer,
    Complete,
}

/// Parses consecutive requests on one connection.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    state: State,
    head: RequestHead,
    /// How far the search for the end of the head has looked.
    head_scanned: usize,
    body_received: u64,
    trailer_bytes: usize,
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            state: State::Head,
            head: RequestHead::new(),
            head_scanned: 0,
            body_received: 0,
            trailer_bytes: 0,
        }
    }

    /// The head of the current request; meaningful after `HeadReady` or
    /// `Complete`, and after a `PayloadTooLarge` refused at the head.
    pub fn head(&self) -> &RequestHead {
        &self.head
    }

    /// True when part of a request has been consumed but it is not complete.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Head | State::Complete) || self.head_scanned > 0
    }

    /// True until the head of the next request has been parsed (a finished
    /// request counts as waiting for the next head).
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Head | State::Complete)
    }

    /// Consumes what it can of `input` (the bytes not consumed by earlier
    /// calls, followed by new ones), appending body bytes to `body`.
    /// Returns the number of bytes consumed and the progress made.
    pub fn parse(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<(usize, Progress), HttpError> {
        if self.state == State::Complete {
            self.start_next_request();
        }
        let mut consumed = 0;
        loop {
            let rest = &input[consumed..];
            let step = match self.state {
                State::Head => self.parse_head(rest, body)?,
                State::Body { remaining } => self.parse_body(rest, remaining, body),
                State::ChunkSize => self.parse_chunk_size(rest)?,
                State::ChunkData { remaining } => self.parse_chunk_data(rest, remaining, body),
                State::ChunkDataEnd => self.parse_chunk_data_end(rest)?,
                State::Trailer => self.parse_trailer(rest)?,
                State::Complete => (0, Some(Progress::Complete)),
            };
            consumed += step.0;
            match step.1 {
                None => continue,
                Some(progress) => return Ok((consumed, progress)),
            }
        }
    }

    fn start_next_request(&mut self) {
        self.state = State::Head;
        self.head.clear();
        self.head_scanned = 0;
        self.body_received = 0;
        self.trailer_bytes = 0;
    }

    /// One step of the state machine: bytes consumed, and `Some` when the
    /// caller must be told something (otherwise the loop continues).
    fn parse_head(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<(usize, Option<Progress>), HttpError> {
        // Empty lines before a request line are ignored (RFC 9112 section 2.2).
        if self.head_scanned == 0 {
            let blank = input.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if blank > 0 {
                return Ok((blank, if blank == input.len() { Some(Progress::NeedMore) } else { None }));
            }
        }
        let Some(end) = self.find_head_end(input) else {
            if input.len() > self.limits.head_bytes_max {
                return Err(HttpError::HeadTooLarge { limit: self.limits.head_bytes_max });
            }
            return Ok((0, Some(Progress::NeedMore)));
        };
        if end > self.limits.head_bytes_max {
            return Err(HttpError::HeadTooLarge { limit: self.limits.head_bytes_max });
        }
        self.head.raw.extend_from_slice(&input[..end]);
        parse_head_fields(&mut self.head)?;
        self.head_scanned = 0;
        body.clear();
        self.state = match self.head.body {
            BodyKind::None => State::Complete,
            BodyKind::Length(length) => {
                if length > self.limits.body_bytes_max {
                    return Err(HttpError::PayloadTooLarge { limit: self.limits.body_bytes_max });
                }
                // Reserve what was announced, but not more than a modest
                // amount up front: the bytes may never come.
                body.reserve(length.min(64 * 1024) as usize);
                State::Body { remaining: length }
            }
            BodyKind::Chunked => State::ChunkSize,
        };
        let progress = if self.state == State::Complete { Progress::Complete } else { Progress::HeadReady };
        Ok((end, Some(progress)))
    }

    /// Finds the end of the head (just past the blank line), resuming the
    /// scan where the previous call stopped.
    fn find_head_end(&mut self, input: &[u8]) -> Option<usize> {
        let mut index = self.head_scanned;
        while let Some(offset) = memchr::memchr(b'\n', input.get(index..)?) {
            let newline = index + offset;
            match (input.get(newline + 1), input.get(newline + 2)) {
                (Some(b'\n'), _) => return Some(newline + 2),
                (Some(b'\r'), Some(b'\n')) => return Some(newline + 3),
                (None, _) | (Some(b'\r'), None) => {
                    self.head_scanned = newline;
                    return None;
                }
                _ => index = newline + 1,
            }
        }
        self.head_scanned = input.len();
        None
    }

    fn parse_body(&mut self, input: &[u8], remaining: u64, body: &mut Vec<u8>) -> (usize, Option<Progress>) {
        let take = remaining.min(input.len() as u64) as usize;
        body.extend_from_slice(&input[..take]);
        let remaining = remaining - take as u64;
        if remaining == 0 {
            self.state = State::Complete;
            (take, Some(Progress::Complete))
        } else {
            self.state = State::Body { remaining };
            (take, Some(Progress::NeedMore))
        }
    }

    fn parse_chunk_size(&mut self, input: &[u8]) -> Result<(usize, Option<Progress>), HttpError> {
        let Some((line, used)) = take_line(input, "chunk size line")? else {
            return Ok((0, Some(Progress::NeedMore)));
        };
        let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let size = parse_chunk_size_hex(size_text.trim_ascii())?;
        if size == 0 {
            self.state = State::Trailer;
            return Ok((used, None));
        }
        if self.body_received.saturating_add(size) > self.limits.body_bytes_max {
            return Err(HttpError::PayloadTooLarge { limit: self.limits.body_bytes_max });
        }
        self.body_received += size;
        self.state = State::ChunkData { remaining: size };
        Ok((used, None))
    }

    fn parse_chunk_data(&mut self, input: &[u8], remaining: u64, body: &mut Vec<u8>) -> (usize, Option<Progress>) {
        let take = remaining.min(input.len() as u64) as usize;
        body.extend_from_slice(&input[..take]);
        let remaining = remaining - take as u64;
        if remaining == 0 {
            self.state = State::ChunkDataEnd;
            (take, None)
        } else {
            self.state = State::ChunkData { remaining };
            (take, Some(Progress::NeedMore))
        }
    }

    fn parse_chunk_data_end(&mut self, input: &[u8]) -> Result<(usize, Option<Progress>), HttpError> {
        match input {
            [b'\r', b'\n', ..] => {
                self.state = State::ChunkSize;
                Ok((2, None))
            }
            [b'\n', ..] => {
                self.state = State::ChunkSize;
                Ok((1, None))
            }
            [] | [b'\r'] => Ok((0, Some(Progress::NeedMore))),
            _ => Err(HttpError::bad("chunked body: chunk data is not followed by CRLF")),
        }
    }

    fn parse_trailer(&mut self, input: &[u8]) -> Result<(usize, Option<Progress>), HttpError> {
        let Some((line, used)) = take_line(input, "trailer line")? else {
            return Ok((0, Some(Progress::NeedMore)));
        };
        if line.is_empty() {
            self.state = State::Complete;
            return Ok((used, Some(Progress::Complete)));
        }
        // Trailer fields are accepted and ignored; they count against the
        // head limit so that they cannot grow without bound.
        self.trailer_bytes += used;
        if self.trailer_bytes > self.limits.head_bytes_max {
            return Err(HttpError::HeadTooLarge { limit: self.limits.head_bytes_max });
        }
        Ok((used, None))
    }
}

/// Takes one line ending in LF (CRLF or bare LF) from `input`: the line
/// without its ending, and the bytes used. `None` when the line is incomplete.
fn take_line<'a>(input: &'a [u8], what: &str) -> Result<Option<(&'a [u8], usize)>, HttpError> {
    let window = &input[..input.len().min(CHUNK_LINE_BYTES_MAX + 2)];
    match window.iter().position(|&b| b == b'\n') {
        Some(newline) => {
            let line = &input[..newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Ok(Some((line, newline + 1)))
        }
        None if input.len() > CHUNK_LINE_BYTES_MAX => {
            Err(HttpError::bad(format!("chunked body: {what} longer than {CHUNK_LINE_BYTES_MAX} bytes")))
        }
        None => Ok(None),
    }
}

fn parse_chunk_size_hex(text: &[u8]) -> Result<u64, HttpError> {
    if text.is_empty() || text.len() > 16 {
        return Err(HttpError::bad("chunked body: invalid chunk size"));
    }
    let mut size: u64 = 0;
    for &b in text {
        let digit = (b as char).to_digit(16).ok_or_else(|| HttpError::bad("chunked body: invalid chunk size"))?;
        size = (size << 4) | u64::from(digit);
    }
    Ok(size)
}

/// Parses `head.raw` with httparse and fills the head's fields.
fn parse_head_fields(head: &mut RequestHead) -> Result<(), HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut request = httparse::Request::new(&mut headers);
    let (base, raw_len) = (head.raw.as_ptr() as usize, head.raw.len());
    // httparse returns slices of the buffer it parsed; their offsets are
    // kept instead of the slices. Checked, so that a slice from anywhere
    // else is a 400, never a panic.
    let offset_of = |part: &[u8]| -> Result<Range<usize>, HttpError> {
        let start = (part.as_ptr() as usize).checked_sub(base).filter(|start| start + part.len() <= raw_len);
        start.map(|start| start..start + part.len()).ok_or_else(|| HttpError::bad("malformed request head"))
    };
    match request.parse(&head.raw) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HttpError::bad("malformed request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::bad(format!("more than {HEADERS_MAX} headers")));
        }
        Err(error) => return Err(HttpError::bad(format!("malformed request head: {error}"))),
    }
    let method = request.method.unwrap_or("");
    let target = origin_form(request.path.unwrap_or(""))?;
    let mut fields = HeadFields::default();
    // Into the head's own list, whose capacity is kept from request to request.
    head.headers.clear();
    for header in request.headers.iter() {
        fields.absorb(header.name, header.value)?;
        head.headers.push((offset_of(header.name.as_bytes())?, offset_of(header.value)?));
    }
    let minor_version = request.version.unwrap_or(1);
    head.method = Method::from_token(method);
    head.target = offset_of(target.as_bytes())?;
    head.minor_version = minor_version;
    fields.apply(head, minor_version)
}

/// The origin-form (`/path?query`) of a request target. The absolute form
/// (`http://host/path`) must be accepted by servers (RFC 9112 section 3.2.2);
/// its scheme and authority are dropped.
fn origin_form(target: &str) -> Result<&str, HttpError> {
    let without_scheme = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"));
    let origin = match without_scheme {
        // No path after the authority means `/`: an empty target (kept
        // inside the head buffer, which the head's ranges point into).
        Some(rest) => rest.find('/').map_or(&rest[rest.len()..], |slash| &rest[slash..]),
        None => target,
    };
    if !origin.is_empty() && !origin.starts_with('/') {
        return Err(HttpError::bad("request target must be an absolute path such as /v1/version"));
    }
    Ok(origin)
}

/// The headers that shape how a request is read, gathered before deciding.
#[derive(Default)]
struct HeadFields {
    content_length: Option<u64>,
    chunked: bool,
    connection_close: bool,
    connection_keep_alive: bool,
    expect_continue: bool,
}

impl HeadFields {
    fn absorb(&mut self, name: &str, value: &[u8]) -> Result<(), HttpError> {
        if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(value)?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::bad("conflicting Content-Length headers"));
            }
            self.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let codings = String::from_utf8_lossy(value).to_ascii_lowercase();
            if codings.trim() != "chunked" || self.chunked {
                return Err(HttpError::bad("Transfer-Encoding: only a single \"chunked\" coding is supported"));
            }
            self.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                self.connection_close |= token.eq_ignore_ascii_case(b"close");
                self.connection_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("expect") {
            self.expect_continue |= value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        Ok(())
    }

    fn apply(self, head: &mut RequestHead, minor_version: u8) -> Result<(), HttpError> {
        head.keep_alive = if minor_version == 0 {
            self.connection_keep_alive && !self.connection_close
        } else {
            !self.connection_close
        };
        head.body = match (self.chunked, self.content_length) {
            (true, Some(_)) => {
                // Both framings at once is how request smuggling starts.
                return Err(HttpError::bad("both Transfer-Encoding and Content-Length are present"));
            }
            (true, None) if minor_version == 0 => {
                return Err(HttpError::bad("Transfer-Encoding: chunked requires HTTP/1.1"));
            }
            (true, None) => BodyKind::Chunked,
            (false, Some(0)) | (false, None) => BodyKind::None,
            (false, Some(length)) => BodyKind::Length(length),
        };
        head.expect_continue = self.expect_continue && head.body != BodyKind::None;
        Ok(())
    }
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::bad("Content-Length: not a valid length"));
    }
    // At most 19 ASCII digits: always fits in a u64.
    Ok(digits.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Where `?` is in a target: a byte search (`str::split_once` with a `char`
/// cost a few hundred instructions per request, twice per request).
fn query_start(target: &str) -> Option<usize> {
    target.bytes().position(|byte| byte == b'?')
}

#[cfg(test)]
mod tests;
