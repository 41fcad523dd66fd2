//! Parsing a commit body into a fully validated [`CommitRequest`].
//!
//! The body is copied into the request's arena (simd-json rewrites its input)
//! and parsed into a borrowed JSON tree, which is walked by hand so that every
//! error names its place: `operations[3].key: invalid base64`.
//!
//! Invariant: a `CommitRequest` that parsed is valid: base64 decoded, sizes and
//! counts within the limits, no range with `begin > end`, `read_version`
//! present wherever a precondition needs it. Nothing downstream re-checks.
//! (Checks that need the log's state, such as versions in the future, are
//! the sequencer's.)

use std::borrow::Cow;
use std::ops::Range;

use base64::Engine;
use bumpalo::Bump;
use simd_json::borrowed::{Object, Value};
use simd_json::StaticNode;

use crate::commit::transaction::OperationRef;
use crate::config::LimitsConfig;

/// The longest `leader_id` accepted; real ones are UUIDs.
const LEADER_ID_BYTES_MAX: usize = 256;

/// A validated commit. Keys, values and ids live in one buffer (`bytes`);
/// the rest are ranges into it, so the request moves between threads with
/// its connection and its buffers are reused from request to request.
#[derive(Debug, Default)]
pub struct CommitRequest {
    bytes: Vec<u8>,
    request_id: Range<usize>,
    /// The client gave no request_id; one was generated.
    pub request_id_generated: bool,
    leader_id: Option<Range<usize>>,
    pub read_version: Option<u64>,
    preconditions: Vec<Precondition>,
    operations: Vec<OperationSpan>,
}

/// A precondition: nothing in `[begin, end)` was written after `version`.
#[derive(Debug, Clone)]
struct Precondition {
    begin: Range<usize>,
    end: Range<usize>,
    version: u64,
}

#[derive(Debug, Clone, Copy)]
enum OperationKind {
    Write,
    Delete,
    RangeDelete,
}

/// An operation: `first`/`second` are key and value, key, or begin and end.
#[derive(Debug, Clone)]
struct OperationSpan {
    kind: OperationKind,
    first: Range<usize>,
    second: Range<usize>,
}

/// Which field of a commit named a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionField {
    ReadVersion,
    Precondition(usize),
}

impl std::fmt::Display for VersionField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionField::ReadVersion => write!(f, "read_version"),
            VersionField::Precondition(index) => write!(f, "preconditions[{index}].version"),
        }
    }
}

/// A read range as the sequencer checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSpec<'a> {
    pub begin: &'a [u8],
    pub end: &'a [u8],
    pub version: u64,
}

impl CommitRequest {
    pub fn request_id(&self) -> &str {
        // Validated as ASCII when parsed.
        std::str::from_utf8(&self.bytes[self.request_id.clone()]).unwrap_or("")
    }

    pub fn leader_id(&self) -> Option<&str> {
        let range = self.leader_id.clone()?;
        std::str::from_utf8(&self.bytes[range]).ok()
    }

    /// The preconditions in request order (indices are the API's).
    pub fn preconditions(&self) -> impl ExactSizeIterator<Item = ReadSpec<'_>> + '_ {
        self.preconditions.iter().map(|p| ReadSpec {
            begin: &self.bytes[p.begin.clone()],
            end: &self.bytes[p.end.clone()],
            version: p.version,
        })
    }

    pub fn operations(&self) -> impl ExactSizeIterator<Item = OperationRef<'_>> + '_ {
        self.operations.iter().map(|op| {
            let (first, second) = (&self.bytes[op.first.clone()], &self.bytes[op.second.clone()]);
            match op.kind {
                OperationKind::Write => OperationRef::Write { key: first, value: second },
                OperationKind::Delete => OperationRef::Delete { key: first },
                OperationKind::RangeDelete => OperationRef::RangeDelete { begin: first, end: second },
            }
        })
    }

    /// The key ranges the operations write: a key `k` is `[k, k\0)`.
    pub fn write_ranges(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.operations.iter().map(|op| match op.kind {
            // For writes and deletes `second` holds the key followed by 0x00
            // (for writes the value follows it; see `push_point_end`).
            OperationKind::Write | OperationKind::Delete => {
                (&self.bytes[op.first.clone()], &self.bytes[point_end(&op.first)])
            }
            OperationKind::RangeDelete => (&self.bytes[op.first.clone()], &self.bytes[op.second.clone()]),
        })
    }

    /// The largest version the request names (read_version or a
    /// precondition's) and where, for the sequencer's "not in the future"
    /// check.
    pub fn newest_version_named(&self) -> Option<(VersionField, u64)> {
        let mut newest = self.read_version.map(|v| (VersionField::ReadVersion, v));
        for (index, precondition) in self.preconditions.iter().enumerate() {
            if newest.is_none_or(|(_, v)| precondition.version > v) {
                newest = Some((VersionField::Precondition(index), precondition.version));
            }
        }
        newest
    }

    fn clear(&mut self) {
        // Keep modest buffers for the next request; give big ones back.
        if self.bytes.capacity() > 64 * 1024 {
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
        if self.preconditions.capacity() > 1024 {
            self.preconditions = Vec::new();
        }
        if self.operations.capacity() > 1024 {
            self.operations = Vec::new();
        }
        self.preconditions.clear();
        self.operations.clear();
        self.request_id = 0..0;
        self.request_id_generated = false;
        self.leader_id = None;
        self.read_version = None;
    }
}

/// The range just after a key in `bytes` where the key's `\0`-terminated
/// copy ends: keys are stored as `key` immediately followed by `key\0`.
fn point_end(key: &Range<usize>) -> Range<usize> {
    key.end..key.end + key.len() + 1
}

/// Parses `body` into `out`, using `arena` for the parser's copy of the
/// body and `buffers` for simd-json's scratch space. On error, returns the
/// message for a 400.
pub fn parse_commit(
    body: &[u8],
    arena: &Bump,
    buffers: &mut simd_json::Buffers,
    limits: &LimitsConfig,
    out: &mut CommitRequest,
) -> Result<(), String> {
    out.clear();
    if body.is_empty() {
        return Err("body: expected a JSON object, got an empty body".into());
    }
    let input = arena.alloc_slice_copy(body);
    let value = simd_json::borrowed::to_value_with_buffers(input, buffers)
        .map_err(|error| format!("body: invalid JSON: {error}"))?;
    let Value::Object(object) = value else {
        return Err(format!("body: expected a JSON object, got {}", type_name(&value)));
    };
    Parser { limits, out }.commit(&object)
}

/// Where a value is in the body (`operations[3].key`), formatted only when
/// an error message names it: the success path allocates no strings.
#[derive(Clone, Copy)]
struct Place<'a> {
    name: &'a str,
    index: Option<usize>,
    field: Option<&'a str>,
}

impl<'a> Place<'a> {
    /// A top-level field.
    fn top(name: &'a str) -> Self {
        Place { name, index: None, field: None }
    }

    /// An item of a top-level array.
    fn item(name: &'a str, index: usize) -> Self {
        Place { name, index: Some(index), field: None }
    }

    /// A field of this place's object.
    fn field(self, field: &'a str) -> Self {
        Place { field: Some(field), ..self }
    }
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name)?;
        if let Some(index) = self.index {
            write!(formatter, "[{index}]")?;
        }
        if let Some(field) = self.field {
            write!(formatter, ".{field}")?;
        }
        Ok(())
    }
}

struct Parser<'l, 'o> {
    limits: &'l LimitsConfig,
    out: &'o mut CommitRequest,
}

impl Parser<'_, '_> {
    fn commit(&mut self, object: &Object<'_>) -> Result<(), String> {
        reject_unknown(object, None, &["request_id", "leader_id", "read_version", "preconditions", "operations"])?;
        self.out.read_version = optional_u64(object, "read_version", Place::top("read_version"))?;
        self.request_id(object.get("request_id"))?;
        if let Some(value) = object.get("leader_id") {
            let leader_id = string(value, Place::top("leader_id"))?;
            if leader_id.is_empty() || leader_id.len() > LEADER_ID_BYTES_MAX {
                return Err(format!("leader_id: must be 1-{LEADER_ID_BYTES_MAX} bytes"));
            }
            self.out.leader_id = Some(self.push_bytes(leader_id.as_bytes()));
        }
        let preconditions = optional_array(object, "preconditions")?;
        if preconditions.len() > self.limits.preconditions_max {
            return Err(format!(
                "preconditions: {} preconditions, over the limit of {}",
                preconditions.len(),
                self.limits.preconditions_max
            ));
        }
        for (index, value) in preconditions.iter().enumerate() {
            self.precondition(value, index)?;
        }
        let operations = optional_array(object, "operations")?;
        if operations.len() > self.limits.operations_max {
            return Err(format!(
                "operations: {} operations, over the limit of {}",
                operations.len(),
                self.limits.operations_max
            ));
        }
        for (index, value) in operations.iter().enumerate() {
            self.operation(value, index)?;
        }
        Ok(())
    }

    fn request_id(&mut self, value: Option<&Value<'_>>) -> Result<(), String> {
        match value {
            Some(value) => {
                let id = string(value, Place::top("request_id"))?;
                if !is_valid_request_id(id) {
                    return Err("request_id: must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'".into());
                }
                self.out.request_id = self.push_bytes(id.as_bytes());
            }
            None => {
                let mut buffer = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
                self.out.request_id = self.push_bytes(id.as_bytes());
                self.out.request_id_generated = true;
            }
        }
        Ok(())
    }

    fn precondition(&mut self, value: &Value<'_>, index: usize) -> Result<(), String> {
        let place = Place::item("preconditions", index);
        let object = object(value, place)?;
        let kind = string(required(object, "type", place)?, place.field("type"))?;
        let version = optional_u64(object, "version", place.field("version"))?;
        let version = match (version, self.out.read_version) {
            (Some(version), _) | (None, Some(version)) => version,
            (None, None) => return Err(format!("{place}.version: required because read_version is absent")),
        };
        let (begin, end) = match kind {
            "point_read" => {
                reject_unknown(object, Some(place), &["type", "key", "version"])?;
                let key = self.key(required(object, "key", place)?, place.field("key"))?;
                (key.clone(), self.push_point_end(&key))
            }
            "range_read" => {
                reject_unknown(object, Some(place), &["type", "begin", "end", "version"])?;
                self.range(object, place)?
            }
            other => {
                return Err(format!(
                    "{place}.type: unknown precondition type {other:?}; expected point_read or range_read"
                ));
            }
        };
        self.out.preconditions.push(Precondition { begin, end, version });
        Ok(())
    }

    fn operation(&mut self, value: &Value<'_>, index: usize) -> Result<(), String> {
        let place = Place::item("operations", index);
        let object = object(value, place)?;
        let kind = string(required(object, "type", place)?, place.field("type"))?;
        let span = match kind {
            "write" => {
                reject_unknown(object, Some(place), &["type", "key", "value"])?;
                let key = self.key(required(object, "key", place)?, place.field("key"))?;
                self.push_point_end(&key);
                let value = self.value(required(object, "value", place)?, place.field("value"))?;
                OperationSpan { kind: OperationKind::Write, first: key, second: value }
            }
            "delete" => {
                reject_unknown(object, Some(place), &["type", "key"])?;
                let key = self.key(required(object, "key", place)?, place.field("key"))?;
                self.push_point_end(&key);
                OperationSpan { kind: OperationKind::Delete, first: key, second: 0..0 }
            }
            "range_delete" => {
                reject_unknown(object, Some(place), &["type", "begin", "end"])?;
                let (begin, end) = self.range(object, place)?;
                if self.out.bytes[begin.clone()] == self.out.bytes[end.clone()] {
                    // An empty range deletes nothing: it is ignored.
                    return Ok(());
                }
                OperationSpan { kind: OperationKind::RangeDelete, first: begin, second: end }
            }
            other => {
                return Err(format!(
                    "{place}.type: unknown operation type {other:?}; expected write, delete or range_delete"
                ));
            }
        };
        self.out.operations.push(span);
        Ok(())
    }

    /// `begin` and `end` of a range object; `begin > end` is an error.
    fn range(&mut self, object: &Object<'_>, place: Place<'_>) -> Result<(Range<usize>, Range<usize>), String> {
        let begin = self.key(required(object, "begin", place)?, place.field("begin"))?;
        let end = self.key(required(object, "end", place)?, place.field("end"))?;
        if self.out.bytes[begin.clone()] > self.out.bytes[end.clone()] {
            return Err(format!("{place}: begin is after end"));
        }
        Ok((begin, end))
    }

    fn key(&mut self, value: &Value<'_>, place: Place<'_>) -> Result<Range<usize>, String> {
        self.base64(value, place, self.limits.key_bytes_max)
    }

    fn value(&mut self, value: &Value<'_>, place: Place<'_>) -> Result<Range<usize>, String> {
        self.base64(value, place, self.limits.value_bytes_max)
    }

    fn base64(&mut self, value: &Value<'_>, place: Place<'_>, bytes_max: usize) -> Result<Range<usize>, String> {
        let text = string(value, place)?;
        // Decoded size is at most 3/4 of the text: refuse before decoding.
        let decoded_max = text.len() / 4 * 3;
        if decoded_max > bytes_max + 2 {
            return Err(format!("{place}: longer than the limit of {bytes_max} bytes"));
        }
        let start = self.out.bytes.len();
        base64::engine::general_purpose::STANDARD.decode_vec(text.as_bytes(), &mut self.out.bytes).map_err(|_| {
            self.out.bytes.truncate(start);
            format!("{place}: invalid base64 (standard alphabet, with padding)")
        })?;
        let length = self.out.bytes.len() - start;
        if length > bytes_max {
            return Err(format!("{place}: {length} bytes, over the limit of {bytes_max}"));
        }
        Ok(start..self.out.bytes.len())
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.out.bytes.len();
        self.out.bytes.extend_from_slice(bytes);
        start..self.out.bytes.len()
    }

    /// Appends `key\0` right after `key` (which must be the last bytes
    /// pushed) and returns its range: the exclusive end of a point range.
    fn push_point_end(&mut self, key: &Range<usize>) -> Range<usize> {
        debug_assert_eq!(key.end, self.out.bytes.len());
        self.out.bytes.extend_from_within(key.clone());
        self.out.bytes.push(0);
        point_end(key)
    }
}

/// The query of `GET /v1/status`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    pub request_id: String,
    pub min_version: Option<u64>,
}

/// Parses `request_id=ID&min_version=V` (values may be percent-encoded).
pub fn parse_status_query(query: Option<&str>, out: &mut StatusQuery) -> Result<(), String> {
    out.request_id.clear();
    out.min_version = None;
    let mut have_request_id = false;
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(raw_value).ok_or_else(|| format!("{name}: invalid percent-encoding"))?;
        match name {
            "request_id" => {
                if !is_valid_request_id(&value) {
                    return Err("request_id: must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'".into());
                }
                out.request_id = value;
                have_request_id = true;
            }
            "min_version" => {
                let version =
                    value.parse().map_err(|_| format!("min_version: {value:?} is not an unsigned 64-bit integer"))?;
                out.min_version = Some(version);
            }
            other => return Err(format!("unknown parameter {other:?}; expected request_id, min_version")),
        }
    }
    if !have_request_id {
        return Err("request_id: required".into());
    }
    Ok(())
}

/// Decodes `%XX` escapes (and `+` as a space); `None` if malformed or not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(index + 1..index + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// 1-128 characters of `[A-Za-z0-9._:-]`.
pub fn is_valid_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn reject_unknown(object: &Object<'_>, place: Option<Place<'_>>, known: &[&str]) -> Result<(), String> {
    match object.keys().find(|key| !known.contains(&key.as_ref())) {
        Some(key) => {
            let prefix = place.map_or(String::new(), |place| format!("{place}: "));
            Err(format!("{prefix}unknown field {key:?}; expected one of {}", known.join(", ")))
        }
        None => Ok(()),
    }
}

fn required<'v, 'a>(object: &'v Object<'a>, field: &str, place: Place<'_>) -> Result<&'v Value<'a>, String> {
    object.get(field).ok_or_else(|| format!("{place}.{field}: required"))
}

fn object<'v, 'a>(value: &'v Value<'a>, place: Place<'_>) -> Result<&'v Object<'a>, String> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(format!("{place}: expected an object, got {}", type_name(other))),
    }
}

fn string<'v>(value: &'v Value<'_>, place: Place<'_>) -> Result<&'v str, String> {
    match value {
        Value::String(Cow::Borrowed(text)) => Ok(text),
        Value::String(Cow::Owned(text)) => Ok(text.as_str()),
        other => Err(format!("{place}: expected a string, got {}", type_name(other))),
    }
}

fn optional_u64(object: &Object<'_>, field: &str, place: Place<'_>) -> Result<Option<u64>, String> {
    match object.get(field) {
        None => Ok(None),
        Some(Value::Static(StaticNode::U64(n))) => Ok(Some(*n)),
        Some(Value::Static(StaticNode::I64(n))) if *n >= 0 => Ok(Some(*n as u64)),
        Some(other) => Err(format!("{place}: expected an unsigned 64-bit integer, got {}", type_name(other))),
    }
}

fn optional_array<'v, 'a>(object: &'v Object<'a>, field: &str) -> Result<&'v [Value<'a>], String> {
    match object.get(field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items.as_slice()),
        Some(other) => Err(format!("{field}: expected an array, got {}", type_name(other))),
    }
}

/// How an error message names a JSON value's type (`a string`, `the number 3`).
pub(crate) fn type_name(value: &Value<'_>) -> String {
    match value {
        Value::Static(StaticNode::Null) => "null".into(),
        Value::Static(StaticNode::Bool(_)) => "a boolean".into(),
        Value::Static(StaticNode::I64(n)) => format!("the number {n}"),
        Value::Static(StaticNode::U64(n)) => format!("the number {n}"),
        Value::Static(StaticNode::F64(n)) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests;
