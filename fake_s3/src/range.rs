//! The `Range` header of GetObject: one byte range, `a-b`, `a-` or `-n`.

use crate::error::S3Error;

/// What a `Range` header asks of an object of a given size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: the whole object (also for forms S3 ignores, such
    /// as several ranges or another unit).
    Whole,
    /// Bytes `start..end` (end exclusive), answered 206.
    Part { start: u64, end: u64 },
}

/// Resolves `header` against an object of `size` bytes. An unsatisfiable
/// range (starting at or past the end, or a zero-length suffix) is 416.
pub fn resolve(header: &[u8], size: u64) -> Result<RangeRequest, S3Error> {
    let Ok(text) = std::str::from_utf8(header) else {
        return Ok(RangeRequest::Whole);
    };
    let Some(spec) = text.trim().strip_prefix("bytes=") else {
        return Ok(RangeRequest::Whole);
    };
    if spec.contains(',') {
        return Ok(RangeRequest::Whole);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ok(RangeRequest::Whole);
    };
    let parse = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        (true, true) => Ok(RangeRequest::Whole),
        (true, false) => {
            let Some(suffix) = parse(last) else { return Ok(RangeRequest::Whole) };
            if suffix == 0 || size == 0 {
                return Err(S3Error::InvalidRange { size });
            }
            Ok(RangeRequest::Part { start: size.saturating_sub(suffix), end: size })
        }
        (false, _) => {
            let Some(start) = parse(first) else { return Ok(RangeRequest::Whole) };
            let last = if last.trim().is_empty() {
                None
            } else {
                match parse(last) {
                    Some(last) => Some(last),
                    None => return Ok(RangeRequest::Whole),
                }
            };
            if last.is_some_and(|last| last < start) {
                // An invalid range spec is ignored (RFC 9110 section 14.2).
                return Ok(RangeRequest::Whole);
            }
            if start >= size {
                return Err(S3Error::InvalidRange { size });
            }
            let end = last.map_or(size, |last| last.saturating_add(1).min(size));
            Ok(RangeRequest::Part { start, end })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, end: u64) -> Result<RangeRequest, S3Error> {
        Ok(RangeRequest::Part { start, end })
    }

    #[test]
    fn forms_of_a_range() {
        assert_eq!(resolve(b"bytes=0-9", 100), part(0, 10));
        assert_eq!(resolve(b"bytes=90-200", 100), part(90, 100));
        assert_eq!(resolve(b"bytes=95-", 100), part(95, 100));
        assert_eq!(resolve(b"bytes=-10", 100), part(90, 100));
        assert_eq!(resolve(b"bytes=-1000", 100), part(0, 100));
        assert_eq!(resolve(b"bytes=99-99", 100), part(99, 100));
    }

    #[test]
    fn unsatisfiable_ranges_are_416() {
        assert_eq!(resolve(b"bytes=100-", 100), Err(S3Error::InvalidRange { size: 100 }));
        assert_eq!(resolve(b"bytes=100-200", 100), Err(S3Error::InvalidRange { size: 100 }));
        assert_eq!(resolve(b"bytes=-0", 100), Err(S3Error::InvalidRange { size: 100 }));
        assert_eq!(resolve(b"bytes=0-", 0), Err(S3Error::InvalidRange { size: 0 }));
    }

    #[test]
    fn other_forms_mean_the_whole_object() {
        for header in [&b"items=0-1"[..], b"bytes=5-1", b"bytes=a-b", b"bytes=0-1,3-4", b"bytes=-", b"\xff"] {
            assert_eq!(resolve(header, 100), Ok(RangeRequest::Whole), "{header:?}");
        }
        assert_eq!(resolve(b"bytes=99999999999999999999999-", 100), Ok(RangeRequest::Whole));
    }
}
