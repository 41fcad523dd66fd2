//! An incremental HTTP/1.1 response parser for the S3 client: the head with
//! `httparse`, then a body framed by `Content-Length`, chunked transfer
//! coding, or the end of the connection. Pure: bytes in, a response out.
//!
//! Invariants: never panics on any input; never holds more than
//! `head_bytes_max + body_bytes_max` (plus one read) of a response; a
//! response that ends early is an error, never a short body.

/// A complete response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    #[error("HTTP response larger than {0} bytes")]
    TooLarge(usize),
    #[error("the connection closed before the response was complete")]
    Truncated,
}

/// Most headers a response may have.
const HEADERS_MAX: usize = 64;

#[derive(Debug)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    keep_alive: bool,
}

/// Parses one response from the bytes of a connection.
#[derive(Debug)]
pub struct ResponseParser {
    buffer: Vec<u8>,
    /// Where unparsed bytes start in `buffer`.
    cursor: usize,
    head: Option<Head>,
    body: Vec<u8>,
    /// In chunked framing, after the last (zero) chunk.
    in_trailers: bool,
    head_only: bool,
    head_bytes_max: usize,
    body_bytes_max: usize,
}

impl ResponseParser {
    /// `head_only` for responses to HEAD, which have no body whatever their
    /// headers say.
    pub fn new(head_only: bool, head_bytes_max: usize, body_bytes_max: usize) -> Self {
        ResponseParser {
            buffer: Vec::new(),
            cursor: 0,
            head: None,
            body: Vec::new(),
            in_trailers: false,
            head_only,
            head_bytes_max,
            body_bytes_max,
        }
    }

    /// True once any byte of the response has arrived.
    pub fn started(&self) -> bool {
        !self.buffer.is_empty() || self.head.is_some()
    }

    /// Adds bytes read from the connection; a response once it is complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Option<Response>, ResponseError> {
        self.buffer.extend_from_slice(bytes);
        if self.head.is_none() && !self.parse_head()? {
            return Ok(None);
        }
        self.parse_body()
    }

    /// The connection reached its end: the response, if the framing allows
    /// it to end here.
    pub fn finish(&mut self) -> Result<Response, ResponseError> {
        match self.head.as_ref().map(|head| &head.framing) {
            Some(Framing::UntilClose) => {
                let rest = self.buffer.len() - self.cursor;
                if self.body.len() + rest > self.body_bytes_max {
                    return Err(ResponseError::TooLarge(self.body_bytes_max));
                }
                self.body.extend_from_slice(&self.buffer[self.cursor..]);
                self.cursor = self.buffer.len();
                Ok(self.complete(false))
            }
            _ => Err(ResponseError::Truncated),
        }
    }

    fn parse_head(&mut self) -> Result<bool, ResponseError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut response = httparse::Response::new(&mut headers);
            let parsed = response.parse(&self.buffer[self.cursor..]);
            let length = match parsed {
                Ok(httparse::Status::Complete(length)) => length,
                Ok(httparse::Status::Partial) => {
                    if self.buffer.len() - self.cursor > self.head_bytes_max {
                        return Err(ResponseError::TooLarge(self.head_bytes_max));
                    }
                    return Ok(false);
                }
                Err(error) => return Err(ResponseError::Malformed(error.to_string())),
            };
            let status = response.code.unwrap_or(0);
            let version = response.version.unwrap_or(1);
            let headers: Vec<(String, String)> = response
                .headers
                .iter()
                .map(|header| (header.name.to_owned(), String::from_utf8_lossy(header.value).trim().to_owned()))
                .collect();
            self.cursor += length;
            if (100..200).contains(&status) {
                // An interim response (100 Continue): the real one follows.
                continue;
            }
            self.head = Some(self.head_from(status, version, headers)?);
            return Ok(true);
        }
    }

    fn head_from(&self, status: u16, version: u8, headers: Vec<(String, String)>) -> Result<Head, ResponseError> {
        let find = |name: &str| headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let connection = find("connection").map(|value| value.to_ascii_lowercase());
        let mut keep_alive = match version {
            0 => connection.as_deref() == Some("keep-alive"),
            _ => connection.as_deref() != Some("close"),
        };
        let chunked = find("transfer-encoding").is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
        let framing = if self.head_only || status == 204 || status == 304 {
            Framing::Length(0)
        } else if chunked {
            Framing::Chunked
        } else if let Some(length) = find("content-length") {
            let length: u64 =
                length.parse().map_err(|_| ResponseError::Malformed(format!("Content-Length {length:?}")))?;
            if length > self.body_bytes_max as u64 {
                return Err(ResponseError::TooLarge(self.body_bytes_max));
            }
            Framing::Length(length as usize)
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        Ok(Head { status, headers, framing, keep_alive })
    }

    fn parse_body(&mut self) -> Result<Option<Response>, ResponseError> {
        let Some(head) = &self.head else { return Ok(None) };
        match head.framing {
            Framing::Length(length) => {
                let available = self.buffer.len() - self.cursor;
                if available < length {
                    return Ok(None);
                }
                let keep_alive = head.keep_alive && available == length;
                self.body.extend_from_slice(&self.buffer[self.cursor..self.cursor + length]);
                self.cursor += length;
                Ok(Some(self.complete(keep_alive)))
            }
            Framing::UntilClose => {
                if self.buffer.len() - self.cursor > self.body_bytes_max {
                    return Err(ResponseError::TooLarge(self.body_bytes_max));
                }
                Ok(None)
            }
            Framing::Chunked => self.parse_chunks(),
        }
    }

    fn parse_chunks(&mut self) -> Result<Option<Response>, ResponseError> {
        loop {
            let rest = &self.buffer[self.cursor..];
            if self.in_trailers {
                // Trailers end with an empty line; none at all is just "\r\n".
                if rest.starts_with(b"\r\n") {
                    self.cursor += 2;
                    let keep_alive = self.head.as_ref().is_some_and(|head| head.keep_alive);
                    let keep_alive = keep_alive && self.cursor == self.buffer.len();
                    return Ok(Some(self.complete(keep_alive)));
                }
                match rest.windows(4).position(|window| window == b"\r\n\r\n") {
                    Some(position) => {
                        self.cursor += position + 2;
                        continue;
                    }
                    None if rest.len() > self.head_bytes_max => {
                        return Err(ResponseError::TooLarge(self.head_bytes_max))
                    }
                    None => return Ok(None),
                }
            }
            let (consumed, size) = match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete(found)) => found,
                Ok(httparse::Status::Partial) if rest.len() > 1024 => {
                    return Err(ResponseError::Malformed("chunk size line too long".into()))
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(ResponseError::Malformed("bad chunk size".into())),
            };
            if size == 0 {
                self.cursor += consumed;
                self.in_trailers = true;
                continue;
            }
            if self.body.len() as u64 + size > self.body_bytes_max as u64 {
                return Err(ResponseError::TooLarge(self.body_bytes_max));
            }
            let size = size as usize;
            if rest.len() < consumed + size + 2 {
                return Ok(None);
            }
            if &rest[consumed + size..consumed + size + 2] != b"\r\n" {
                return Err(ResponseError::Malformed("chunk not followed by CRLF".into()));
            }
            self.body.extend_from_slice(&rest[consumed..consumed + size]);
            self.cursor += consumed + size + 2;
            // Drop consumed bytes now and then so the buffer stays bounded.
            if self.cursor > 64 * 1024 {
                self.buffer.drain(..self.cursor);
                self.cursor = 0;
            }
        }
    }

    fn complete(&mut self, keep_alive: bool) -> Response {
        let head = self.head.take().unwrap_or(Head {
            status: 0,
            headers: Vec::new(),
            framing: Framing::Length(0),
            keep_alive: false,
        });
        Response { status: head.status, headers: head.headers, body: std::mem::take(&mut self.body), keep_alive }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], step: usize) -> Result<Option<Response>, ResponseError> {
        let mut parser = ResponseParser::new(false, 1024, 1024);
        for piece in bytes.chunks(step.max(1)) {
            if let Some(response) = parser.feed(piece)? {
                return Ok(Some(response));
            }
        }
        Ok(None)
    }

    #[test]
    fn content_length_bodies_in_any_pieces() {
        let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"x\"\r\n\r\nhello";
        for step in 1..bytes.len() {
            let response = parse_all(bytes, step).unwrap().unwrap();
            assert_eq!((response.status, response.body.as_slice(), response.keep_alive), (200, &b"hello"[..], true));
            assert_eq!(response.header("etag"), Some("\"x\""));
        }
    }

    #[test]
    fn chunked_bodies_with_and_without_trailers() {
        let plain = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..plain.len() {
            assert_eq!(parse_all(plain, step).unwrap().unwrap().body, b"abcde");
            assert_eq!(parse_all(trailers, step.min(trailers.len())).unwrap().unwrap().body, b"abc");
        }
    }

    #[test]
    fn interim_responses_are_skipped_and_close_is_honoured() {
        let bytes = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
        let response = parse_all(bytes, 7).unwrap().unwrap();
        assert_eq!((response.status, response.keep_alive), (204, false));
    }

    #[test]
    fn until_close_bodies_need_the_end() {
        let mut parser = ResponseParser::new(false, 1024, 1024);
        assert_eq!(parser.feed(b"HTTP/1.0 200 OK\r\n\r\nsome body").unwrap(), None);
        let response = parser.finish().unwrap();
        assert_eq!((response.body.as_slice(), response.keep_alive), (&b"some body"[..], false));
    }

    #[test]
    fn bad_and_oversized_and_truncated_responses_are_errors() {
        assert!(matches!(parse_all(b"HTTP/1.1 2x0 OK\r\n\r\n", 3), Err(ResponseError::Malformed(_))));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n", 5),
            Err(ResponseError::TooLarge(1024))
        ));
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 5),
            Err(ResponseError::Malformed(_))
        ));
        let big_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFF\r\n";
        assert!(matches!(parse_all(big_chunk, 5), Err(ResponseError::TooLarge(1024))));
        let mut parser = ResponseParser::new(false, 1024, 1024);
        assert_eq!(parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").unwrap(), None);
        assert_eq!(parser.finish(), Err(ResponseError::Truncated));
        let mut endless_head = ResponseParser::new(false, 64, 1024);
        assert_eq!(endless_head.feed(b"HTTP/1.1 200 OK\r\nX-Long: ").unwrap(), None);
        assert_eq!(endless_head.feed(&[b'a'; 100]), Err(ResponseError::TooLarge(64)));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut parser = ResponseParser::new(false, 128, 128);
            let _ = parser.feed(&bytes);
            let _ = parser.finish();
        }
    }
}
