//! The history reader: a thread that answers `/v1/status` lookups for request
//! ids older than the sequencer remembers, by reading batches from storage.
//! It never blocks the stages: requests arrive through a bounded queue (full:
//! 503), and answers go to stage 2, which releases them once the version
//! they name is durable.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::{PersistMessage, Reply, ReplyMessage};
use crate::log::format::BatchView;
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
}

pub(super) fn spawn(
    store: Arc<dyn ObjectStore>,
    requests: Receiver<SearchRequest>,
    to_persist: Sender<PersistMessage>,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("stoat-history".into()).spawn(move || {
        // Ends when stage 1, the only sender, is gone.
        while let Ok(request) = requests.recv() {
            let SearchRequest { connection, request_id, min_version, below, version } = request;
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
            let message = PersistMessage::AwaitDurable { message: ReplyMessage { connection, reply }, version };
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

/// The version at which `request_id` committed, searching `min_version..below`.
fn find(store: &dyn ObjectStore, request_id: &str, min_version: u64, below: u64) -> Result<Found, String> {
    let blocking = Blocking::new(store);
    let names = blocking.list_all(LOG_PREFIX, None, LIST_PAGE_SIZE).map_err(|error| error.to_string())?;
    let starts: Vec<u64> = names.iter().filter_map(|name| parse_batch_name(name)).collect();
    // The oldest batch continues the log from `first - 1`; versions from
    // `min_version` on are all there only if it starts at or before it.
    if let Some(&first) = starts.first() {
        if first > min_version.max(1) {
            return Ok(Found::Truncated { oldest_version: first - 1 });
        }
    }
    for (index, &start) in starts.iter().enumerate() {
        // The batch covers start..next_start (or beyond, for the last one).
        let covers_min = starts.get(index + 1).is_none_or(|&next| next > min_version);
        if start >= below {
            break;
        }
        if !covers_min {
            continue;
        }
        let name = batch_name(start);
        let bytes = match blocking.get(&name, None) {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => {
                // Deleted by retention since the listing.
                let oldest_version = starts.get(index + 1).map_or(start, |next| next - 1);
                return Ok(Found::Truncated { oldest_version });
            }
            Err(error) => return Err(error.to_string()),
        };
        let view = BatchView::parse(&bytes).map_err(|error| format!("{name}: {error}"))?;
        let found = view
            .transactions()
            .find(|t| t.version >= min_version && t.version < below && t.request_id == request_id)
            .map(|t| t.version);
        if let Some(version) = found {
            return Ok(Found::CommittedAt(version));
        }
    }
    Ok(Found::Nothing)
}
