//! The subscribers' history reader: a thread that reads batches from storage
//! for streams that are behind the live tail (they started in older history
//! or fell behind their buffer), so that the reactors never wait on storage.
//!
//! A request names a stream and a version; the answer is the batch holding
//! the versions right after it, delivered to the stream's reactor. Batches
//! chain by name (the batch after one ending at `v` is named `v + 1`), so a
//! stream reading forward needs one GET per batch. A stream's first read,
//! from a version a client gave, uses the listing (kept, and refreshed when
//! stale) and `log::chain::locate`, which skips a fenced leader's orphaned
//! batches: a name found by a client's version alone may be one.
//! Recently read batches are cached, so many streams catching up together
//! read each batch from storage once.
//!
//! Invariants:
//! - An answer's batch continues the version asked for
//!   (`prev_version <= after < last_version`), or the answer is an error.
//! - History older than the published oldest version is `TooOld`, never a
//!   gap; bytes are verified before they are used.
//! - Bounded: requests wait in a bounded queue (full: the stream asks again
//!   on the next sweep), the cache holds at most `CACHE_BYTES_MAX`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::feed::FeedBatch;
use crate::log::chain;
use crate::log::format::{BatchVersions, VERSIONS_PREFIX_BYTES};
use crate::log::names::{batch_name, parse_batch_name, LOG_PREFIX};
use crate::log::store::{Blocking, ObjectStore, StoreError};
use crate::pipeline::published::Published;

/// Requests waiting for the history reader at most.
pub const QUEUE_DEPTH: usize = 1024;
const CACHE_BYTES_MAX: usize = 32 * 1024 * 1024;
const LIST_PAGE_SIZE: usize = 1000;

/// Which stream asks, and for the batch after which version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryRequest {
    pub reactor: usize,
    pub key: usize,
    pub serial: u64,
    pub after: u64,
    /// `after` is the last version of a batch of the log (the stream served
    /// it), so the batch named `after + 1`, if any, is the next one.
    pub at_batch_end: bool,
}

#[derive(Debug)]
pub enum HistoryAnswer {
    Batch(Arc<FeedBatch>),
    /// History after the version asked for is gone (retention).
    TooOld {
        oldest_version: u64,
    },
    Failed(String),
}

/// Where answers go: the stream's reactor.
pub type Deliver = Box<dyn Fn(HistoryRequest, HistoryAnswer) + Send>;

/// Starts the reader thread; it ends when every request sender is gone.
pub fn spawn(
    store: Arc<dyn ObjectStore>,
    published: Arc<Published>,
    requests: Receiver<HistoryRequest>,
    deliver: Deliver,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("stoat-sub-history".into()).spawn(move || {
        let mut reader = HistoryReader::new(store, published);
        while let Ok(request) = requests.recv() {
            let answer = reader.read_after(request.after, request.at_batch_end);
            deliver(request, answer);
        }
    })?;
    Ok(())
}

/// Reads the batch after a version; see the module documentation.
pub struct HistoryReader {
    store: Arc<dyn ObjectStore>,
    published: Arc<Published>,
    /// Start versions (`prev_version + 1`) of the batches last listed.
    starts: Vec<u64>,
    cache: HashMap<u64, Arc<FeedBatch>>,
    cache_order: VecDeque<u64>,
    cache_bytes: usize,
}

impl HistoryReader {
    pub fn new(store: Arc<dyn ObjectStore>, published: Arc<Published>) -> Self {
        HistoryReader {
            store,
            published,
            starts: Vec::new(),
            cache: HashMap::new(),
            cache_order: VecDeque::new(),
            cache_bytes: 0,
        }
    }

    /// The batch holding the versions right after `after`; `at_batch_end`
    /// as in [`HistoryRequest`].
    pub fn read_after(&mut self, after: u64, at_batch_end: bool) -> HistoryAnswer {
        let oldest = self.published.oldest_version();
        if after < oldest {
            return HistoryAnswer::TooOld { oldest_version: oldest };
        }
        let answer = self.find(after, at_batch_end);
        // Retention may have deleted the batch while it was looked for.
        match answer {
            HistoryAnswer::Failed(_) if after < self.published.oldest_version() => {
                HistoryAnswer::TooOld { oldest_version: self.published.oldest_version() }
            }
            answer => answer,
        }
    }

    fn find(&mut self, after: u64, at_batch_end: bool) -> HistoryAnswer {
        let Some(start) = after.checked_add(1) else {
            return HistoryAnswer::Failed("no history after the largest version".into());
        };
        // Only batches of the log are cached.
        if let Some(batch) = self.cache.get(&start) {
            return HistoryAnswer::Batch(batch.clone());
        }
        // The common case: a stream reading on from a batch it served.
        if at_batch_end {
            match self.get(start, after) {
                Ok(Some(batch)) => return HistoryAnswer::Batch(batch),
                Ok(None) => {}
                Err(message) => return HistoryAnswer::Failed(message),
            }
        }
        // Anywhere else: the log's batch holding `start`, from the listing.
        let mut listed = false;
        for attempt in 0..2 {
            if attempt == 1 || self.starts.is_empty() {
                if let Err(error) = self.list() {
                    return HistoryAnswer::Failed(format!("the log cannot be listed: {error}"));
                }
                listed = true;
            }
            let starts = std::mem::take(&mut self.starts);
            let located = chain::locate(&starts, start, |asked: &[u64]| self.versions(asked));
            self.starts = starts;
            let found = match located {
                Ok(found) => found,
                Err(message) => return HistoryAnswer::Failed(message),
            };
            let Some(found) = found else {
                match self.starts.first() {
                    Some(&first) if listed => return HistoryAnswer::TooOld { oldest_version: first - 1 },
                    _ if listed => break,
                    _ => continue,
                }
            };
            match self.get(found, after) {
                Ok(Some(batch)) => return HistoryAnswer::Batch(batch),
                Ok(None) => {}
                Err(message) => return HistoryAnswer::Failed(message),
            }
        }
        HistoryAnswer::Failed(format!("the log holds no batch continuing from version {after}"))
    }

    /// The versions of the batches starting at `starts`, from the cache or
    /// their headers (read all at once); `None` for one that is gone.
    fn versions(&self, starts: &[u64]) -> Result<Vec<Option<BatchVersions>>, String> {
        let uncached: Vec<String> =
            starts.iter().filter(|start| !self.cache.contains_key(start)).map(|&start| batch_name(start)).collect();
        let mut read = Blocking::new(&*self.store).get_many(&uncached, Some(0..VERSIONS_PREFIX_BYTES)).into_iter();
        let mut uncached = uncached.into_iter();
        starts
            .iter()
            .map(|start| {
                if let Some(batch) = self.cache.get(start) {
                    let (prev_version, first_version, last_version) =
                        (batch.prev_version, batch.first_version, batch.last_version);
                    return Ok(Some(BatchVersions { prev_version, first_version, last_version }));
                }
                let name = uncached.next().unwrap_or_default();
                match read.next().unwrap_or_else(|| Err(StoreError::transient("no answer"))) {
                    Ok(prefix) => {
                        BatchVersions::peek(&prefix).map(Some).map_err(|error| format!("{name} is damaged: {error}"))
                    }
                    Err(StoreError::NotFound { .. }) => Ok(None),
                    Err(error) => Err(format!("{name} cannot be read: {error}")),
                }
            })
            .collect()
    }

    /// The batch starting at `start` if it exists and holds versions after
    /// `after`.
    fn get(&mut self, start: u64, after: u64) -> Result<Option<Arc<FeedBatch>>, String> {
        if let Some(batch) = self.cache.get(&start) {
            return Ok((batch.last_version > after).then(|| batch.clone()));
        }
        let name = batch_name(start);
        let bytes = match Blocking::new(&*self.store).get(&name, None) {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(error) => return Err(format!("{name} cannot be read: {error}")),
        };
        let batch = FeedBatch::from_stored(bytes).map_err(|error| format!("{name} is damaged: {error}"))?;
        if batch.prev_version + 1 != start {
            return Err(format!("{name} continues from version {}, not {}", batch.prev_version, start - 1));
        }
        self.remember(start, batch.clone());
        Ok((batch.last_version > after).then_some(batch))
    }

    fn list(&mut self) -> Result<(), StoreError> {
        let names = Blocking::new(&*self.store).list_all(LOG_PREFIX, None, LIST_PAGE_SIZE)?;
        self.starts = names.iter().filter_map(|name| parse_batch_name(name)).collect();
        Ok(())
    }

    fn remember(&mut self, start: u64, batch: Arc<FeedBatch>) {
        self.cache_bytes += batch.len_bytes();
        if self.cache.insert(start, batch).is_none() {
            self.cache_order.push_back(start);
        }
        while self.cache_bytes > CACHE_BYTES_MAX {
            let Some(oldest) = self.cache_order.pop_front() else { break };
            if let Some(evicted) = self.cache.remove(&oldest) {
                self.cache_bytes -= evicted.len_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::transaction::OperationRef;
    use crate::log::format::BatchEncoder;
    use crate::log::local::{LocalStore, LocalStoreOptions};

    fn put(store: &dyn ObjectStore, prev: u64, versions: std::ops::RangeInclusive<u64>) {
        let mut encoder = BatchEncoder::new("leader", prev);
        for version in versions {
            encoder.push(version, "r", 0, [OperationRef::Delete { key: b"k" }]);
        }
        Blocking::new(store).put_if_absent(&batch_name(prev + 1), encoder.finish().bytes.to_vec()).unwrap();
    }

    fn span(answer: HistoryAnswer) -> (u64, u64) {
        match answer {
            HistoryAnswer::Batch(batch) => (batch.prev_version, batch.last_version),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    fn reader() -> (tempfile::TempDir, Arc<dyn ObjectStore>, Arc<Published>, HistoryReader) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(dir.path(), LocalStoreOptions::default()).unwrap());
        put(&*store, 0, 1..=3);
        put(&*store, 3, 5..=6);
        put(&*store, 6, 8..=9);
        let published = Arc::new(Published::new("leader".into()));
        let reader = HistoryReader::new(store.clone(), published.clone());
        (dir, store, published, reader)
    }

    #[test]
    fn finds_the_batch_after_any_version() {
        let (_dir, _store, _published, mut reader) = reader();
        assert_eq!(span(reader.read_after(0, false)), (0, 3));
        assert_eq!(span(reader.read_after(2, false)), (0, 3));
        assert_eq!(span(reader.read_after(3, false)), (3, 6));
        assert_eq!(span(reader.read_after(4, false)), (3, 6));
        assert_eq!(span(reader.read_after(6, false)), (6, 9));
        // 7 was the version of a transaction that did not commit.
        assert_eq!(span(reader.read_after(7, false)), (6, 9));
        assert!(matches!(reader.read_after(9, false), HistoryAnswer::Failed(_)));
        // From the end of a batch the stream served: by name.
        assert_eq!(span(reader.read_after(3, true)), (3, 6));
        assert!(matches!(reader.read_after(9, true), HistoryAnswer::Failed(_)));
    }

    #[test]
    fn a_fenced_leaders_orphans_are_never_served() {
        let (_dir, store, _published, mut reader) = reader();
        // A new leader's first batch continues from 9 with versions from
        // `first`; a fenced leader's batches 11..=12 and 13..=20 landed
        // inside it; then the new leader wrote on.
        let first = chain::first_version_after(9);
        put(&*store, 9, first..=first + 1);
        put(&*store, 10, 11..=12);
        put(&*store, 12, 13..=20);
        put(&*store, first + 1, first + 2..=first + 3);
        for after in [9, 10, 12, 15, 20, 1000, first] {
            assert_eq!(span(reader.read_after(after, false)), (9, first + 1), "after {after}");
        }
        assert_eq!(span(reader.read_after(9, true)), (9, first + 1));
        assert_eq!(span(reader.read_after(first + 1, true)), (first + 1, first + 3));
        assert_eq!(span(reader.read_after(first + 2, false)), (first + 1, first + 3));
    }

    #[test]
    fn deleted_history_is_too_old_not_a_gap() {
        let (_dir, store, published, mut reader) = reader();
        assert_eq!(span(reader.read_after(1, false)), (0, 3));
        Blocking::new(&*store).delete(vec![batch_name(1), batch_name(4)]).unwrap();
        // The cached batch is still served; an uncached one is not.
        assert!(matches!(reader.read_after(4, false), HistoryAnswer::TooOld { oldest_version: 6 }));
        published.set_oldest_version(6);
        assert!(matches!(reader.read_after(2, false), HistoryAnswer::TooOld { oldest_version: 6 }));
        assert_eq!(span(reader.read_after(6, false)), (6, 9));
    }
}
