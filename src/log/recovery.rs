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
//!   never landed, were never reported durable; nor were batches strictly
//!   inside another (a fenced leader's late writes, see `log::chain`). Both
//!   are returned as `orphaned_objects`, never as part of the log, and no
//!   request id is taken from them.

use super::chain;
use super::format::{BatchVersions, BatchView, FormatError, VERSIONS_PREFIX_BYTES};
use super::names::{batch_name, parse_batch_name, LOG_PREFIX};
use super::store::{Blocking, ObjectStore, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How many of the newest transactions' request ids to return.
    pub recent_transactions: usize,
    /// Names asked for per listing request.
    pub list_page_size: usize,
    /// How many of the newest batches to check for a broken chain (their
    /// headers are read); raised to at least three times
    /// `chain::BATCH_WRITES_IN_FLIGHT_MAX`, which covers the orphans a
    /// crashed leader leaves behind a hole and a fenced one inside the tail.
    /// Each is one small read at start.
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
    /// (version, request id), newest first, only as many as still wanted.
    recent: Vec<RecentTransaction>,
}

/// One listed batch object.
#[derive(Clone, Copy)]
struct Listed {
    start_version: u64,
    size_bytes: u64,
}

/// Lists the log, reads its newest batches, and returns the tail state.
pub fn recover(store: &dyn ObjectStore, config: &RecoveryConfig) -> Result<RecoveredLog, RecoveryError> {
    let blocking = Blocking::new(store);
    let page_size = config.list_page_size.max(1);
    let mut listed = list_batches(&blocking, config.start_after_version, page_size)?;
    if listed.is_empty() && config.start_after_version.is_some() {
        // The hint was past the tail: fall back to the whole listing.
        listed = list_batches(&blocking, None, page_size)?;
    }
    let oldest = match (config.start_after_version, listed.first()) {
        (None, first) => first.map(|batch| batch.start_version),
        (Some(_), _) => oldest_start_version(&blocking, page_size)?,
    };
    let Some(oldest_version) = oldest else {
        return Ok(RecoveredLog::default());
    };
    let (tail_index, orphans) = find_tail(&blocking, &listed, config)?;
    let valid = match tail_index {
        Some(index) => walk_back(&blocking, &listed, index, config.recent_transactions)?,
        None => Vec::new(),
    };
    let tail = valid.first().map(|batch| batch.tail.clone());
    let mut recent_transactions: Vec<RecentTransaction> = valid.into_iter().flat_map(|batch| batch.recent).collect();
    recent_transactions.reverse();
    Ok(RecoveredLog {
        oldest_version,
        last_version: tail.as_ref().map_or(0, |tail| tail.last_version),
        tail,
        recent_transactions,
        orphaned_bytes: orphans.iter().map(|&index| listed[index].size_bytes).sum(),
        orphaned_objects: orphans.iter().map(|&index| batch_name(listed[index].start_version)).collect(),
        objects_listed: listed.len(),
        objects_bytes: listed.iter().map(|batch| batch.size_bytes).sum(),
    })
}

/// Every batch object after `start_after_version`, in order. Other names
/// under the log prefix are skipped with a warning.
fn list_batches(
    blocking: &Blocking<'_>,
    start_after_version: Option<u64>,
    page_size: usize,
) -> Result<Vec<Listed>, StoreError> {
    let start_after = start_after_version.map(batch_name);
    let objects = blocking.list_all_sized(LOG_PREFIX, start_after.as_deref(), page_size)?;
    let mut listed = Vec::with_capacity(objects.len());
    for (name, size_bytes) in objects {
        match parse_batch_name(&name) {
            Some(start_version) => listed.push(Listed { start_version, size_bytes }),
            None => tracing::warn!(%name, "ignoring an object in the log that is not a batch"),
        }
    }
    Ok(listed)
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

/// Reads the headers of the newest batches and finds the tail: the newest
/// batch that is neither inside another nor behind a hole. Returns its
/// index in `listed` (`None` when every batch read is an orphan, which a
/// log with a first batch cannot be) and the indices of the orphans,
/// oldest first.
fn find_tail(
    blocking: &Blocking<'_>,
    listed: &[Listed],
    config: &RecoveryConfig,
) -> Result<(Option<usize>, Vec<usize>), RecoveryError> {
    let window = config.chain_check_objects.max(3 * chain::BATCH_WRITES_IN_FLIGHT_MAX);
    let window_start = listed.len().saturating_sub(window);
    let starts: Vec<u64> = listed[window_start..].iter().map(|batch| batch.start_version).collect();
    let headers: Vec<BatchVersions> = read_many_versions(blocking, &starts).into_iter().collect::<Result<_, _>>()?;
    let inside = chain::inside(&headers);
    // Below this, an orphan's container may be below the window: only the
    // newest part is classified (the tail is never further down).
    let exact_from = if window_start == 0 { 0 } else { chain::ORPHANS_PER_BATCH_MAX.min(headers.len()) };
    let mut orphans: Vec<usize> = Vec::new();
    let mut chained: Vec<usize> = Vec::new(); // newest first
    for offset in (exact_from..headers.len()).rev() {
        if inside[offset] {
            orphans.push(window_start + offset);
            continue;
        }
        let versions = headers[offset];
        if let Some(&newer) = chained.last() {
            let newer_prev = headers[newer - window_start].prev_version;
            // Not inside, so it ends before `newer` starts: equal is a chain,
            // less is a hole.
            if versions.last_version < newer_prev {
                orphans.append(&mut chained);
            }
        }
        chained.push(window_start + offset);
    }
    let tail = chained.first().copied().or_else(|| (exact_from > 0).then(|| window_start + exact_from - 1));
    orphans.sort_unstable();
    Ok((tail, orphans))
}

/// The versions of the batches named by `starts`, from their headers (read
/// all at once), each checked against its name.
fn read_many_versions(blocking: &Blocking<'_>, starts: &[u64]) -> Vec<Result<BatchVersions, RecoveryError>> {
    let names: Vec<String> = starts.iter().map(|&start| batch_name(start)).collect();
    let prefixes = blocking.get_many(&names, Some(0..VERSIONS_PREFIX_BYTES));
    names
        .into_iter()
        .zip(starts)
        .zip(prefixes)
        .map(|((name, &start_version), prefix)| {
            let versions = BatchVersions::peek(&prefix?)
                .map_err(|source| RecoveryError::Corrupt { name: name.clone(), source })?;
            if versions.prev_version + 1 != start_version {
                return Err(RecoveryError::Misnamed { name, prev_version: versions.prev_version });
            }
            Ok(versions)
        })
        .collect()
}

/// Reads the tail in full and, while request ids are still wanted, the
/// batches before it, following the chain: the batch before one that
/// continues from `p` is the newest listed batch ending at `p` (batches
/// between them are orphans inside it, and end earlier). Each batch is read
/// once, whole. Returns the batches read, newest first.
fn walk_back(
    blocking: &Blocking<'_>,
    listed: &[Listed],
    tail_index: usize,
    recent_transactions: usize,
) -> Result<Vec<ReadBatch>, RecoveryError> {
    let mut valid: Vec<ReadBatch> = Vec::new();
    let mut wanted = recent_transactions;
    let mut index = tail_index;
    let mut bytes = blocking.get(&batch_name(listed[index].start_version), None)?;
    loop {
        let start_version = listed[index].start_version;
        let name = batch_name(start_version);
        let view = verified_view(&name, &bytes, start_version)?;
        let recent = newest_request_ids(&view, wanted);
        wanted -= recent.len();
        let prev_version = view.prev_version;
        valid.push(ReadBatch {
            tail: TailBatch {
                name,
                leader_id: view.leader_id.to_owned(),
                first_version: view.first_version,
                last_version: view.last_version,
                prev_version,
            },
            recent,
        });
        if wanted == 0 {
            return Ok(valid);
        }
        match predecessor(blocking, listed, index, prev_version)? {
            Some((before, before_bytes)) => (index, bytes) = (before, before_bytes),
            None => return Ok(valid),
        }
    }
}

/// The batch ending at `prev_version` below `index` (its index and bytes),
/// skipping at most `chain::ORPHANS_PER_BATCH_MAX` orphans; `None` at the
/// start of the listing or when the chain breaks (which only retention
/// racing this read can cause: request ids then stop there).
fn predecessor(
    blocking: &Blocking<'_>,
    listed: &[Listed],
    index: usize,
    prev_version: u64,
) -> Result<Option<(usize, Vec<u8>)>, RecoveryError> {
    let lowest = index.saturating_sub(chain::ORPHANS_PER_BATCH_MAX + 1);
    for candidate in (lowest..index).rev() {
        let start_version = listed[candidate].start_version;
        let name = batch_name(start_version);
        let bytes = match blocking.get(&name, None) {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let last_version = verified_view(&name, &bytes, start_version)?.last_version;
        if last_version == prev_version {
            return Ok(Some((candidate, bytes)));
        }
        if last_version > prev_version {
            break;
        }
    }
    if index > 0 {
        tracing::warn!(prev_version, "no batch ends where the one read continues from; request ids stop there");
    }
    Ok(None)
}

/// Parses and verifies a batch and checks that its name matches it.
fn verified_view<'a>(name: &str, bytes: &'a [u8], start_version: u64) -> Result<BatchView<'a>, RecoveryError> {
    let view = BatchView::parse(bytes).map_err(|source| RecoveryError::Corrupt { name: name.to_owned(), source })?;
    if view.prev_version + 1 != start_version {
        return Err(RecoveryError::Misnamed { name: name.to_owned(), prev_version: view.prev_version });
    }
    Ok(view)
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
