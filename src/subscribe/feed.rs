//! The live tail that subscribers read: the most recent batches, in log
//! order, shared by every subscriber, with each batch's events encoded once.
//!
//! Stage 2 pushes every batch it accepts (committed, not yet durable) and
//! tells the feed when the durable version moves; both wake the reactors
//! that have subscribers. A reactor looks up the batch that continues a
//! subscriber's position and writes that batch's shared event bytes to the
//! socket. A subscriber whose position is older than the oldest batch kept
//! (it fell behind, or it started in older history) reads from storage.
//!
//! Invariants:
//! - The batches kept are contiguous: each one's `prev_version` is the
//!   previous one's `last_version` (asserted on push), so a subscriber that
//!   moves from batch to batch misses nothing.
//! - Memory is bounded: batches are dropped from the front once their bytes
//!   pass `buffer_bytes_max`, except batches that are not yet durable (at most
//!   the few stage 2 has in flight) and the newest one.
//! - A durable subscriber is never given a batch past the durable version.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use super::event;
use crate::log::format::{BatchView, EncodedBatch, FormatError};
use crate::log::store::ObjectBytes;

/// One batch of the log as subscribers see it.
#[derive(Debug)]
pub struct FeedBatch {
    pub prev_version: u64,
    pub first_version: u64,
    pub last_version: u64,
    bytes: ObjectBytes,
    /// The events of every transaction, encoded by the first reader.
    events: OnceLock<Result<Arc<Events>, FormatError>>,
}

impl FeedBatch {
    /// A batch this process encoded (the persister checks it before writing).
    pub fn from_encoded(batch: &EncodedBatch) -> Arc<FeedBatch> {
        Arc::new(FeedBatch {
            prev_version: batch.prev_version,
            first_version: batch.first_version,
            last_version: batch.last_version,
            bytes: batch.bytes.clone(),
            events: OnceLock::new(),
        })
    }

    /// A batch read back from storage: verified before use.
    pub fn from_stored(bytes: Vec<u8>) -> Result<Arc<FeedBatch>, FormatError> {
        let view = BatchView::parse(&bytes)?;
        let (prev_version, first_version, last_version) = (view.prev_version, view.first_version, view.last_version);
        Ok(Arc::new(FeedBatch {
            prev_version,
            first_version,
            last_version,
            bytes: Arc::new(bytes),
            events: OnceLock::new(),
        }))
    }

    /// The batch's bytes, parsed (and verified again).
    pub fn view(&self) -> Result<BatchView<'_>, FormatError> {
        BatchView::parse(&self.bytes)
    }

    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The shared events of every transaction, encoded on first use.
    pub fn events(&self) -> Result<Arc<Events>, FormatError> {
        self.events.get_or_init(|| self.view().map(|view| Arc::new(Events::encode(&view)))).clone()
    }
}

/// The SSE bytes of every transaction of a batch, unfiltered, and where
/// each event starts.
#[derive(Debug)]
pub struct Events {
    pub text: Vec<u8>,
    /// `(version, offset in text)` of each event, in version order.
    starts: Vec<(u64, usize)>,
}

impl Events {
    pub fn encode(view: &BatchView<'_>) -> Events {
        let mut text = Vec::with_capacity(view.transaction_count as usize * 256);
        let mut starts = Vec::with_capacity(view.transaction_count as usize);
        let mut prev_version = view.prev_version;
        for transaction in view.transactions() {
            starts.push((transaction.version, text.len()));
            event::write_transaction(&mut text, &transaction, prev_version, view.leader_id, None);
            prev_version = transaction.version;
        }
        Events { text, starts }
    }

    /// The index of the first event with a version above `after`.
    pub fn first_after(&self, after: u64) -> usize {
        self.starts.partition_point(|&(version, _)| version <= after)
    }

    /// Byte offset of event `index` (the end of the text past the last).
    pub fn offset(&self, index: usize) -> usize {
        self.starts.get(index).map_or(self.text.len(), |&(_, offset)| offset)
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }
}

/// Where a subscriber at some position goes next.
#[derive(Debug)]
pub enum Lookup {
    /// The batch holding the versions right after the position.
    Batch(Arc<FeedBatch>),
    /// Nothing newer yet (or not yet durable, for a durable subscriber).
    UpToDate,
    /// The position is older than the oldest batch kept: read storage.
    Behind,
}

#[derive(Debug, Default)]
struct Ring {
    batches: VecDeque<Arc<FeedBatch>>,
    bytes: usize,
    /// The version the kept batches continue from (the first one's
    /// `prev_version`, or the tail when none is kept).
    base_version: u64,
    /// The last version of the newest batch (or `base_version`).
    tail_version: u64,
    durable_version: u64,
}

/// The shared live tail; see the module documentation.
pub struct Feed {
    ring: Mutex<Ring>,
    buffer_bytes_max: usize,
    /// Wakes the reactors that serve subscribers; the argument says whether
    /// only committed (not durable) batches arrived, which only streams
    /// with `durable=false` can use.
    listener: OnceLock<Box<dyn Fn(bool) + Send + Sync>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("buffer_bytes_max", &self.buffer_bytes_max).finish()
    }
}

impl Feed {
    pub fn new(buffer_bytes_max: usize) -> Feed {
        Feed { ring: Mutex::new(Ring::default()), buffer_bytes_max, listener: OnceLock::new() }
    }

    /// Sets what is called whenever the feed moves (once, at start).
    pub fn set_listener(&self, listener: Box<dyn Fn(bool) + Send + Sync>) {
        let _ = self.listener.set(listener);
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // A panic while holding the lock cannot leave the ring inconsistent
        // (every update is a push or pop plus counters), so poison is ignored.
        self.ring.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// After recovery: nothing is kept; the log continues from `version`,
    /// which is durable.
    pub fn reset(&self, version: u64) {
        let mut ring = self.ring();
        *ring = Ring { base_version: version, tail_version: version, durable_version: version, ..Ring::default() };
    }

    /// A batch stage 2 accepted (committed; durable later).
    ///
    /// # Panics
    /// If the batch does not continue the tail: stage 2 pushes batches in
    /// the order the sequencer chained them.
    pub fn push(&self, batch: Arc<FeedBatch>) {
        {
            let mut ring = self.ring();
            assert_eq!(batch.prev_version, ring.tail_version, "feed batches chain");
            ring.tail_version = batch.last_version;
            ring.bytes += batch.len_bytes();
            ring.batches.push_back(batch);
            self.evict(&mut ring);
        }
        self.notify(true);
    }

    /// The durable version moved (every batch up to it is in storage).
    pub fn durable_advanced(&self, version: u64) {
        {
            let mut ring = self.ring();
            ring.durable_version = ring.durable_version.max(version);
            self.evict(&mut ring);
        }
        self.notify(false);
    }

    fn evict(&self, ring: &mut Ring) {
        while ring.bytes > self.buffer_bytes_max && ring.batches.len() > 1 {
            let front = &ring.batches[0];
            if front.last_version > ring.durable_version {
                break;
            }
            ring.bytes -= front.len_bytes();
            ring.base_version = front.last_version;
            ring.batches.pop_front();
        }
    }

    fn notify(&self, committed_only: bool) {
        if let Some(listener) = self.listener.get() {
            listener(committed_only);
        }
    }

    /// Where a subscriber that has seen everything up to `position` reads
    /// next. `durable_only`: batches past the durable version are not given.
    pub fn lookup(&self, position: u64, durable_only: bool) -> Lookup {
        let ring = self.ring();
        if position >= ring.tail_version {
            return Lookup::UpToDate;
        }
        if position < ring.base_version {
            return Lookup::Behind;
        }
        let index = ring.batches.partition_point(|batch| batch.last_version <= position);
        let Some(batch) = ring.batches.get(index) else {
            return Lookup::UpToDate;
        };
        debug_assert!(batch.prev_version <= position);
        if durable_only && batch.last_version > ring.durable_version {
            return Lookup::UpToDate;
        }
        Lookup::Batch(batch.clone())
    }

    /// Bytes of the batches kept.
    #[cfg(test)]
    fn buffered_bytes(&self) -> usize {
        self.ring().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::transaction::OperationRef;
    use crate::log::format::BatchEncoder;

    /// A batch after `prev` with one transaction per version in `versions`.
    pub(crate) fn batch(prev: u64, versions: std::ops::RangeInclusive<u64>, value_bytes: usize) -> Arc<FeedBatch> {
        let mut encoder = BatchEncoder::new("leader", prev);
        let value = vec![b'v'; value_bytes];
        for version in versions {
            let key = format!("k{version}");
            encoder.push(version, "r", 0, [OperationRef::Write { key: key.as_bytes(), value: &value }]);
        }
        FeedBatch::from_encoded(&encoder.finish())
    }

    fn found(lookup: Lookup) -> (u64, u64) {
        match lookup {
            Lookup::Batch(batch) => (batch.prev_version, batch.last_version),
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn lookups_find_the_batch_continuing_a_position() {
        let feed = Feed::new(1 << 20);
        feed.reset(10);
        assert!(matches!(feed.lookup(10, false), Lookup::UpToDate));
        assert!(matches!(feed.lookup(9, false), Lookup::Behind));
        feed.push(batch(10, 11..=13, 1));
        feed.push(batch(13, 15..=15, 1));
        assert_eq!(found(feed.lookup(10, false)), (10, 13));
        assert_eq!(found(feed.lookup(12, false)), (10, 13));
        assert_eq!(found(feed.lookup(13, false)), (13, 15));
        assert_eq!(found(feed.lookup(14, false)), (13, 15));
        assert!(matches!(feed.lookup(15, false), Lookup::UpToDate));
        // Durable subscribers wait for durability.
        assert!(matches!(feed.lookup(10, true), Lookup::UpToDate));
        feed.durable_advanced(13);
        assert_eq!(found(feed.lookup(10, true)), (10, 13));
        assert!(matches!(feed.lookup(13, true), Lookup::UpToDate));
    }

    #[test]
    fn memory_is_bounded_but_undurable_batches_stay() {
        let feed = Feed::new(10_000);
        feed.reset(0);
        let mut prev = 0;
        for version in 1..=20 {
            feed.push(batch(prev, version..=version, 2_000));
            prev = version;
        }
        // Nothing durable yet: everything is kept.
        assert!(feed.buffered_bytes() > 40_000);
        assert_eq!(found(feed.lookup(0, false)), (0, 1));
        feed.durable_advanced(20);
        assert!(feed.buffered_bytes() <= 10_000, "{}", feed.buffered_bytes());
        assert!(matches!(feed.lookup(0, false), Lookup::Behind));
        assert_eq!(found(feed.lookup(19, false)), (19, 20));
    }

    #[test]
    #[should_panic(expected = "feed batches chain")]
    fn a_batch_that_does_not_chain_is_a_bug() {
        let feed = Feed::new(1 << 20);
        feed.reset(5);
        feed.push(batch(6, 7..=7, 1));
    }

    #[test]
    fn events_index_by_version() {
        let batch = batch(10, 11..=13, 1);
        let events = batch.events().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events.first_after(10), 0);
        assert_eq!(events.first_after(11), 1);
        assert_eq!(events.first_after(13), 3);
        assert_eq!(events.offset(3), events.text.len());
        let text = std::str::from_utf8(&events.text[events.offset(1)..events.offset(2)]).unwrap();
        assert!(text.starts_with("id: 12\nevent: transaction\ndata: {\"version\":12,\"prev_version\":11,"), "{text}");
        // Encoded once, shared.
        assert!(Arc::ptr_eq(&events, &batch.events().unwrap()));
    }
}
