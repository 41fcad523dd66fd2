//! Writing HTTP/1.1 responses into a caller's buffer.

/// The parts of a response head; `content_length` of `None` writes no
/// Content-Length (for streams that end with the connection).
#[derive(Debug, Clone, Copy)]
pub struct ResponseHead<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub content_length: Option<usize>,
    pub close: bool,
    /// Extra headers, written as given. Values must not contain CR or LF.
    pub headers: &'a [(&'a str, &'a [u8])],
}

/// Appends a status line and headers, ending with the blank line.
pub fn write_response_head(out: &mut Vec<u8>, head: &ResponseHead<'_>) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, u64::from(head.status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(head.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(content_type) = head.content_type {
        out.extend_from_slice(b"Content-Type: ");
        out.extend_from_slice(content_type.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(length) = head.content_length {
        out.extend_from_slice(b"Content-Length: ");
        write_decimal(out, length as u64);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in head.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if head.close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the interim response that lets an `Expect: 100-continue` client
/// send its body.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

fn write_decimal(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// The reason phrase for the status codes Stoat and fake_s3 send.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_head_with_length_and_extra_headers() {
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            &ResponseHead {
                status: 429,
                content_type: Some("application/json"),
                content_length: Some(12),
                close: true,
                headers: &[("Retry-After", b"1")],
            },
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\
             Retry-After: 1\r\nConnection: close\r\n\r\n"
        );
    }
}
