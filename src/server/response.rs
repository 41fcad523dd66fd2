//! Responses: the public error codes of the API (mapped from internal errors
//! here and nowhere else), JSON helpers, and the standard response headers.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

use stoat_http::{write_response_head, HttpError, ResponseHead};

/// Every error a client can be answered with, as the API names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    BadRequest(String),
    NotFound(String),
    MethodNotAllowed {
        allow: &'static str,
        message: String,
    },
    PayloadTooLarge {
        limit: u64,
    },
    TooManyRequests(String),
    HeadersTooLarge {
        limit: usize,
    },
    Unavailable(String),
    VersionTooOld {
        message: String,
        oldest_version: u64,
    },
    /// A retention policy `PUT` below history already deleted: 409 with the
    /// code and `oldest_version` of `version_too_old`.
    RetentionTooOld {
        message: String,
        oldest_version: u64,
    },
}

/// Seconds a client is asked to wait on 429 and 503.
const RETRY_AFTER_SECONDS: &[u8] = b"1";

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::TooManyRequests(_) => 429,
            ApiError::HeadersTooLarge { .. } => 431,
            ApiError::Unavailable(_) => 503,
            ApiError::VersionTooOld { .. } => 410,
            ApiError::RetentionTooOld { .. } => 409,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::HeadersTooLarge { .. } => "headers_too_large",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::VersionTooOld { .. } | ApiError::RetentionTooOld { .. } => "version_too_old",
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::BadRequest(message)
            | ApiError::NotFound(message)
            | ApiError::MethodNotAllowed { message, .. }
            | ApiError::TooManyRequests(message)
            | ApiError::Unavailable(message)
            | ApiError::VersionTooOld { message, .. }
            | ApiError::RetentionTooOld { message, .. } => message.clone(),
            ApiError::PayloadTooLarge { limit } => {
                format!("request body exceeds the limit of {limit} bytes")
            }
            ApiError::HeadersTooLarge { limit } => {
                format!("request line and headers exceed the limit of {limit} bytes")
            }
        }
    }

    /// Headers the API requires with this error.
    pub fn extra_headers(&self) -> Option<(&'static str, &'static [u8])> {
        match self {
            ApiError::MethodNotAllowed { allow, .. } => Some(("Allow", allow.as_bytes())),
            ApiError::TooManyRequests(_) | ApiError::Unavailable(_) => Some(("Retry-After", RETRY_AFTER_SECONDS)),
            _ => None,
        }
    }

    /// Writes the JSON body: `{"error": code, "message": text}`.
    pub fn write_body(&self, out: &mut impl ByteSink) {
        out.put(b"{\"error\":\"");
        out.put(self.code().as_bytes());
        out.put(b"\",\"message\":");
        write_json_string(out, &self.message());
        if let ApiError::VersionTooOld { oldest_version, .. } | ApiError::RetentionTooOld { oldest_version, .. } = self
        {
            out.put(b",\"oldest_version\":");
            write_u64(out, *oldest_version);
        }
        out.put(b"}");
    }

    /// The JSON body as a new buffer.
    pub fn body(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(96);
        self.write_body(&mut body);
        body
    }
}

impl From<HttpError> for ApiError {
    fn from(error: HttpError) -> Self {
        match error {
            HttpError::BadRequest(message) => ApiError::BadRequest(message),
            HttpError::HeadTooLarge { limit } => ApiError::HeadersTooLarge { limit },
            HttpError::PayloadTooLarge { limit } => ApiError::PayloadTooLarge { limit },
        }
    }
}

/// Somewhere to write bytes: a heap `Vec` or a `Vec` in a request's arena.
pub trait ByteSink {
    fn put(&mut self, bytes: &[u8]);
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl ByteSink for bumpalo::collections::Vec<'_, u8> {
    fn put(&mut self, bytes: &[u8]) {
        // One copy; bumpalo's `extend_from_slice` clones byte by byte.
        self.extend_from_slice_copy(bytes);
    }
}

/// Appends `text` as a JSON string literal, escaped.
pub fn write_json_string(out: &mut impl ByteSink, text: &str) {
    out.put(b"\"");
    let bytes = text.as_bytes();
    // The common case (ids, leader ids): nothing to escape, one copy.
    if !needs_escaping(bytes) {
        out.put(bytes);
        out.put(b"\"");
        return;
    }
    let mut plain_from = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escaped: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.put(&bytes[plain_from..index]);
                out.put(&[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
                plain_from = index + 1;
                continue;
            }
            _ => continue,
        };
        out.put(&bytes[plain_from..index]);
        out.put(escaped);
        plain_from = index + 1;
    }
    out.put(&bytes[plain_from..]);
    out.put(b"\"");
}

/// Whether `bytes` hold a character a JSON string must escape. Looked at
/// 16 bytes at a time, with no early exit inside a block so that a block
/// compiles to vector compares, and an early exit between blocks.
fn needs_escaping(bytes: &[u8]) -> bool {
    let special = |byte: u8| (byte < 0x20) | (byte == b'"') | (byte == b'\\');
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        if block.iter().fold(false, |found, &byte| found | special(byte)) {
            return true;
        }
    }
    blocks.remainder().iter().any(|&byte| special(byte))
}

/// Appends a decimal number.
pub fn write_u64(out: &mut impl ByteSink, value: u64) {
    out.put(itoa::Buffer::new().format(value).as_bytes());
}

/// A full response with Stoat's standard headers: Date, Content-Type,
/// Content-Length, X-Request-Id, and Connection: close when closing.
pub struct Response<'a> {
    pub status: u16,
    pub content_type: &'a str,
    pub body: &'a [u8],
    pub request_id: &'a str,
    pub close: bool,
    pub extra_header: Option<(&'a str, &'a [u8])>,
}

impl Response<'_> {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        with_http_date(|date| {
            let mut headers: [(&str, &[u8]); 3] =
                [("Date", date), ("X-Request-Id", self.request_id.as_bytes()), ("", b"")];
            let count = match self.extra_header {
                Some(header) => {
                    headers[2] = header;
                    3
                }
                None => 2,
            };
            write_response_head(
                out,
                &ResponseHead {
                    status: self.status,
                    content_type: Some(self.content_type),
                    content_length: Some(self.body.len()),
                    close: self.close,
                    headers: &headers[..count],
                },
            );
        });
        out.extend_from_slice(self.body);
    }
}

/// The head of a `text/event-stream` response: no length, the body ends
/// when the connection closes.
pub fn write_stream_head(out: &mut Vec<u8>, request_id: &str) {
    with_http_date(|date| {
        let headers: [(&str, &[u8]); 4] = [
            ("Date", date),
            ("X-Request-Id", request_id.as_bytes()),
            ("Cache-Control", b"no-cache"),
            ("X-Accel-Buffering", b"no"),
        ];
        write_response_head(
            out,
            &ResponseHead {
                status: 200,
                content_type: Some("text/event-stream"),
                content_length: None,
                close: true,
                headers: &headers,
            },
        );
    });
}

thread_local! {
    /// The formatted Date of the current second, per thread.
    static HTTP_DATE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Calls `f` with the current time as an HTTP date, formatted at most once
/// a second per thread.
fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    HTTP_DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        f(cached.1.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_backslashes_and_controls() {
        let mut out = Vec::new();
        write_json_string(&mut out, "a\"b\\c\n\u{1}é");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn plain_json_strings_are_copied_whole() {
        for text in ["", "req-1:a_b.c", "é 日本", "\u{7f}"] {
            let mut out = Vec::new();
            write_json_string(&mut out, text);
            assert_eq!(String::from_utf8(out).unwrap(), format!("\"{text}\""));
        }
    }

    #[test]
    fn a_character_to_escape_is_found_in_any_block_of_a_long_string() {
        let plain = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ";
        for at in 0..plain.len() {
            for (special, escaped) in [("\"", "\\\""), ("\\", "\\\\"), ("\n", "\\n"), ("\u{1f}", "\\u001f")] {
                let text = format!("{}{special}{}", &plain[..at], &plain[at + 1..]);
                let mut out = Vec::new();
                write_json_string(&mut out, &text);
                let expected = format!("\"{}{escaped}{}\"", &plain[..at], &plain[at + 1..]);
                assert_eq!(String::from_utf8(out).unwrap(), expected, "at {at}");
            }
        }
    }

    #[test]
    fn errors_render_their_code_message_and_headers() {
        let error = ApiError::MethodNotAllowed { allow: "POST", message: "use POST".into() };
        assert_eq!(error.status(), 405);
        assert_eq!(error.body(), br#"{"error":"method_not_allowed","message":"use POST"}"#);
        assert_eq!(error.extra_headers(), Some(("Allow", &b"POST"[..])));
        let mut out = Vec::new();
        Response {
            status: error.status(),
            content_type: "application/json",
            body: &error.body(),
            request_id: "r1",
            close: false,
            extra_header: error.extra_headers(),
        }
        .write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{text}");
        assert!(text.contains("\r\nX-Request-Id: r1\r\n") && text.contains("\r\nAllow: POST\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n{\"error\":\"method_not_allowed\",\"message\":\"use POST\"}"), "{text}");
    }
}
