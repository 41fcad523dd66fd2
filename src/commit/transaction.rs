//! The transaction types shared by the commit path, the log and subscribers.
//!
//! Keys and values are raw bytes (base64 exists only on the wire). A
//! transaction's `prev_version` is not stored in it: it is the version of the
//! transaction before it in the log, known from its batch.

/// One operation of a committed transaction, owning its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Operation {
    Write {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Deletes every key in `[begin, end)`; `begin < end`.
    RangeDelete {
        begin: Vec<u8>,
        end: Vec<u8>,
    },
}

/// A borrowed view of an operation: from a request's arena when a commit is
/// decided, or from a batch object when it is read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationRef<'a> {
    Write { key: &'a [u8], value: &'a [u8] },
    Delete { key: &'a [u8] },
    RangeDelete { begin: &'a [u8], end: &'a [u8] },
}

impl Operation {
    pub fn as_ref(&self) -> OperationRef<'_> {
        match self {
            Operation::Write { key, value } => OperationRef::Write { key, value },
            Operation::Delete { key } => OperationRef::Delete { key },
            Operation::RangeDelete { begin, end } => OperationRef::RangeDelete { begin, end },
        }
    }
}

impl OperationRef<'_> {
    pub fn to_owned(self) -> Operation {
        match self {
            OperationRef::Write { key, value } => Operation::Write { key: key.to_vec(), value: value.to_vec() },
            OperationRef::Delete { key } => Operation::Delete { key: key.to_vec() },
            OperationRef::RangeDelete { begin, end } => {
                Operation::RangeDelete { begin: begin.to_vec(), end: end.to_vec() }
            }
        }
    }
}

/// A committed transaction as it is logged and streamed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedTransaction {
    pub version: u64,
    /// 1-128 characters of `[A-Za-z0-9._:-]`.
    pub request_id: String,
    /// Milliseconds since the Unix epoch when the leader committed it.
    pub timestamp_ms: u64,
    pub operations: Vec<Operation>,
}
