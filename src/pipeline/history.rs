//! The history reader: a thread that answers `/v1/status` lookups for request
//! ids older than the sequencer remembers, by reading batches from storage.
//! It never blocks the stages: requests arrive through a bounded queue (full:
//! 503), and answers go to stage 2, which releases them once the version
//! they name is durable.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{PersistMessage, Reply, ReplyMessage};
use crate::log::chain;
use crate::log::format::{BatchVersions, BatchView, VERSIONS_PREFIX_BYTES};
use crate::log::names::{batch_name, parse_batch_name, LOG_PREFIX};
use crate::log::store::{Blocking, ObjectStore, StoreError};
use crate::server::connection::Connection;
use crate::server::response::ApiError;

/// Lookups waiting for the history reader at most.
pub(super) const QUEUE_DEPTH: usize = 64;
const LIST_PAGE_SIZE: usize = 1000;

/// A status lookup to answer from the log.
pub(crate) struct SearchRequest {
    pub connection: Box<Connection>,
    pub request_id: String,
    /// Search versions `min_version..below`.
    pub min_version: u64,
    pub below: u64,
    /// The committed version when the lookup was ordered: the answer's
    /// version if the id is not found.
    pub version: u64,
    /// The sequencer's term (see `Takeover`).
    pub term: u64,
}

pub(super) fn spawn(
    store: Arc<dyn ObjectStore>,
    requests: Receiver<SearchRequest>,
    to_persist: Sender<PersistMessage>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("stoat-history".into()).spawn(move || {
        // Ends when stage 1, the only sender, is gone.
        while let Ok(request) = requests.recv() {
            let SearchRequest { connection, request_id, min_version, below, version, term } = request;
            let reply = match find(&*store, &request_id, min_version, below) {
                Ok(Found::CommittedAt(committed_at)) => Reply::Status { committed: true, version: committed_at },
                Ok(Found::Nothing) => Reply::Status { committed: false, version },
                Ok(Found::Truncated { oldest_version }) => Reply::Error(ApiError::VersionTooOld {
                    message: format!(
                        "min_version is older than the retained log, which starts after {oldest_version} (history \
                         was truncated during the lookup)"
                    ),
                    oldest_version,
                }),
                Err(message) => {
                    tracing::warn!(%message, "status lookup in the log failed");
                    Reply::Error(ApiError::Unavailable(format!("the log could not be read: {message}")))
                }
            };
            let message = PersistMessage::AwaitDurable { message: ReplyMessage { connection, reply }, version, term };
            if to_persist.send(message).is_err() {
                return;
            }
        }
    })?;
    Ok(())
}

/// What a search of the log found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    CommittedAt(u64),
    Nothing,
    /// Part of `min_version..below` is deleted (retention truncated it after
    /// the sequencer checked `min_version`): answering "not committed"
    /// could be wrong.
    Truncated {
        oldest_version: u64,
    },
}

/// The version at which `request_id` committed, searching `min_version..below`:
/// from the log's batch holding `min_version` (found through the listing,
/// skipping orphans: see `log::chain`), then batch after batch by name, which
/// follows the log's chain and never meets an orphan.
fn find(store: &dyn ObjectStore, request_id: &str, min_version: u64, below: u64) -> Result<Found, String> {
    let blocking = Blocking::new(store);
    let names = blocking.list_all(LOG_PREFIX, None, LIST_PAGE_SIZE).map_err(|error| error.to_string())?;
    let starts: Vec<u64> = names.iter().filter_map(|name| parse_batch_name(name)).collect();
    // The oldest batch continues the log from `first - 1`; versions from
    // `min_version` on are all there only if it starts at or before it.
    let from = min_version.max(1);
    if let Some(&first) = starts.first() {
        if first > from {
            return Ok(Found::Truncated { oldest_version: first - 1 });
        }
    }
    let versions_of = |asked: &[u64]| -> Result<Vec<Option<BatchVersions>>, String> {
        let names: Vec<String> = asked.iter().map(|&start| batch_name(start)).collect();
        let prefixes = blocking.get_many(&names, Some(0..VERSIONS_PREFIX_BYTES));
        names
            .iter()
            .zip(prefixes)
            .map(|(name, prefix)| match prefix {
                Ok(prefix) => BatchVersions::peek(&prefix).map(Some).map_err(|error| format!("{name}: {error}")),
                Err(StoreError::NotFound { .. }) => Ok(None),
                Err(error) => Err(error.to_string()),
            })
            .collect()
    };
    let Some(mut start) = chain::locate(&starts, from, versions_of)? else {
        return Ok(Found::Nothing);
    };
    let mut first_read = true;
    while start < below {
        let name = batch_name(start);
        let bytes = match blocking.get(&name, None) {
            Ok(bytes) => bytes,
            // Deleted by retention since the listing.
            Err(StoreError::NotFound { .. }) if first_read => {
                let oldest_version = starts.iter().find(|&&next| next > start).map_or(start, |next| next - 1);
                return Ok(Found::Truncated { oldest_version });
            }
            // The end of the log.
            Err(StoreError::NotFound { .. }) => break,
            Err(error) => return Err(error.to_string()),
        };
        let view = BatchView::parse(&bytes).map_err(|error| format!("{name}: {error}"))?;
        if view.prev_version + 1 != start {
            return Err(format!("{name} continues from version {}", view.prev_version));
        }
        let found = view
            .transactions()
            .find(|t| t.version >= min_version && t.version < below && t.request_id == request_id)
            .map(|t| t.version);
        if let Some(version) = found {
            return Ok(Found::CommittedAt(version));
        }
        first_read = false;
        start = view.last_version + 1;
    }
    Ok(Found::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::transaction::OperationRef;
    use crate::log::format::BatchEncoder;
    use crate::log::local::{LocalStore, LocalStoreOptions};

    /// One transaction per version, request ids `r{version}`.
    fn put(store: &dyn ObjectStore, prev: u64, versions: std::ops::RangeInclusive<u64>) {
        let mut encoder = BatchEncoder::new("leader", prev);
        for version in versions {
            encoder.push(version, &format!("r{version}"), 0, [OperationRef::Delete { key: b"k" }]);
        }
        Blocking::new(store).put_if_absent(&batch_name(prev + 1), encoder.finish().bytes.to_vec()).unwrap();
    }

    #[test]
    fn finds_ids_in_the_log_and_never_in_a_fenced_leaders_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap();
        put(&store, 0, 1..=3);
        put(&store, 3, 4..=6);
        // A new leader's first batch, with a fenced leader's batches inside.
        let first = chain::first_version_after(6);
        put(&store, 6, first..=first + 1);
        put(&store, 7, 8..=9);
        put(&store, 9, 10..=12);
        put(&store, first + 1, first + 2..=first + 4);
        let find = |id: &str, min_version, below| find(&store, id, min_version, below).unwrap();
        assert_eq!(find("r2", 0, 100), Found::CommittedAt(2));
        assert_eq!(find("r5", 5, first), Found::CommittedAt(5));
        assert_eq!(find("r5", 6, first), Found::Nothing, "searched from 6");
        assert_eq!(find(&format!("r{}", first + 3), 0, u64::MAX), Found::CommittedAt(first + 3));
        assert_eq!(find(&format!("r{}", first + 3), 9, u64::MAX), Found::CommittedAt(first + 3));
        for orphaned in ["r8", "r9", "r11"] {
            assert_eq!(find(orphaned, 0, u64::MAX), Found::Nothing, "{orphaned}");
            assert_eq!(find(orphaned, 8, u64::MAX), Found::Nothing, "{orphaned} from 8");
        }
        Blocking::new(&store).delete(vec![batch_name(1)]).unwrap();
        assert_eq!(find("r5", 2, 100), Found::Truncated { oldest_version: 3 });
    }
}
