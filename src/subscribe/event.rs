//! Server-Sent Events as `GET /v1/subscribe` sends them: transaction,
//! checkpoint and error events, encoded straight into a byte buffer. Pure:
//! no IO, no clock.
//!
//! ```text
//! id: 123457
//! event: transaction
//! data: {"version":123457,"prev_version":123456,"request_id":"…","leader_id":"…",
//!        "timestamp":"2026-11-21T20:27:42.555Z","operations":[…]}
//!
//! event: checkpoint
//! data: {"committed_version":123460,"durable_version":123460,"leader_id":"…"}
//! ```
//!
//! Invariants: every event ends with a blank line and its `data:` is one
//! line of JSON (JSON strings escape control characters, and keys and values
//! are base64), so a client's SSE parser can never split an event wrongly.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use stoat_http::date::write_rfc3339_millis;

use crate::commit::transaction::OperationRef;
use crate::log::format::TransactionView;
use crate::server::response::{write_json_string, write_u64};

/// Which keys a filtered stream keeps: those starting with `prefix`, that is
/// the range `[prefix, end)` where `end` is the smallest key greater than
/// every key with the prefix (`None`: no such key, the range is unbounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix {
    prefix: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Prefix {
    pub fn new(prefix: Vec<u8>) -> Self {
        let end = prefix_end(&prefix);
        Prefix { prefix, end }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.prefix
    }

    fn matches(&self, key: &[u8]) -> bool {
        key.starts_with(&self.prefix)
    }

    /// The part of `[begin, end)` inside the prefix's range, if not empty.
    fn clip<'a>(&'a self, begin: &'a [u8], end: &'a [u8]) -> Option<(&'a [u8], &'a [u8])> {
        let begin = begin.max(self.prefix.as_slice());
        let end = match &self.end {
            Some(limit) => end.min(limit.as_slice()),
            None => end,
        };
        (begin < end).then_some((begin, end))
    }

    /// The operation as a stream with this prefix sends it, if at all.
    fn filter<'a>(&'a self, operation: OperationRef<'a>) -> Option<OperationRef<'a>> {
        match operation {
            OperationRef::Write { key, .. } | OperationRef::Delete { key } => self.matches(key).then_some(operation),
            OperationRef::RangeDelete { begin, end } => {
                self.clip(begin, end).map(|(begin, end)| OperationRef::RangeDelete { begin, end })
            }
        }
    }

    /// True if any operation of `transaction` touches the prefix.
    pub fn touches(&self, transaction: &TransactionView<'_>) -> bool {
        transaction.operations().any(|operation| self.filter(operation).is_some())
    }
}

/// The smallest key greater than every key starting with `prefix`: the
/// prefix with its last non-0xff byte incremented and what follows dropped.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&byte| byte != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

/// Appends one `transaction` event. `prev_version` is the version of the
/// previous transaction of the stream; with a `prefix`, only the operations
/// touching it are written (range deletes clipped to it).
pub fn write_transaction(
    out: &mut Vec<u8>,
    transaction: &TransactionView<'_>,
    prev_version: u64,
    leader_id: &str,
    prefix: Option<&Prefix>,
) {
    out.extend_from_slice(b"id: ");
    write_u64(out, transaction.version);
    out.extend_from_slice(b"\nevent: transaction\ndata: {\"version\":");
    write_u64(out, transaction.version);
    out.extend_from_slice(b",\"prev_version\":");
    write_u64(out, prev_version);
    out.extend_from_slice(b",\"request_id\":");
    write_json_string(out, transaction.request_id);
    out.extend_from_slice(b",\"leader_id\":");
    write_json_string(out, leader_id);
    out.extend_from_slice(b",\"timestamp\":\"");
    write_rfc3339_millis(out, transaction.timestamp_ms);
    out.extend_from_slice(b"\",\"operations\":[");
    let mut first = true;
    for operation in transaction.operations() {
        let operation = match prefix {
            Some(prefix) => match prefix.filter(operation) {
                Some(kept) => kept,
                None => continue,
            },
            None => operation,
        };
        if !first {
            out.push(b',');
        }
        first = false;
        write_operation(out, operation);
    }
    out.extend_from_slice(b"]}\n\n");
}

fn write_operation(out: &mut Vec<u8>, operation: OperationRef<'_>) {
    match operation {
        OperationRef::Write { key, value } => {
            out.extend_from_slice(b"{\"type\":\"write\",\"key\":\"");
            write_base64(out, key);
            out.extend_from_slice(b"\",\"value\":\"");
            write_base64(out, value);
        }
        OperationRef::Delete { key } => {
            out.extend_from_slice(b"{\"type\":\"delete\",\"key\":\"");
            write_base64(out, key);
        }
        OperationRef::RangeDelete { begin, end } => {
            out.extend_from_slice(b"{\"type\":\"range_delete\",\"begin\":\"");
            write_base64(out, begin);
            out.extend_from_slice(b"\",\"end\":\"");
            write_base64(out, end);
        }
    }
    out.extend_from_slice(b"\"}");
}

/// Standard base64 with padding, appended without an intermediate string.
fn write_base64(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = out.len();
    let length = bytes.len().div_ceil(3) * 4;
    out.resize(start + length, 0);
    let written = STANDARD.encode_slice(bytes, &mut out[start..]);
    debug_assert_eq!(written, Ok(length));
}

/// Appends a `checkpoint` event.
pub fn write_checkpoint(out: &mut Vec<u8>, committed_version: u64, durable_version: u64, leader_id: &str) {
    out.extend_from_slice(b"event: checkpoint\ndata: {\"committed_version\":");
    write_u64(out, committed_version);
    out.extend_from_slice(b",\"durable_version\":");
    write_u64(out, durable_version);
    out.extend_from_slice(b",\"leader_id\":");
    write_json_string(out, leader_id);
    out.extend_from_slice(b"}\n\n");
}

/// Appends an `error` event: the stream ends after it.
pub fn write_error(out: &mut Vec<u8>, code: &str, message: &str, oldest_version: Option<u64>) {
    out.extend_from_slice(b"event: error\ndata: {\"error\":");
    write_json_string(out, code);
    out.extend_from_slice(b",\"message\":");
    write_json_string(out, message);
    if let Some(oldest) = oldest_version {
        out.extend_from_slice(b",\"oldest_version\":");
        write_u64(out, oldest);
    }
    out.extend_from_slice(b"}\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::format::{BatchEncoder, BatchView};

    #[test]
    fn prefix_ends_are_the_next_key_range() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }

    fn batch(operations: &[OperationRef<'_>]) -> Vec<u8> {
        let mut encoder = BatchEncoder::new("leader-1", 6);
        encoder.push(7, "req-1", 1_795_292_862_555, operations.iter().copied());
        encoder.finish().bytes.to_vec()
    }

    fn event(bytes: &[u8], prefix: Option<&Prefix>) -> String {
        let view = BatchView::parse(bytes).unwrap();
        let transaction = view.transactions().next().unwrap();
        let mut out = Vec::new();
        write_transaction(&mut out, &transaction, 6, view.leader_id, prefix);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn transaction_events_are_the_api_json() {
        let bytes = batch(&[
            OperationRef::Write { key: b"key", value: b"value" },
            OperationRef::Delete { key: b"old" },
            OperationRef::RangeDelete { begin: b"x", end: b"y" },
        ]);
        let text = event(&bytes, None);
        assert_eq!(
            text,
            "id: 7\nevent: transaction\ndata: {\"version\":7,\"prev_version\":6,\"request_id\":\"req-1\",\
             \"leader_id\":\"leader-1\",\"timestamp\":\"2026-11-21T20:27:42.555Z\",\"operations\":[\
             {\"type\":\"write\",\"key\":\"a2V5\",\"value\":\"dmFsdWU=\"},{\"type\":\"delete\",\"key\":\"b2xk\"},\
             {\"type\":\"range_delete\",\"begin\":\"eA==\",\"end\":\"eQ==\"}]}\n\n"
        );
        let data = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        let json: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(json["operations"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn a_prefix_keeps_matching_keys_and_clips_ranges() {
        let bytes = batch(&[
            OperationRef::Write { key: b"user/1", value: b"" },
            OperationRef::Write { key: b"other", value: b"v" },
            OperationRef::Delete { key: b"user" },
            OperationRef::RangeDelete { begin: b"a", end: b"z" },
            OperationRef::RangeDelete { begin: b"user/5", end: b"user/6" },
            OperationRef::RangeDelete { begin: b"v", end: b"w" },
        ]);
        let prefix = Prefix::new(b"user/".to_vec());
        let text = event(&bytes, Some(&prefix));
        let data = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        let json: serde_json::Value = serde_json::from_str(data).unwrap();
        let operations = json["operations"].as_array().unwrap();
        let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
        assert_eq!(operations.len(), 3, "{text}");
        assert_eq!(operations[0]["key"], b64(b"user/1"));
        assert_eq!(operations[1]["begin"], b64(b"user/"));
        assert_eq!(operations[1]["end"], b64(b"user0"));
        assert_eq!(operations[2]["begin"], b64(b"user/5"));
        assert_eq!(operations[2]["end"], b64(b"user/6"));
        let view = BatchView::parse(&bytes).unwrap();
        assert!(prefix.touches(&view.transactions().next().unwrap()));
        assert!(!Prefix::new(b"zz".to_vec()).touches(&view.transactions().next().unwrap()));
    }

    #[test]
    fn checkpoint_and_error_events() {
        let mut out = Vec::new();
        write_checkpoint(&mut out, 10, 9, "l");
        write_error(&mut out, "version_too_old", "history before 5 is gone", Some(5));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: checkpoint\ndata: {\"committed_version\":10,\"durable_version\":9,\"leader_id\":\"l\"}\n\n\
             event: error\ndata: {\"error\":\"version_too_old\",\"message\":\"history before 5 is gone\",\
             \"oldest_version\":5}\n\n"
        );
    }
}
