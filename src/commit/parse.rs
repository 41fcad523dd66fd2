//! Parsing a commit body into a fully validated [`CommitRequest`].
//!
//! The body is copied into the request's arena (simd-json rewrites its input)
//! and parsed into a tape (a flat array of nodes, reused from request to
//! request: no tree of maps is built or dropped), which is walked by hand so
//! that every error names its place: `operations[3].key: invalid base64`.
//!
//! Invariant: a `CommitRequest` that parsed is valid: base64 decoded, sizes and
//! counts within the limits, no range with `begin > end`, `read_version`
//! present wherever a precondition needs it. Nothing downstream re-checks.
//! (Checks that need the log's state, such as versions in the future, are
//! the sequencer's.)

use std::ops::Range;

use base64::Engine;
use bumpalo::Bump;
use simd_json::base::{TypedValue, ValueAsScalar, ValueIntoString};
use simd_json::tape::{Array, Object, Value};
use simd_json::{Tape, ValueType};

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
    /// Kept as text (its buffer reused) rather than a range of `bytes`: it
    /// is read several times per commit, and a range would be checked to be
    /// UTF-8 at every read.
    request_id: String,
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
        &self.request_id
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
        self.request_id.clear();
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

/// simd-json's scratch space and tape, kept by a reactor thread and reused
/// for every commit it parses (after a body over
/// `RETAINED_SCRATCH_BODY_BYTES` they are dropped, not kept at that size).
#[derive(Default)]
pub struct JsonScratch {
    buffers: simd_json::Buffers,
    /// Empty between parses (so it borrows nothing); `None` until the first.
    tape: Option<Tape<'static>>,
}

/// Parses `body` into `out`, using `arena` for the parser's copy of the
/// body and `scratch` for simd-json's working space. On error, returns the
/// message for a 400.
pub fn parse_commit(
    body: &[u8],
    arena: &Bump,
    scratch: &mut JsonScratch,
    limits: &LimitsConfig,
    out: &mut CommitRequest,
) -> Result<(), String> {
    out.clear();
    if body.is_empty() {
        return Err("body: expected a JSON object, got an empty body".into());
    }
    // The copy carries simd-json's padding, so it need not copy it again.
    let input = arena.alloc_slice_fill_copy(body.len() + simd_json::INPUT_PADDING, 0u8);
    input[..body.len()].copy_from_slice(body);
    let mut tape = scratch.tape.take().unwrap_or_else(Tape::null).reset();
    let result = simd_json::fill_tape_padded(input, body.len(), &mut scratch.buffers, &mut tape)
        .map_err(|error| format!("body: invalid JSON: {error}"))
        .and_then(|()| {
            let value = tape.as_value();
            let object =
                value.as_object().ok_or_else(|| format!("body: expected a JSON object, got {}", type_name(&value)))?;
            Parser { limits, out }.commit(&object)
        });
    if body.len() > RETAINED_SCRATCH_BODY_BYTES {
        *scratch = JsonScratch::default();
    } else {
        scratch.tape = Some(tape.reset());
    }
    result
}

/// A body longer than this leaves no scratch behind: the tape holds a node
/// (24 bytes) per JSON value, so a body of the largest size allowed would
/// otherwise keep some ten times its size per reactor for good.
const RETAINED_SCRATCH_BODY_BYTES: usize = 64 * 1024;

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
    fn commit(&mut self, object: &Object<'_, '_>) -> Result<(), String> {
        let fields = Fields::read(object, ["request_id", "leader_id", "read_version", "preconditions", "operations"]);
        fields.only(&fields.names, None)?;
        let [request_id, leader_id, read_version, preconditions, operations] = fields.values();
        self.out.read_version = optional_u64(read_version, Place::top("read_version"))?;
        self.request_id(request_id)?;
        if let Some(value) = leader_id {
            let leader_id = string(&value, Place::top("leader_id"))?;
            if leader_id.is_empty() || leader_id.len() > LEADER_ID_BYTES_MAX {
                return Err(format!("leader_id: must be 1-{LEADER_ID_BYTES_MAX} bytes"));
            }
            self.out.leader_id = Some(self.push_bytes(leader_id.as_bytes()));
        }
        let preconditions = optional_array(preconditions, "preconditions")?;
        let preconditions_len = preconditions.as_ref().map_or(0, Array::len);
        if preconditions_len > self.limits.preconditions_max {
            return Err(format!(
                "preconditions: {preconditions_len} preconditions, over the limit of {}",
                self.limits.preconditions_max
            ));
        }
        for (index, value) in preconditions.iter().flat_map(Array::iter).enumerate() {
            self.precondition(&value, index)?;
        }
        let operations = optional_array(operations, "operations")?;
        let operations_len = operations.as_ref().map_or(0, Array::len);
        if operations_len > self.limits.operations_max {
            return Err(format!(
                "operations: {operations_len} operations, over the limit of {}",
                self.limits.operations_max
            ));
        }
        for (index, value) in operations.iter().flat_map(Array::iter).enumerate() {
            self.operation(&value, index)?;
        }
        Ok(())
    }

    fn request_id(&mut self, value: Option<Value<'_, '_>>) -> Result<(), String> {
        match value {
            Some(value) => {
                let id = string(&value, Place::top("request_id"))?;
                if !is_valid_request_id(id) {
                    return Err("request_id: must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'".into());
                }
                self.out.request_id.push_str(id);
            }
            None => {
                let mut buffer = uuid::Uuid::encode_buffer();
                let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buffer);
                self.out.request_id.push_str(id);
                self.out.request_id_generated = true;
            }
        }
        Ok(())
    }

    fn precondition(&mut self, value: &Value<'_, '_>, index: usize) -> Result<(), String> {
        let place = Place::item("preconditions", index);
        let fields = Fields::read(&object(value, place)?, ["type", "key", "begin", "end", "version"]);
        let [kind, key, begin, end, version] = fields.values();
        let kind = string(&required(kind, "type", place)?, place.field("type"))?;
        let version = optional_u64(version, place.field("version"))?;
        let version = match (version, self.out.read_version) {
            (Some(version), _) | (None, Some(version)) => version,
            (None, None) => return Err(format!("{place}.version: required because read_version is absent")),
        };
        let (begin, end) = match kind {
            "point_read" => {
                fields.only(&["type", "key", "version"], Some(place))?;
                let key = self.key(&required(key, "key", place)?, place.field("key"))?;
                (key.clone(), self.push_point_end(&key))
            }
            "range_read" => {
                fields.only(&["type", "begin", "end", "version"], Some(place))?;
                self.range(begin, end, place)?
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

    fn operation(&mut self, value: &Value<'_, '_>, index: usize) -> Result<(), String> {
        let place = Place::item("operations", index);
        let fields = Fields::read(&object(value, place)?, ["type", "key", "value", "begin", "end"]);
        let [kind, key, value, begin, end] = fields.values();
        let kind = string(&required(kind, "type", place)?, place.field("type"))?;
        let span = match kind {
            "write" => {
                fields.only(&["type", "key", "value"], Some(place))?;
                let key = self.key(&required(key, "key", place)?, place.field("key"))?;
                self.push_point_end(&key);
                let value = self.value(&required(value, "value", place)?, place.field("value"))?;
                OperationSpan { kind: OperationKind::Write, first: key, second: value }
            }
            "delete" => {
                fields.only(&["type", "key"], Some(place))?;
                let key = self.key(&required(key, "key", place)?, place.field("key"))?;
                self.push_point_end(&key);
                OperationSpan { kind: OperationKind::Delete, first: key, second: 0..0 }
            }
            "range_delete" => {
                fields.only(&["type", "begin", "end"], Some(place))?;
                let (begin, end) = self.range(begin, end, place)?;
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
    fn range(
        &mut self,
        begin: Option<Value<'_, '_>>,
        end: Option<Value<'_, '_>>,
        place: Place<'_>,
    ) -> Result<(Range<usize>, Range<usize>), String> {
        let begin = self.key(&required(begin, "begin", place)?, place.field("begin"))?;
        let end = self.key(&required(end, "end", place)?, place.field("end"))?;
        if self.out.bytes[begin.clone()] > self.out.bytes[end.clone()] {
            return Err(format!("{place}: begin is after end"));
        }
        Ok((begin, end))
    }

    fn key(&mut self, value: &Value<'_, '_>, place: Place<'_>) -> Result<Range<usize>, String> {
        self.base64(value, place, self.limits.key_bytes_max)
    }

    fn value(&mut self, value: &Value<'_, '_>, place: Place<'_>) -> Result<Range<usize>, String> {
        self.base64(value, place, self.limits.value_bytes_max)
    }

    fn base64(&mut self, value: &Value<'_, '_>, place: Place<'_>, bytes_max: usize) -> Result<Range<usize>, String> {
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

/// The fields of an object that a reader looks for, found in one pass over
/// it: the first occurrence of each name, and where each was, so that the
/// field reported as unknown is the first in the body that is not allowed.
struct Fields<'t, 'i, const N: usize> {
    names: [&'static str; N],
    /// (position among the object's fields, value) of each name's first occurrence.
    found: [Option<(usize, Value<'t, 'i>)>; N],
    /// The first field whose name is not among `names`.
    other: Option<(usize, &'i str)>,
}

impl<'t, 'i, const N: usize> Fields<'t, 'i, N> {
    fn read(object: &Object<'t, 'i>, names: [&'static str; N]) -> Self {
        let mut found = [None; N];
        let mut other = None;
        for (position, (key, value)) in object.iter().enumerate() {
            match names.iter().position(|name| *name == key) {
                Some(index) => {
                    found[index].get_or_insert((position, value));
                }
                None => {
                    other.get_or_insert((position, key));
                }
            }
        }
        Fields { names, found, other }
    }

    fn values(&self) -> [Option<Value<'t, 'i>>; N] {
        self.found.map(|found| found.map(|(_, value)| value))
    }

    /// Refuses the object if any of its fields is not in `allowed`, naming
    /// the first such field.
    fn only(&self, allowed: &[&str], place: Option<Place<'_>>) -> Result<(), String> {
        let mut first = self.other;
        for (name, found) in self.names.iter().zip(&self.found) {
            if let Some((position, _)) = found {
                if !allowed.contains(name) && first.is_none_or(|(earliest, _)| *position < earliest) {
                    first = Some((*position, name));
                }
            }
        }
        match first {
            Some((_, key)) => {
                let prefix = place.map_or(String::new(), |place| format!("{place}: "));
                Err(format!("{prefix}unknown field {key:?}; expected one of {}", allowed.join(", ")))
            }
            None => Ok(()),
        }
    }
}

fn required<'t, 'i>(value: Option<Value<'t, 'i>>, field: &str, place: Place<'_>) -> Result<Value<'t, 'i>, String> {
    value.ok_or_else(|| format!("{place}.{field}: required"))
}

fn object<'t, 'i>(value: &Value<'t, 'i>, place: Place<'_>) -> Result<Object<'t, 'i>, String> {
    value.as_object().ok_or_else(|| format!("{place}: expected an object, got {}", type_name(value)))
}

fn string<'i>(value: &Value<'_, 'i>, place: Place<'_>) -> Result<&'i str, String> {
    value.into_string().ok_or_else(|| format!("{place}: expected a string, got {}", type_name(value)))
}

fn optional_u64(value: Option<Value<'_, '_>>, place: Place<'_>) -> Result<Option<u64>, String> {
    let Some(value) = value else { return Ok(None) };
    match value.value_type() {
        ValueType::U64 | ValueType::I64 if value.as_u64().is_some() => Ok(value.as_u64()),
        _ => Err(format!("{place}: expected an unsigned 64-bit integer, got {}", type_name(&value))),
    }
}

fn optional_array<'t, 'i>(value: Option<Value<'t, 'i>>, field: &str) -> Result<Option<Array<'t, 'i>>, String> {
    match value {
        None => Ok(None),
        Some(value) => match value.as_array() {
            Some(items) => Ok(Some(items)),
            None => Err(format!("{field}: expected an array, got {}", type_name(&value))),
        },
    }
}

/// How an error message names a JSON value's type (`a string`, `the number 3`).
pub(crate) fn type_name<V: TypedValue + ValueAsScalar>(value: &V) -> String {
    match value.value_type() {
        ValueType::Null => "null".into(),
        ValueType::Bool => "a boolean".into(),
        ValueType::I64 | ValueType::I128 => value.as_i64().map_or("a number".into(), |n| format!("the number {n}")),
        ValueType::U64 | ValueType::U128 => value.as_u64().map_or("a number".into(), |n| format!("the number {n}")),
        ValueType::F64 => value.as_f64().map_or("a number".into(), |n| format!("the number {n}")),
        ValueType::String => "a string".into(),
        ValueType::Array => "an array".into(),
        ValueType::Object => "an object".into(),
        _ => "an unknown value".into(),
    }
}

#[cfg(test)]
mod tests;
