//! The object-store interface: a small, S3-shaped set of operations whose
//! completions arrive asynchronously on a channel the caller owns.
//!
//! A caller submits an [`ObjectOp`] with an [`OpId`] of its choosing and a
//! [`Sender`] for the [`Completion`]; `submit` never blocks and never runs the
//! operation on the caller's thread (unless it can fail at once, e.g. an
//! invalid name or a full queue, in which case the failure is sent as a
//! completion like any other). Many operations can be in flight from one
//! thread. [`Blocking`] is a small helper for recovery and tests built on top.
//!
//! Invariants every backend keeps:
//! - every submitted operation gets exactly one completion, carrying the
//!   caller's `OpId`;
//! - `PutIfAbsent` is atomic and exclusive: of any number of puts of one name,
//!   across threads and processes, at most one succeeds and a reader sees
//!   either no object or the whole object;
//! - `Put` is atomic: a reader sees the previous object (or none) or the
//!   whole new one, never a mix; it is never used for log batches, whose
//!   exclusivity is the fencing mechanism (only for small metadata such as
//!   retention policies, where the last writer wins);
//! - `List` returns names in byte order, only names `> start_after`;
//! - errors are typed, so that retry and fencing decisions are made on
//!   [`StoreError`] variants, never on message strings.

use std::ops::Range;
use std::sync::Arc;

use crossbeam_channel::Sender;

/// Chosen by the caller; unique among the caller's operations in flight on
/// one completion channel.
pub type OpId = u64;

/// The bytes of an object being written, shared so that a retry or a
/// read-back comparison needs no copy.
pub type ObjectBytes = Arc<Vec<u8>>;

/// One operation on the store. Names are UTF-8, non-empty, at most
/// [`NAME_BYTES_MAX`] bytes; `/` separates segments, no segment is empty, `.`
/// or `..`, or starts with `.` (reserved for a backend's own files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectOp {
    /// Creates `name` only if no object has that name.
    PutIfAbsent { name: String, bytes: ObjectBytes },
    /// Creates `name` or replaces the object it names, atomically.
    Put { name: String, bytes: ObjectBytes },
    /// Reads `name`, or only the bytes of `range` (clamped to the object's
    /// size; empty when it starts at or after the end).
    Get { name: String, range: Option<Range<u64>> },
    /// Names starting with `prefix`, `> start_after`, in byte order, at most
    /// `limit` of them (`limit >= 1`), with their sizes.
    List { prefix: String, start_after: Option<String>, limit: usize },
    /// Deletes every name given; a name that does not exist is not an error.
    Delete { names: Vec<String> },
}

/// What a successful operation returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpOutput {
    Created,
    Bytes(Vec<u8>),
    Listed(ListPage),
    Deleted,
}

/// One page of a listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub names: Vec<String>,
    /// The size in bytes of each object of `names`, in the same order.
    pub sizes: Vec<u64>,
    /// True when more names may follow the last one (list again with
    /// `start_after` set to it).
    pub truncated: bool,
}

/// The answer to one submitted operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub op_id: OpId,
    pub result: Result<OpOutput, StoreError>,
}

/// Longest object name accepted, in bytes (S3's limit).
pub const NAME_BYTES_MAX: usize = 1024;

/// Why an operation failed. The variant decides what the caller does.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("object {name:?} not found")]
    NotFound { name: String },
    /// Put-if-absent found the name taken.
    #[error("object {name:?} already exists")]
    AlreadyExists { name: String },
    /// May succeed if tried again (timeouts, throttling, full queues, IO).
    #[error("transient storage error: {message}")]
    Transient { message: String },
    /// Will fail the same way if tried again (invalid names, permissions).
    #[error("permanent storage error: {message}")]
    Permanent { message: String },
}

impl StoreError {
    pub fn transient(message: impl Into<String>) -> Self {
        StoreError::Transient { message: message.into() }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        StoreError::Permanent { message: message.into() }
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }
}

/// An object store. Object-safe: servers hold `Arc<dyn ObjectStore>`.
pub trait ObjectStore: Send + Sync {
    /// Starts `op`; its [`Completion`] (with `op_id`) is sent on `reply`.
    /// Never blocks. A disconnected `reply` drops the completion.
    fn submit(&self, op_id: OpId, op: ObjectOp, reply: &Sender<Completion>);
}

/// Checks a name against the rules of [`ObjectOp`]; every backend applies
/// the same rules so that names valid on disk are valid on S3 and back.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let invalid = |why: &str| Err(StoreError::permanent(format!("invalid object name {name:?}: {why}")));
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > NAME_BYTES_MAX {
        return invalid("longer than 1024 bytes");
    }
    if name.contains('\0') {
        return invalid("contains NUL");
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return invalid("empty segment");
        }
        if segment.starts_with('.') {
            return invalid("a segment starts with '.'");
        }
    }
    Ok(())
}

/// Runs operations one at a time, waiting for each: for recovery, tools and
/// tests. Not for the commit path, which keeps many operations in flight.
#[derive(Clone, Copy)]
pub struct Blocking<'a> {
    store: &'a dyn ObjectStore,
}

impl std::fmt::Debug for Blocking<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Blocking")
    }
}

impl<'a> Blocking<'a> {
    pub fn new(store: &'a dyn ObjectStore) -> Self {
        Blocking { store }
    }

    /// Submits `op` and waits for its completion.
    pub fn run(&self, op: ObjectOp) -> Result<OpOutput, StoreError> {
        let (reply, completions) = crossbeam_channel::bounded(1);
        self.store.submit(0, op, &reply);
        drop(reply);
        match completions.recv() {
            Ok(completion) => completion.result,
            Err(_) => Err(StoreError::transient("the store dropped an operation")),
        }
    }

    pub fn put_if_absent(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let op = ObjectOp::PutIfAbsent { name: name.to_owned(), bytes: Arc::new(bytes) };
        self.run(op).and_then(|output| expect_output(output, "put", |o| matches!(o, OpOutput::Created).then_some(())))
    }

    /// Creates or replaces `name` (see [`ObjectOp::Put`]).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let op = ObjectOp::Put { name: name.to_owned(), bytes: Arc::new(bytes) };
        self.run(op).and_then(|output| expect_output(output, "put", |o| matches!(o, OpOutput::Created).then_some(())))
    }

    pub fn get(&self, name: &str, range: Option<Range<u64>>) -> Result<Vec<u8>, StoreError> {
        let op = ObjectOp::Get { name: name.to_owned(), range };
        self.run(op).and_then(|output| {
            expect_output(output, "get", |o| match o {
                OpOutput::Bytes(bytes) => Some(bytes),
                _ => None,
            })
        })
    }

    /// The bytes of `range` (the whole object when `None`) of every name,
    /// in order: all submitted at once, so a store that keeps operations in
    /// flight (S3) answers in about one round trip instead of one each.
    pub fn get_many(&self, names: &[String], range: Option<Range<u64>>) -> Vec<Result<Vec<u8>, StoreError>> {
        let (reply, completions) = crossbeam_channel::unbounded();
        for (index, name) in names.iter().enumerate() {
            let op = ObjectOp::Get { name: name.clone(), range: range.clone() };
            self.store.submit(index as OpId, op, &reply);
        }
        drop(reply);
        let mut results: Vec<Option<Result<Vec<u8>, StoreError>>> = names.iter().map(|_| None).collect();
        for _ in 0..names.len() {
            let Ok(completion) = completions.recv() else { break };
            let result = completion.result.and_then(|output| {
                expect_output(output, "get", |o| match o {
                    OpOutput::Bytes(bytes) => Some(bytes),
                    _ => None,
                })
            });
            if let Some(slot) = usize::try_from(completion.op_id).ok().and_then(|index| results.get_mut(index)) {
                *slot = Some(result);
            }
        }
        results
            .into_iter()
            .map(|result| result.unwrap_or_else(|| Err(StoreError::transient("the store dropped an operation"))))
            .collect()
    }

    pub fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage, StoreError> {
        let op = ObjectOp::List { prefix: prefix.to_owned(), start_after: start_after.map(str::to_owned), limit };
        self.run(op).and_then(|output| {
            expect_output(output, "list", |o| match o {
                OpOutput::Listed(page) => Some(page),
                _ => None,
            })
        })
    }

    /// Every name under `prefix` after `start_after`, paging `page_size` at a
    /// time.
    pub fn list_all(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        page_size: usize,
    ) -> Result<Vec<String>, StoreError> {
        let sized = self.list_all_sized(prefix, start_after, page_size)?;
        Ok(sized.into_iter().map(|(name, _)| name).collect())
    }

    /// Like [`Blocking::list_all`], with each object's size in bytes.
    pub fn list_all_sized(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        page_size: usize,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let mut objects: Vec<(String, u64)> = Vec::new();
        let mut cursor = start_after.map(str::to_owned);
        loop {
            let page = self.list(prefix, cursor.as_deref(), page_size)?;
            let truncated = page.truncated && !page.names.is_empty();
            let sizes = page.sizes.into_iter().chain(std::iter::repeat(0));
            objects.extend(page.names.into_iter().zip(sizes));
            if !truncated {
                return Ok(objects);
            }
            cursor = objects.last().map(|(name, _)| name.clone());
        }
    }

    pub fn delete(&self, names: Vec<String>) -> Result<(), StoreError> {
        self.run(ObjectOp::Delete { names })
            .and_then(|output| expect_output(output, "delete", |o| matches!(o, OpOutput::Deleted).then_some(())))
    }
}

/// A backend that answers an operation with the wrong kind of output is a
/// bug in the backend, reported as a permanent error rather than a panic.
fn expect_output<T>(
    output: OpOutput,
    operation: &str,
    pick: impl FnOnce(OpOutput) -> Option<T>,
) -> Result<T, StoreError> {
    pick(output)
        .ok_or_else(|| StoreError::permanent(format!("the store answered a {operation} with another kind of output")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        for good in ["a", "log/00000000000000000042.batch", "a/b/c", "x.y-z_"] {
            assert_eq!(validate_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(NAME_BYTES_MAX + 1);
        for bad in ["", "/a", "a/", "a//b", ".tmp", "a/.b", "a/../b", "a\0b", long.as_str()] {
            assert!(matches!(validate_name(bad), Err(StoreError::Permanent { .. })), "{bad}");
        }
    }
}
