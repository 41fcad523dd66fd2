//! `Content-Encoding: aws-chunked` bodies: S3's own chunk framing inside
//! the HTTP body, with optional chunk signatures and trailing headers
//! (checksums sent after the data).
//!
//! ```text
//! 10000;chunk-signature=ad80...\r\n<65536 bytes>\r\n
//! 0;chunk-signature=b6c6...\r\n
//! x-amz-checksum-crc32:NhCmhg==\r\n
//! x-amz-trailer-signature:...\r\n
//! \r\n
//! ```

use crate::error::S3Error;
use crate::sigv4::ChunkSigner;

/// A decoded body: the data and the trailing headers (names lowercase).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decoded {
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

fn malformed(what: &str) -> S3Error {
    S3Error::InvalidRequest(format!("aws-chunked body: {what}"))
}

/// Takes a line ending in CRLF: the line and the rest after it.
fn take_line(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = input.windows(2).position(|w| w == b"\r\n")?;
    Some((&input[..end], &input[end + 2..]))
}

/// Decodes `body`; with `signer`, every chunk signature (and the trailer
/// signature, if the encoding has trailers) must be right.
pub fn decode(body: &[u8], signer: Option<&ChunkSigner>) -> Result<Decoded, S3Error> {
    let mut decoded = Decoded::default();
    let mut rest = body;
    let mut previous = signer.map(|s| s.seed_signature.clone()).unwrap_or_default();
    loop {
        let (line, after) = take_line(rest).ok_or_else(|| malformed("missing chunk header"))?;
        let line = std::str::from_utf8(line).map_err(|_| malformed("chunk header is not text"))?;
        let (size_text, extensions) = line.split_once(';').unwrap_or((line, ""));
        let size = usize::from_str_radix(size_text.trim(), 16).map_err(|_| malformed("invalid chunk size"))?;
        let data = after.get(..size).ok_or(S3Error::IncompleteBody)?;
        if let Some(signer) = signer {
            let sent = extensions
                .split(';')
                .find_map(|extension| extension.trim().strip_prefix("chunk-signature="))
                .ok_or_else(|| signature_mismatch("a chunk has no signature"))?;
            let expected = signer.chunk_signature(&previous, data);
            if !sent.eq_ignore_ascii_case(&expected) {
                return Err(signature_mismatch("a chunk signature does not match"));
            }
            previous = expected;
        }
        decoded.data.extend_from_slice(data);
        rest = &after[size..];
        if size == 0 {
            break;
        }
        rest = rest.strip_prefix(b"\r\n").ok_or_else(|| malformed("chunk data not followed by CRLF"))?;
    }
    read_trailers(rest, signer, &previous, &mut decoded)?;
    Ok(decoded)
}

fn signature_mismatch(what: &str) -> S3Error {
    S3Error::SignatureDoesNotMatch { string_to_sign: String::new(), canonical_request: what.to_string() }
}

/// Reads `name:value` lines up to an empty line or the end.
fn read_trailers(
    mut rest: &[u8],
    signer: Option<&ChunkSigner>,
    previous: &str,
    decoded: &mut Decoded,
) -> Result<(), S3Error> {
    let mut trailer_signature = None;
    let mut canonical_trailers = String::new();
    while let Some((line, after)) = take_line(rest) {
        rest = after;
        if line.is_empty() {
            break;
        }
        let line = std::str::from_utf8(line).map_err(|_| malformed("trailer is not text"))?;
        let (name, value) = line.split_once(':').ok_or_else(|| malformed("trailer without ':'"))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim().to_string());
        if name == "x-amz-trailer-signature" {
            trailer_signature = Some(value);
        } else {
            canonical_trailers.push_str(&format!("{name}:{value}\n"));
            decoded.trailers.push((name, value));
        }
    }
    if let (Some(signer), Some(sent)) = (signer, trailer_signature) {
        if !sent.eq_ignore_ascii_case(&signer.trailer_signature(previous, canonical_trailers.as_bytes())) {
            return Err(signature_mismatch("the trailer signature does not match"));
        }
    }
    Ok(())
}

/// Encodes `data` as unsigned aws-chunked with the given trailers (tests and tools).
pub fn encode_unsigned(data: &[u8], chunk_bytes: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    for chunk in data.chunks(chunk_bytes.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers {
        out.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::signing_key;

    #[test]
    fn unsigned_with_trailer_round_trips() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let body = encode_unsigned(&data, 8192, &[("x-amz-checksum-crc32", "abc=")]);
        let decoded = decode(&body, None).unwrap();
        assert_eq!(decoded.data, data);
        assert_eq!(decoded.trailers, vec![("x-amz-checksum-crc32".to_string(), "abc=".to_string())]);
    }

    #[test]
    fn signed_chunks_are_checked() {
        let signer = ChunkSigner {
            key: signing_key("secret", "20130524", "us-east-1", "s3"),
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            seed_signature: "00".repeat(32),
        };
        let chunks: [&[u8]; 3] = [b"hello ", b"world", b""];
        let mut body = Vec::new();
        let mut previous = signer.seed_signature.clone();
        for chunk in chunks {
            let signature = signer.chunk_signature(&previous, chunk);
            body.extend_from_slice(format!("{:x};chunk-signature={signature}\r\n", chunk.len()).as_bytes());
            body.extend_from_slice(chunk);
            body.extend_from_slice(b"\r\n");
            previous = signature;
        }
        assert_eq!(decode(&body, Some(&signer)).unwrap().data, b"hello world");
        let mut tampered = body.clone();
        let at = tampered.windows(5).position(|w| w == b"world").unwrap();
        tampered[at] = b'W';
        assert_eq!(decode(&tampered, Some(&signer)).unwrap_err().code(), "SignatureDoesNotMatch");
    }

    #[test]
    fn truncated_and_garbage_bodies_are_errors() {
        for body in [&b""[..], b"zz\r\n", b"10\r\nshort", b"5\r\nhelloXX0\r\n\r\n", b"\xff\xff\r\n"] {
            assert!(decode(body, None).is_err(), "{body:?}");
        }
    }
}
