//! The batch object format: encoding committed transactions into one object
//! and verifying and decoding it back. Pure: no IO.
//!
//! Layout (format version 1, all integers little-endian):
//!
//! ```text
//! header   magic "STOATLOG" (8) | format_version u32 | transaction_count u32
//!          | first_version u64 | last_version u64 | prev_version u64
//!          | leader_id_len u16 | leader_id (UTF-8)
//! records  transaction_count times:
//!          record_len u32 (bytes after this field) | version u64 | timestamp_ms u64
//!          | request_id_len u8 | request_id (ASCII) | operation_count u32
//!          | operations: tag u8, then per tag
//!              1 write:        key_len u32 | key | value_len u32 | value
//!              2 delete:       key_len u32 | key
//!              3 range_delete: begin_len u32 | begin | end_len u32 | end
//! trailer  crc32c u32 of every byte before it
//! ```
//!
//! Invariants of a valid batch, checked by [`BatchView::parse`] on every read
//! and (debug builds) by [`BatchEncoder::finish`] before every write:
//! the checksum matches; magic and version are known; there is at least one
//! transaction; versions strictly increase, the first is `first_version` and
//! greater than `prev_version`, the last is `last_version`; every length stays
//! inside the object and every record is exactly `record_len` long; request
//! ids are 1-128 bytes of `[A-Za-z0-9._:-]`; a range delete has `begin < end`.
//! Decoding never panics and never allocates from a length it has not first
//! checked against the bytes present.

use crate::commit::transaction::{LoggedTransaction, Operation, OperationRef};

pub const MAGIC: [u8; 8] = *b"STOATLOG";
pub const FORMAT_VERSION: u32 = 1;
/// Longest leader id a batch can carry, in bytes.
pub const LEADER_ID_BYTES_MAX: usize = 1024;
/// Longest request id, in bytes (the API's limit).
pub const REQUEST_ID_BYTES_MAX: usize = 128;

const FIXED_HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8 + 8 + 2;
const CHECKSUM_BYTES: usize = 4;
const TRANSACTION_COUNT_OFFSET: usize = 12;
const LAST_VERSION_OFFSET: usize = 24;
/// The smallest record: length, version, timestamp, a 1-byte request id and
/// an operation count.
const RECORD_BYTES_MIN: usize = 4 + 8 + 8 + 1 + 1 + 4;

const TAG_WRITE: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_RANGE_DELETE: u8 = 3;

/// Why bytes are not a valid batch. Offsets are byte offsets in the object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("object of {length_bytes} bytes is too short for a batch")]
    TooShort { length_bytes: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("bad magic")]
    BadMagic,
    #[error("unknown format version {0}")]
    UnknownVersion(u32),
    #[error("field at offset {offset} runs past the end of the batch")]
    Truncated { offset: usize },
    #[error("invalid {field} at offset {offset}")]
    InvalidField { field: &'static str, offset: usize },
    #[error("version {version} at offset {offset} does not follow {previous}")]
    VersionOutOfOrder { version: u64, previous: u64, offset: usize },
    #[error("header says {field} = {header}, the records say {records}")]
    HeaderMismatch { field: &'static str, header: u64, records: u64 },
    #[error("{extra_bytes} bytes after the last record")]
    TrailingBytes { extra_bytes: usize },
}

/// Bytes at the start of a batch that hold its versions (see
/// [`BatchVersions::peek`]).
pub const VERSIONS_PREFIX_BYTES: u64 = 40;

/// The versions a batch's header claims, read from its first
/// [`VERSIONS_PREFIX_BYTES`] without the rest of the object. Unverified (the
/// checksum covers the whole object): use it only to decide *not* to act,
/// e.g. to stop truncation at a batch that does not chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchVersions {
    pub first_version: u64,
    pub last_version: u64,
    pub prev_version: u64,
}

impl BatchVersions {
    /// Reads magic, format version and the three versions; checks that they
    /// are ordered (`prev < first <= last`).
    pub fn peek(bytes: &[u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(bytes, 0);
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let format_version = reader.u32()?;
        if format_version != FORMAT_VERSION {
            return Err(FormatError::UnknownVersion(format_version));
        }
        let _transaction_count = reader.u32()?;
        let versions =
            BatchVersions { first_version: reader.u64()?, last_version: reader.u64()?, prev_version: reader.u64()? };
        if versions.prev_version >= versions.first_version || versions.first_version > versions.last_version {
            return Err(FormatError::InvalidField { field: "versions", offset: 16 });
        }
        Ok(versions)
    }
}

/// A finished batch, ready to be written under [`crate::log::names::batch_name`]
/// of its `first_version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedBatch {
    pub first_version: u64,
    pub last_version: u64,
    pub prev_version: u64,
    pub transaction_count: u32,
    /// Shared: the persister writes them, subscribers read them.
    pub bytes: crate::log::store::ObjectBytes,
}

/// Appends committed transactions, from borrowed data, straight into the
/// object's bytes: one copy of each key and value, no allocation per
/// operation.
#[derive(Debug)]
pub struct BatchEncoder {
    bytes: Vec<u8>,
    prev_version: u64,
    first_version: u64,
    last_version: u64,
    transaction_count: u32,
}

impl BatchEncoder {
    /// # Panics
    /// If `leader_id` is longer than [`LEADER_ID_BYTES_MAX`]: leader ids are
    /// made by the server, so that is a bug.
    pub fn new(leader_id: &str, prev_version: u64) -> Self {
        Self::with_capacity(leader_id, prev_version, 4096)
    }

    /// Like [`BatchEncoder::new`], reserving `capacity_bytes` up front.
    pub fn with_capacity(leader_id: &str, prev_version: u64, capacity_bytes: usize) -> Self {
        assert!(leader_id.len() <= LEADER_ID_BYTES_MAX, "leader id too long");
        let mut bytes = Vec::with_capacity(capacity_bytes.max(FIXED_HEADER_BYTES + leader_id.len()));
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes()); // transaction_count, patched
        bytes.extend_from_slice(&0u64.to_le_bytes()); // first_version, patched
        bytes.extend_from_slice(&0u64.to_le_bytes()); // last_version, patched
        bytes.extend_from_slice(&prev_version.to_le_bytes());
        bytes.extend_from_slice(&(leader_id.len() as u16).to_le_bytes());
        bytes.extend_from_slice(leader_id.as_bytes());
        BatchEncoder { bytes, prev_version, first_version: 0, last_version: prev_version, transaction_count: 0 }
    }

    /// Appends one committed transaction.
    ///
    /// # Panics
    /// If `version` does not follow the previous one (or `prev_version`), or
    /// `request_id` is not 1-128 bytes, or a key or value is 4 GiB or more:
    /// the sequencer guarantees all three.
    pub fn push<'a>(
        &mut self,
        version: u64,
        request_id: &str,
        timestamp_ms: u64,
        operations: impl IntoIterator<Item = OperationRef<'a>>,
    ) {
        assert!(version > self.last_version, "versions must strictly increase");
        assert!((1..=REQUEST_ID_BYTES_MAX).contains(&request_id.len()), "request id length");
        let record_start = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_le_bytes()); // record_len, patched
        self.bytes.extend_from_slice(&version.to_le_bytes());
        self.bytes.extend_from_slice(&timestamp_ms.to_le_bytes());
        self.bytes.push(request_id.len() as u8);
        self.bytes.extend_from_slice(request_id.as_bytes());
        let count_offset = self.bytes.len();
        self.bytes.extend_from_slice(&0u32.to_le_bytes()); // operation_count, patched
        let mut operation_count: u32 = 0;
        for operation in operations {
            self.push_operation(operation);
            operation_count = operation_count.checked_add(1).expect("operation count fits u32");
        }
        patch_u32(&mut self.bytes, count_offset, operation_count);
        let record_len = u32::try_from(self.bytes.len() - record_start - 4).expect("record under 4 GiB");
        patch_u32(&mut self.bytes, record_start, record_len);
        if self.transaction_count == 0 {
            self.first_version = version;
        }
        self.last_version = version;
        self.transaction_count += 1;
    }

    fn push_operation(&mut self, operation: OperationRef<'_>) {
        match operation {
            OperationRef::Write { key, value } => {
                self.bytes.push(TAG_WRITE);
                self.push_bytes(key);
                self.push_bytes(value);
            }
            OperationRef::Delete { key } => {
                self.bytes.push(TAG_DELETE);
                self.push_bytes(key);
            }
            OperationRef::RangeDelete { begin, end } => {
                self.bytes.push(TAG_RANGE_DELETE);
                self.push_bytes(begin);
                self.push_bytes(end);
            }
        }
    }

    fn push_bytes(&mut self, field: &[u8]) {
        let length = u32::try_from(field.len()).expect("field under 4 GiB");
        self.bytes.extend_from_slice(&length.to_le_bytes());
        self.bytes.extend_from_slice(field);
    }

    pub fn transaction_count(&self) -> u32 {
        self.transaction_count
    }

    pub fn is_empty(&self) -> bool {
        self.transaction_count == 0
    }

    /// Bytes so far, without the 4-byte checksum `finish` appends.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The version of the last transaction pushed (`prev_version` if none).
    pub fn last_version(&self) -> u64 {
        self.last_version
    }

    /// Patches the header, appends the checksum and, in debug builds, checks
    /// the result the same way a reader will.
    ///
    /// # Panics
    /// If no transaction was pushed.
    pub fn finish(mut self) -> EncodedBatch {
        assert!(self.transaction_count > 0, "a batch holds at least one transaction");
        patch_u32(&mut self.bytes, TRANSACTION_COUNT_OFFSET, self.transaction_count);
        patch_u64(&mut self.bytes, TRANSACTION_COUNT_OFFSET + 4, self.first_version);
        patch_u64(&mut self.bytes, LAST_VERSION_OFFSET, self.last_version);
        let checksum = crc32c::crc32c(&self.bytes);
        self.bytes.extend_from_slice(&checksum.to_le_bytes());
        debug_assert_eq!(BatchView::parse(&self.bytes).map(|view| view.last_version), Ok(self.last_version));
        EncodedBatch {
            first_version: self.first_version,
            last_version: self.last_version,
            prev_version: self.prev_version,
            transaction_count: self.transaction_count,
            bytes: std::sync::Arc::new(self.bytes),
        }
    }
}

fn patch_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn patch_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// A verified batch, borrowing the object's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchView<'a> {
    pub leader_id: &'a str,
    pub first_version: u64,
    pub last_version: u64,
    pub prev_version: u64,
    pub transaction_count: u32,
    /// The records, without header and checksum.
    records: &'a [u8],
    /// Offset of `records` in the object, for error messages.
    records_offset: usize,
}

/// One transaction of a verified batch, borrowing the object's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransactionView<'a> {
    pub version: u64,
    pub request_id: &'a str,
    pub timestamp_ms: u64,
    pub operation_count: u32,
    operations: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// Verifies every invariant of the format (see the module docs).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        if bytes.len() < FIXED_HEADER_BYTES + CHECKSUM_BYTES {
            return Err(FormatError::TooShort { length_bytes: bytes.len() });
        }
        let (body, stored) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
        let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(FormatError::ChecksumMismatch { stored, computed });
        }
        let view = Self::parse_header(body)?;
        view.verify_records()?;
        Ok(view)
    }

    fn parse_header(body: &'a [u8]) -> Result<Self, FormatError> {
        let mut reader = Reader::new(body, 0);
        if reader.take(MAGIC.len())? != MAGIC {
            return Err(FormatError::BadMagic);
        }
        let format_version = reader.u32()?;
        if format_version != FORMAT_VERSION {
            return Err(FormatError::UnknownVersion(format_version));
        }
        let count_offset = reader.offset();
        let transaction_count = reader.u32()?;
        if transaction_count == 0 {
            return Err(FormatError::InvalidField { field: "transaction_count", offset: count_offset });
        }
        let first_version = reader.u64()?;
        let last_version = reader.u64()?;
        let prev_version = reader.u64()?;
        let leader_offset = reader.offset();
        let leader_len = usize::from(reader.u16()?);
        let leader_id = std::str::from_utf8(reader.take(leader_len)?)
            .map_err(|_| FormatError::InvalidField { field: "leader_id", offset: leader_offset })?;
        if leader_len > LEADER_ID_BYTES_MAX {
            return Err(FormatError::InvalidField { field: "leader_id", offset: leader_offset });
        }
        Ok(BatchView {
            leader_id,
            first_version,
            last_version,
            prev_version,
            transaction_count,
            records: reader.rest(),
            records_offset: reader.offset(),
        })
    }

    /// Walks every record and operation once, checking the invariants that
    /// span records; the iterators below can then not fail.
    fn verify_records(&self) -> Result<(), FormatError> {
        let mut reader = Reader::new(self.records, self.records_offset);
        let mut previous = self.prev_version;
        let mut count: u64 = 0;
        while !reader.is_empty() {
            let offset = reader.offset();
            let transaction = read_transaction(&mut reader)?;
            if transaction.version <= previous {
                return Err(FormatError::VersionOutOfOrder { version: transaction.version, previous, offset });
            }
            if count == 0 && transaction.version != self.first_version {
                return Err(FormatError::HeaderMismatch {
                    field: "first_version",
                    header: self.first_version,
                    records: transaction.version,
                });
            }
            verify_operations(&transaction, offset)?;
            previous = transaction.version;
            count += 1;
        }
        if count != u64::from(self.transaction_count) {
            return Err(FormatError::HeaderMismatch {
                field: "transaction_count",
                header: self.transaction_count.into(),
                records: count,
            });
        }
        if previous != self.last_version {
            return Err(FormatError::HeaderMismatch {
                field: "last_version",
                header: self.last_version,
                records: previous,
            });
        }
        Ok(())
    }

    /// The transactions in version order.
    pub fn transactions(&self) -> Transactions<'a> {
        Transactions { reader: Reader::new(self.records, self.records_offset) }
    }

    /// Owned copies of every transaction.
    pub fn to_owned_transactions(&self) -> Vec<LoggedTransaction> {
        let mut owned = Vec::with_capacity(self.transaction_count as usize);
        owned.extend(self.transactions().map(|transaction| transaction.to_owned()));
        owned
    }
}

impl<'a> TransactionView<'a> {
    pub fn operations(&self) -> Operations<'a> {
        Operations { reader: Reader::new(self.operations, 0) }
    }

    pub fn to_owned(&self) -> LoggedTransaction {
        let mut operations: Vec<Operation> = Vec::with_capacity(self.operation_count as usize);
        operations.extend(self.operations().map(OperationRef::to_owned));
        LoggedTransaction {
            version: self.version,
            request_id: self.request_id.to_owned(),
            timestamp_ms: self.timestamp_ms,
            operations,
        }
    }
}

/// A decoded batch with owned transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedBatch {
    pub leader_id: String,
    pub first_version: u64,
    pub last_version: u64,
    pub prev_version: u64,
    pub transactions: Vec<LoggedTransaction>,
}

/// Verifies `bytes` and returns owned copies of everything in them.
pub fn decode_batch(bytes: &[u8]) -> Result<DecodedBatch, FormatError> {
    let view = BatchView::parse(bytes)?;
    Ok(DecodedBatch {
        leader_id: view.leader_id.to_owned(),
        first_version: view.first_version,
        last_version: view.last_version,
        prev_version: view.prev_version,
        transactions: view.to_owned_transactions(),
    })
}

/// Iterator over the transactions of a verified batch.
#[derive(Clone, Debug)]
pub struct Transactions<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for Transactions<'a> {
    type Item = TransactionView<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.is_empty() {
            return None;
        }
        let transaction = read_transaction(&mut self.reader);
        debug_assert!(transaction.is_ok(), "records were verified");
        transaction.ok()
    }
}

/// Iterator over the operations of a verified transaction.
#[derive(Clone, Debug)]
pub struct Operations<'a> {
    reader: Reader<'a>,
}

impl<'a> Iterator for Operations<'a> {
    type Item = OperationRef<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.is_empty() {
            return None;
        }
        let operation = read_operation(&mut self.reader);
        debug_assert!(operation.is_ok(), "operations were verified");
        operation.ok()
    }
}

fn read_transaction<'a>(reader: &mut Reader<'a>) -> Result<TransactionView<'a>, FormatError> {
    let record_offset = reader.offset();
    let record_len = reader.u32()? as usize;
    if record_len < RECORD_BYTES_MIN - 4 {
        return Err(FormatError::InvalidField { field: "record_len", offset: record_offset });
    }
    let mut record = Reader::new(reader.take(record_len)?, record_offset + 4);
    let version = record.u64()?;
    let timestamp_ms = record.u64()?;
    let id_offset = record.offset();
    let id_len = usize::from(record.u8()?);
    let request_id = parse_request_id(record.take(id_len)?)
        .ok_or(FormatError::InvalidField { field: "request_id", offset: id_offset })?;
    let operation_count = record.u32()?;
    Ok(TransactionView { version, request_id, timestamp_ms, operation_count, operations: record.rest() })
}

fn parse_request_id(bytes: &[u8]) -> Option<&str> {
    let valid_byte = |byte: &u8| byte.is_ascii_alphanumeric() || b"._:-".contains(byte);
    let valid = (1..=REQUEST_ID_BYTES_MAX).contains(&bytes.len()) && bytes.iter().all(valid_byte);
    // All-ASCII bytes are valid UTF-8, so this never fails once `valid`.
    valid.then(|| std::str::from_utf8(bytes).ok()).flatten()
}

/// Checks that the operations fill the record exactly and number
/// `operation_count`.
fn verify_operations(transaction: &TransactionView<'_>, record_offset: usize) -> Result<(), FormatError> {
    let mut reader = Reader::new(transaction.operations, record_offset);
    let mut count: u64 = 0;
    while !reader.is_empty() {
        read_operation(&mut reader)?;
        count += 1;
    }
    if count != u64::from(transaction.operation_count) {
        return Err(FormatError::HeaderMismatch {
            field: "operation_count",
            header: transaction.operation_count.into(),
            records: count,
        });
    }
    Ok(())
}

fn read_operation<'a>(reader: &mut Reader<'a>) -> Result<OperationRef<'a>, FormatError> {
    let offset = reader.offset();
    match reader.u8()? {
        TAG_WRITE => Ok(OperationRef::Write { key: reader.sized()?, value: reader.sized()? }),
        TAG_DELETE => Ok(OperationRef::Delete { key: reader.sized()? }),
        TAG_RANGE_DELETE => {
            let begin = reader.sized()?;
            let end = reader.sized()?;
            if begin >= end {
                return Err(FormatError::InvalidField { field: "range_delete bounds", offset });
            }
            Ok(OperationRef::RangeDelete { begin, end })
        }
        _ => Err(FormatError::InvalidField { field: "operation tag", offset }),
    }
}

/// A bounds-checked cursor; every read either succeeds or says where the
/// bytes ran out.
#[derive(Clone, Debug)]
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Offset of `bytes[0]` in the whole object.
    base_offset: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], base_offset: usize) -> Self {
        Reader { bytes, position: 0, base_offset }
    }

    fn offset(&self) -> usize {
        self.base_offset + self.position
    }

    fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    fn take(&mut self, length: usize) -> Result<&'a [u8], FormatError> {
        let end = self.position.checked_add(length).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(FormatError::Truncated { offset: self.offset() })?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], FormatError> {
        let mut array = [0u8; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, FormatError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, FormatError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A `u32` length followed by that many bytes.
    fn sized(&mut self) -> Result<&'a [u8], FormatError> {
        let length = self.u32()? as usize;
        self.take(length)
    }
}

#[cfg(test)]
mod tests;
