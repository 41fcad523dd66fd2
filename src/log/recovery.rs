//! Recovery at start: the state of the log's tail, found by listing object
//! names and reading only the newest few batches.
//!
//! Invariants:
//! - the whole log is never read: one listing (paged) plus reads of the
//!   newest batches, as many as the chain check and the recent request ids
//!   need;
//! - every batch read is verified (checksum, format, its name) before use;
//!   damage is a typed [`RecoveryError`], never a panic;
//! - the recovered tail is the newest batch that chains (`prev_version` equal
//!   to the previous batch's last version) to the batches before it. Newer
//!   batches behind a hole, written by a crashed leader whose earlier write
//!   never landed, were never reported durable: they are returned as
//!   `orphaned_objects`, never as part of the log.

use super::format::{BatchView, FormatError};
use super::names::{batch_name, parse_batch_name, LOG_PREFIX};
use super::store::{Blocking, ObjectStore, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How many of the newest transactions' request ids to return.
    pub recent_transactions: usize,
    /// Names asked for per listing request.
    pub list_page_size: usize,
    /// How many of the newest batches to check for a broken chain; at least
    /// the persister's `max_in_flight`, since a crashed leader can leave that
    /// many batches behind a hole. Each is one read at start, so keep it
    /// small on S3.
    pub chain_check_objects: usize,
    /// A version known to be older than the tail batch's first version (for
    /// example a saved hint): listing starts after its name. Batches before
    /// it are neither chain-checked nor read for request ids.
    pub start_after_version: Option<u64>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            recent_transactions: 10_000,
            list_page_size: 1000,
            chain_check_objects: 16,
            start_after_version: None,
        }
    }
}

/// The tail state a new leader starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredLog {
    /// First version of the oldest batch present; 0 for an empty log.
    pub oldest_version: u64,
    /// Last version of the log (the committed version, and the next batch's
    /// `prev_version`); 0 for an empty log.
    pub last_version: u64,
    pub tail: Option<TailBatch>,
    /// The newest transactions' request ids, oldest first.
    pub recent_transactions: Vec<RecentTransaction>,
    /// Batches behind a hole, oldest first: never durable, not part of the
    /// log. The caller removes them once no older leader can still fill the
    /// hole.
    pub orphaned_objects: Vec<String>,
    /// Batch objects the listing found (after `start_after_version`).
    pub objects_listed: usize,
    /// Their total size in bytes, as the listing reported it.
    pub objects_bytes: u64,
    /// Bytes of the orphaned objects (included in `objects_bytes`).
    pub orphaned_bytes: u64,
}

/// The header of the log's newest batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailBatch {
    pub name: String,
    pub leader_id: String,
    pub first_version: u64,
    pub last_version: u64,
    pub prev_version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentTransaction {
    pub version: u64,
    pub request_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("storage error during recovery: {0}")]
    Store(#[from] StoreError),
    #[error("batch {name} is corrupt: {source}")]
    Corrupt {
        name: String,
        #[source]
        source: FormatError,
    },
    #[error("batch {name} continues from version {prev_version}, not from the version its name says")]
    Misnamed { name: String, prev_version: u64 },
    #[error("batch {name} overlaps the batch before it: prev_version {prev_version}, previous last version {previous_last_version}")]
    Overlap { name: String, prev_version: u64, previous_last_version: u64 },
}

impl RecoveryError {
    /// Whether running recovery again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, RecoveryError::Store(error) if error.is_transient())
    }
}

/// One batch read during the backward walk.
struct ReadBatch {
    tail: TailBatch,
    size_bytes: u64,
    /// (version, request id), newest first, only as many as still wanted.
    recent: Vec<RecentTransaction>,
}

/// Lists the log, reads its newest batches, and returns the tail state.
pub fn recover(store: &dyn ObjectStore, config: &RecoveryConfig) -> Result<RecoveredLog, RecoveryError> {
    let blocking = Blocking::new(store);
    let page_size = config.list_page_size.max(1);
    let (mut start_versions, mut objects_bytes) =
        list_start_versions(&blocking, config.start_after_version, page_size)?;
    if start_versions.is_empty() && config.start_after_version.is_some() {
        // The hint was past the tail: fall back to the whole listing.
        (start_versions, objects_bytes) = list_start_versions(&blocking, None, page_size)?;
    }
    let oldest = match (config.start_after_version, start_versions.first()) {
        (None, first) => first.copied(),
        (Some(_), _) => oldest_start_version(&blocking, page_size)?,
    };
    let Some(oldest_version) = oldest else {
        return Ok(RecoveredLog::default());
    };
    let (valid, orphans) = walk_back(&blocking, &start_versions, config)?;
    let mut log = assemble(oldest_version, valid, orphans, start_versions.len());
    log.objects_bytes = objects_bytes;
    Ok(log)
}

fn assemble(
    oldest_version: u64,
    valid: Vec<ReadBatch>,
    orphans: Vec<ReadBatch>,
    objects_listed: usize,
) -> RecoveredLog {
    let tail = valid.first().map(|batch| batch.tail.clone());
    let mut recent_transactions: Vec<RecentTransaction> = valid.into_iter().flat_map(|batch| batch.recent).collect();
    recent_transactions.reverse();
    let orphaned_bytes = orphans.iter().map(|batch| batch.size_bytes).sum();
    let mut orphaned_objects: Vec<String> = orphans.into_iter().map(|batch| batch.tail.name).collect();
    orphaned_objects.reverse();
    RecoveredLog {
        orphaned_bytes,
        objects_bytes: 0,
        oldest_version,
        last_version: tail.as_ref().map_or(0, |tail| tail.last_version),
        tail,
        recent_transactions,
        orphaned_objects,
        objects_listed,
    }
}

/// First versions of every batch object after `start_after_version`, in
/// order, and their total size. Other names under the log prefix are skipped
/// with a warning.
fn list_start_versions(
    blocking: &Blocking<'_>,
    start_after_version: Option<u64>,
    page_size: usize,
) -> Result<(Vec<u64>, u64), StoreError> {
    let start_after = start_after_version.map(batch_name);
    let objects = blocking.list_all_sized(LOG_PREFIX, start_after.as_deref(), page_size)?;
    let mut start_versions = Vec::with_capacity(objects.len());
    let mut total_bytes = 0u64;
    for (name, size_bytes) in objects {
        match parse_batch_name(&name) {
            Some(start_version) => {
                start_versions.push(start_version);
                total_bytes = total_bytes.saturating_add(size_bytes);
            }
            None => tracing::warn!(%name, "ignoring an object in the log that is not a batch"),
        }
    }
    Ok((start_versions, total_bytes))
}

/// The first version of the oldest batch object, without listing them all.
fn oldest_start_version(blocking: &Blocking<'_>, page_size: usize) -> Result<Option<u64>, StoreError> {
    let mut start_after: Option<String> = None;
    loop {
        let page = blocking.list(LOG_PREFIX, start_after.as_deref(), page_size)?;
        if let Some(start_version) = page.names.iter().find_map(|name| parse_batch_name(name)) {
            return Ok(Some(start_version));
        }
        if !page.truncated || page.names.is_empty() {
            return Ok(None);
        }
        start_after = page.names.last().cloned();
    }
}

/// Reads batches from the newest back, checking the chain, until enough are
/// checked and enough request ids collected. Returns the valid batches and
/// the orphans, both newest first.
fn walk_back(
    blocking: &Blocking<'_>,
    start_versions: &[u64],
    config: &RecoveryConfig,
) -> Result<(Vec<ReadBatch>, Vec<ReadBatch>), RecoveryError> {
    let mut valid: Vec<ReadBatch> = Vec::new();
    let mut orphans: Vec<ReadBatch> = Vec::new();
    let mut wanted = config.recent_transactions;
    for &start_version in start_versions.iter().rev() {
        let enough_checked = valid.len() + orphans.len() >= config.chain_check_objects.max(1);
        if enough_checked && wanted == 0 {
            break;
        }
        let name = batch_name(start_version);
        let bytes = blocking.get(&name, None)?;
        let view = verified_view(&name, &bytes, start_version)?;
        if let Some(newer) = valid.last() {
            if chains_with_a_hole(&view, &newer.tail)? {
                orphans.append(&mut valid);
                wanted = config.recent_transactions;
            }
        }
        let recent = newest_request_ids(&view, wanted);
        wanted -= recent.len();
        let tail = TailBatch {
            name,
            leader_id: view.leader_id.to_owned(),
            first_version: view.first_version,
            last_version: view.last_version,
            prev_version: view.prev_version,
        };
        valid.push(ReadBatch { tail, size_bytes: bytes.len() as u64, recent });
    }
    Ok((valid, orphans))
}

/// Parses and verifies a batch and checks that its name matches it.
fn verified_view<'a>(name: &str, bytes: &'a [u8], start_version: u64) -> Result<BatchView<'a>, RecoveryError> {
    let view = BatchView::parse(bytes).map_err(|source| RecoveryError::Corrupt { name: name.to_owned(), source })?;
    if view.prev_version + 1 != start_version {
        return Err(RecoveryError::Misnamed { name: name.to_owned(), prev_version: view.prev_version });
    }
    Ok(view)
}

/// Whether a hole separates `older` from the `newer` batch after it (`Ok(false)`
/// when they chain); an overlap is an error: two writers disagree.
fn chains_with_a_hole(older: &BatchView<'_>, newer: &TailBatch) -> Result<bool, RecoveryError> {
    if older.last_version > newer.prev_version {
        return Err(RecoveryError::Overlap {
            name: newer.name.clone(),
            prev_version: newer.prev_version,
            previous_last_version: older.last_version,
        });
    }
    Ok(older.last_version < newer.prev_version)
}

/// Up to `wanted` of the batch's newest request ids, newest first.
fn newest_request_ids(view: &BatchView<'_>, wanted: usize) -> Vec<RecentTransaction> {
    let skip = (view.transaction_count as usize).saturating_sub(wanted);
    let mut recent: Vec<RecentTransaction> = view
        .transactions()
        .skip(skip)
        .map(|transaction| RecentTransaction {
            version: transaction.version,
            request_id: transaction.request_id.to_owned(),
        })
        .collect();
    recent.reverse();
    recent
}

#[cfg(test)]
mod tests;
