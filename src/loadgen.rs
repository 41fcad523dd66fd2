//! The benchmark clients' workloads (`stoat-load`, `stoat-pace`): the HTTP
//! requests of the commit benchmarks for Stoat and its peers, and what an
//! answer tells the next request. Not used by the server.
//!
//! Every request reads and writes random keys: a 12-byte prefix
//! (`stoat-bench-`) and a 4-byte big-endian integer below `keys`, as in
//! FoundationDB's benchmarks, in base64. The version a request reads at is
//! the newest one seen in any answer so far (Stoat's `version`, etcd's
//! `header.revision`), as a client tracking its reads would.

use std::io::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::random::SplitMix64;

/// The server a workload speaks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// `POST /v1/commit`; 200 committed, 409 not committed.
    Stoat,
    /// etcd v3's JSON gateway, `POST /v3/kv/txn`: compare each read key's
    /// `mod_revision` with the revision read at, then put.
    Etcd,
    /// Stoat's request sent to a server answering a fixed body (nginx): the
    /// cost of HTTP alone.
    Fixed,
}

/// The transactions sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One point read and one write on random keys.
    Point,
    /// Ten range reads of about ten keys each and twenty writes of distinct
    /// random keys.
    Large,
}

/// How an answer is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stoat 200, etcd `succeeded: true`, a fixed answer's 200.
    Committed,
    /// Stoat 409, etcd `succeeded: false`.
    NotCommitted,
    /// Anything else (an error status).
    Other,
}

/// What a client saw: every latency measured and the answers by outcome.
#[derive(Debug, Default)]
pub struct Tally {
    latencies_us: Vec<u64>,
    pub committed: u64,
    pub not_committed: u64,
    pub other: u64,
}

impl Tally {
    pub fn record(&mut self, outcome: Outcome, latency: std::time::Duration) {
        self.latencies_us.push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        match outcome {
            Outcome::Committed => self.committed += 1,
            Outcome::NotCommitted => self.not_committed += 1,
            Outcome::Other => self.other += 1,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.committed += other.committed;
        self.not_committed += other.not_committed;
        self.other += other.other;
    }

    /// Answers recorded.
    pub fn count(&self) -> usize {
        self.latencies_us.len()
    }

    /// The latency percentiles `percents` (nearest rank), in milliseconds;
    /// zeros when nothing was recorded.
    pub fn percentiles_ms(&mut self, percents: &[f64]) -> Vec<f64> {
        self.latencies_us.sort_unstable();
        let count = self.latencies_us.len();
        percents
            .iter()
            .map(|&p| {
                if count == 0 {
                    return 0.0;
                }
                let rank = ((p / 100.0) * count as f64).ceil() as usize;
                self.latencies_us[rank.clamp(1, count) - 1] as f64 / 1000.0
            })
            .collect()
    }
}

/// One client's request stream: random keys and the newest version seen.
#[derive(Debug)]
pub struct Workload {
    target: Target,
    shape: Shape,
    keys: u32,
    random: SplitMix64,
    read_version: u64,
    body: Vec<u8>,
}

impl Workload {
    pub fn new(target: Target, shape: Shape, keys: u32, seed: u64) -> Self {
        let random = SplitMix64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
        Workload { target, shape, keys: keys.max(11), random, read_version: 0, body: Vec::with_capacity(2048) }
    }

    /// Appends the next whole HTTP/1.1 request to `out`.
    pub fn next_request(&mut self, out: &mut Vec<u8>) {
        self.body.clear();
        let mut body = std::mem::take(&mut self.body);
        match self.target {
            Target::Stoat | Target::Fixed => self.stoat_body(&mut body),
            Target::Etcd => self.etcd_body(&mut body),
        }
        let path = if self.target == Target::Etcd { "/v3/kv/txn" } else { "/v1/commit" };
        let _ = write!(
            out,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        out.extend_from_slice(&body);
        self.body = body;
    }

    /// Counts an answer and takes the version it carries as the next read
    /// version when it is newer.
    pub fn observe(&mut self, status: u16, body: &[u8]) -> Outcome {
        let field = match self.target {
            Target::Etcd => &b"\"revision\":\""[..],
            Target::Stoat | Target::Fixed => &b"\"version\":"[..],
        };
        if let Some(version) = number_after(body, field) {
            self.read_version = self.read_version.max(version);
        }
        match (self.target, status) {
            (Target::Etcd, 200) if find(body, b"\"succeeded\":true").is_some() => Outcome::Committed,
            (Target::Etcd, 200) => Outcome::NotCommitted,
            (_, 200) => Outcome::Committed,
            (Target::Stoat, 409) => Outcome::NotCommitted,
            _ => Outcome::Other,
        }
    }

    fn key(&mut self) -> String {
        key_at(self.random.below(u64::from(self.keys)) as u32)
    }

    /// `count` distinct keys: consecutive integers from a random start.
    fn distinct_keys(&mut self, count: u32) -> Vec<String> {
        let start = self.random.below(u64::from(self.keys - count)) as u32;
        (start..start + count).map(key_at).collect()
    }

    /// A range of about ten keys: `[key(m), key(m + 10))`.
    fn range(&mut self) -> (String, String) {
        let m = self.random.below(u64::from(self.keys - 10)) as u32;
        (key_at(m), key_at(m + 10))
    }

    fn stoat_body(&mut self, body: &mut Vec<u8>) {
        let _ = write!(body, r#"{{"read_version":{},"preconditions":["#, self.read_version);
        match self.shape {
            Shape::Point => {
                let (read, write) = (self.key(), self.key());
                let _ = write!(
                    body,
                    r#"{{"type":"point_read","key":"{read}"}}],"operations":[{{"type":"write","key":"{write}","value":"dmFsdWU="}}]}}"#
                );
            }
            Shape::Large => {
                for index in 0..10 {
                    let (begin, end) = self.range();
                    let comma = if index > 0 { "," } else { "" };
                    let _ = write!(body, r#"{comma}{{"type":"range_read","begin":"{begin}","end":"{end}"}}"#);
                }
                body.extend_from_slice(br#"],"operations":["#);
                for (index, key) in self.distinct_keys(20).iter().enumerate() {
                    let comma = if index > 0 { "," } else { "" };
                    let _ = write!(body, r#"{comma}{{"type":"write","key":"{key}","value":"dmFsdWU="}}"#);
                }
                body.extend_from_slice(b"]}");
            }
        }
    }

    fn etcd_body(&mut self, body: &mut Vec<u8>) {
        // A key written after the revision read at has mod_revision > it.
        let below = self.read_version.max(1) + 1;
        body.extend_from_slice(br#"{"compare":["#);
        match self.shape {
            Shape::Point => {
                let (read, write) = (self.key(), self.key());
                let _ = write!(
                    body,
                    r#"{{"key":"{read}","target":"MOD","result":"LESS","mod_revision":"{below}"}}],"success":[{{"request_put":{{"key":"{write}","value":"dmFsdWU="}}}}]}}"#
                );
            }
            Shape::Large => {
                for index in 0..10 {
                    let (begin, end) = self.range();
                    let comma = if index > 0 { "," } else { "" };
                    let _ = write!(
                        body,
                        r#"{comma}{{"key":"{begin}","range_end":"{end}","target":"MOD","result":"LESS","mod_revision":"{below}"}}"#
                    );
                }
                body.extend_from_slice(br#"],"success":["#);
                for (index, key) in self.distinct_keys(20).iter().enumerate() {
                    let comma = if index > 0 { "," } else { "" };
                    let _ = write!(body, r#"{comma}{{"request_put":{{"key":"{key}","value":"dmFsdWU="}}}}"#);
                }
                body.extend_from_slice(b"]}");
            }
        }
    }
}

/// Key number `n`: `stoat-bench-` and `n` as 4 big-endian bytes, in base64.
fn key_at(n: u32) -> String {
    let mut bytes = *b"stoat-bench-\0\0\0\0";
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    STANDARD.encode(bytes)
}

/// The decimal number right after the first `field` in `body` (a quote
/// after it, as etcd writes int64s, is not part of the number).
fn number_after(body: &[u8], field: &[u8]) -> Option<u64> {
    let at = find(body, field)? + field.len();
    let digits = body[at..].iter().take_while(|byte| byte.is_ascii_digit());
    let mut seen = false;
    let value = digits.fold(0u64, |n, &digit| {
        seen = true;
        n.saturating_mul(10).saturating_add(u64::from(digit - b'0'))
    });
    seen.then_some(value)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// A complete HTTP/1.1 answer found by [`parse_answer`].
pub struct Answer {
    pub status: u16,
    pub body: std::ops::Range<usize>,
    pub length: usize,
    pub chunked: bool,
}

/// The complete HTTP/1.1 answer at the start of `input`: its status, the
/// byte range of its body and its whole length; `Ok(None)` while more bytes
/// are needed. Content-Length and chunked bodies are understood (a chunked
/// body is decoded into `scratch`, and `body` is then a range of `scratch`).
pub fn parse_answer(input: &[u8], scratch: &mut Vec<u8>) -> Result<Option<Answer>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_length = match response.parse(input) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(format!("unreadable answer: {error}")),
    };
    let status = response.code.unwrap_or(0);
    let mut content_length = None;
    let mut chunked = false;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(header.value).map_err(|_| "bad Content-Length")?;
            content_length = Some(text.trim().parse::<usize>().map_err(|_| "bad Content-Length")?);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = header.value.eq_ignore_ascii_case(b"chunked");
        }
    }
    if !chunked {
        let length = content_length.unwrap_or(0);
        if input.len() < head_length + length {
            return Ok(None);
        }
        return Ok(Some(Answer {
            status,
            body: head_length..head_length + length,
            length: head_length + length,
            chunked,
        }));
    }
    scratch.clear();
    let mut at = head_length;
    loop {
        let Some(line_end) = find(&input[at..], b"\r\n") else { return Ok(None) };
        let size_text = std::str::from_utf8(&input[at..at + line_end]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        at += line_end + 2;
        if size == 0 {
            // No trailers are expected: the final CRLF.
            if input.len() < at + 2 {
                return Ok(None);
            }
            return Ok(Some(Answer { status, body: 0..scratch.len(), length: at + 2, chunked }));
        }
        if input.len() < at + size + 2 {
            return Ok(None);
        }
        scratch.extend_from_slice(&input[at..at + size]);
        at += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stoat_requests_track_the_newest_version() {
        let mut workload = Workload::new(Target::Stoat, Shape::Point, 1000, 1);
        let mut out = Vec::new();
        workload.next_request(&mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("POST /v1/commit HTTP/1.1\r\n"), "{text}");
        assert!(text.contains(r#"{"read_version":0,"preconditions":[{"type":"point_read","key":"c3RvYXQtYmVuY2gt"#));
        assert_eq!(workload.observe(200, br#"{"version":42,"leader_id":"x"}"#), Outcome::Committed);
        assert_eq!(workload.observe(409, br#"{"version":40}"#), Outcome::NotCommitted);
        assert_eq!(workload.observe(503, b"{}"), Outcome::Other);
        out.clear();
        workload.next_request(&mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(body.starts_with(r#"{"read_version":42,"#), "{body}");
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())), "{head}");
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn etcd_requests_compare_against_the_newest_revision() {
        let mut workload = Workload::new(Target::Etcd, Shape::Large, 1000, 2);
        let body = br#"{"header":{"revision":"17"},"succeeded":true}"#;
        assert_eq!(workload.observe(200, body), Outcome::Committed);
        assert_eq!(workload.observe(200, br#"{"header":{"revision":"9"},"succeeded":false}"#), Outcome::NotCommitted);
        let mut out = Vec::new();
        workload.next_request(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("POST /v3/kv/txn HTTP/1.1\r\n"));
        assert_eq!(text.matches(r#""mod_revision":"18""#).count(), 10, "{text}");
        assert_eq!(text.matches("request_put").count(), 20);
        let body = text.split_once("\r\n\r\n").unwrap().1;
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }

    #[test]
    fn tallies_merge_and_give_nearest_rank_percentiles() {
        let mut tally = Tally::default();
        assert_eq!(tally.percentiles_ms(&[50.0]), [0.0]);
        for millis in 1..=10 {
            tally.record(Outcome::Committed, std::time::Duration::from_millis(millis));
        }
        let mut other = Tally::default();
        other.record(Outcome::NotCommitted, std::time::Duration::from_millis(100));
        other.record(Outcome::Other, std::time::Duration::from_millis(50));
        tally.merge(other);
        assert_eq!((tally.count(), tally.committed, tally.not_committed, tally.other), (12, 10, 1, 1));
        assert_eq!(tally.percentiles_ms(&[50.0, 90.0, 100.0]), [6.0, 50.0, 100.0]);
    }

    #[test]
    fn answers_are_framed_by_length_or_chunks() {
        let mut scratch = Vec::new();
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1";
        let answer = parse_answer(whole, &mut scratch).unwrap().unwrap();
        assert_eq!((answer.status, &whole[answer.body.clone()], answer.length), (200, &b"hello"[..], 43));
        assert!(parse_answer(&whole[..40], &mut scratch).unwrap().is_none());
        let chunked = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let answer = parse_answer(chunked, &mut scratch).unwrap().unwrap();
        assert!(answer.chunked);
        assert_eq!((answer.status, &scratch[answer.body.clone()], answer.length), (409, &b"abcde"[..], chunked.len()));
        assert!(parse_answer(&chunked[..chunked.len() - 1], &mut scratch).unwrap().is_none());
        assert!(parse_answer(b"garbage\r\n\r\n", &mut scratch).is_err());
    }
}
