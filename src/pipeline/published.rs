//! The few values the pipeline publishes for everyone else to read: versions
//! and readiness. Readers never wait; writers are the owning stage only.
//!
//! Invariant: `oldest_version <= durable_version <= committed_version`, and
//! none of them ever decreases.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

#[derive(Debug)]
pub struct Published {
    /// Changes whenever leadership changes; opaque to clients.
    pub leader_id: String,
    committed_version: AtomicU64,
    durable_version: AtomicU64,
    oldest_version: AtomicU64,
    ready: AtomicBool,
    /// False once another leader has taken over (this one was fenced) or
    /// storage failed for good: nothing more is committed here.
    leading: AtomicBool,
    /// Batch objects stage 2 has accepted and not yet made durable.
    writes_in_flight: AtomicUsize,
    /// Who could still send a request: stage 1 does not hold a batch back
    /// for more when every client connection already waits in the pipeline.
    clients: Clients,
}

/// Open connections, subscribe streams among them, and connections with a
/// request in the commit pipeline (handed to stage 1 by a reactor, not yet
/// given back by stage 3). Kept by the reactors and stage 3; read by stage 1
/// as a hint (the three are not read at one instant).
#[derive(Debug, Default)]
struct Clients {
    open: AtomicUsize,
    streams: AtomicUsize,
    in_pipeline: AtomicUsize,
}

impl Published {
    pub fn new(leader_id: String) -> Self {
        Published {
            leader_id,
            committed_version: AtomicU64::new(0),
            durable_version: AtomicU64::new(0),
            oldest_version: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            leading: AtomicBool::new(true),
            writes_in_flight: AtomicUsize::new(0),
            clients: Clients::default(),
        }
    }

    /// The newest version decided as committed (maybe not yet durable).
    pub fn committed_version(&self) -> u64 {
        self.committed_version.load(Ordering::Acquire)
    }

    /// The newest version durable in storage: every commit acknowledged to a
    /// client has a version at or below it.
    pub fn durable_version(&self) -> u64 {
        self.durable_version.load(Ordering::Acquire)
    }

    pub fn oldest_version(&self) -> u64 {
        self.oldest_version.load(Ordering::Acquire)
    }

    /// Published by the sequencer after each batch.
    pub fn set_committed_version(&self, version: u64) {
        let previous = self.committed_version.swap(version, Ordering::AcqRel);
        assert!(previous <= version, "committed version went back from {previous} to {version}");
    }

    /// Published by the persistence stage as batches become durable.
    pub fn set_durable_version(&self, version: u64) {
        let previous = self.durable_version.swap(version, Ordering::AcqRel);
        assert!(previous <= version, "durable version went back from {previous} to {version}");
        debug_assert!(version <= self.committed_version());
    }

    /// The oldest version from which the retained log continues: history
    /// after it is complete. Set by stage 2 at recovery, then moved only by
    /// the retention worker, before it deletes the history up to it.
    pub fn set_oldest_version(&self, version: u64) {
        let previous = self.oldest_version.swap(version, Ordering::AcqRel);
        assert!(previous <= version, "oldest version went back from {previous} to {version}");
    }

    /// True when this server is the leader, recovered, and its storage works.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.is_leading()
    }

    pub fn is_leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }

    /// Called once this server must stop committing (fenced, or storage
    /// failed for good). Never undone: a new leadership is a new process.
    pub fn stop_leading(&self) {
        self.leading.store(false, Ordering::Release);
    }

    pub fn writes_in_flight(&self) -> usize {
        self.writes_in_flight.load(Ordering::Acquire)
    }

    /// Published by the persistence stage as batches are accepted and land.
    pub fn set_writes_in_flight(&self, writes: usize) {
        self.writes_in_flight.store(writes, Ordering::Release);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Counts a new connection if fewer than `max` are open.
    pub fn try_open_connection(&self, max: usize) -> bool {
        let open = &self.clients.open;
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < max).then_some(open + 1)).is_ok()
    }

    pub fn connection_closed(&self) {
        self.clients.open.fetch_sub(1, Ordering::AcqRel);
    }

    /// A connection became a subscribe stream (`true`) or a stream ended.
    pub fn stream_opened(&self, opened: bool) {
        match opened {
            true => self.clients.streams.fetch_add(1, Ordering::AcqRel),
            false => self.clients.streams.fetch_sub(1, Ordering::AcqRel),
        };
    }

    /// A reactor handed a request to stage 1.
    pub fn request_entered_pipeline(&self) {
        self.clients.in_pipeline.fetch_add(1, Ordering::AcqRel);
    }

    /// Stage 3 gave `count` connections back to their reactors.
    pub fn requests_left_pipeline(&self, count: usize) {
        self.clients.in_pipeline.fetch_sub(count, Ordering::AcqRel);
    }

    /// True when every open connection that is not a subscribe stream has a
    /// request in the pipeline: none of them can send another until it is
    /// answered (a connection's requests are taken one at a time).
    pub fn every_client_waiting(&self) -> bool {
        let in_pipeline = self.clients.in_pipeline.load(Ordering::Acquire);
        let streams = self.clients.streams.load(Ordering::Acquire);
        in_pipeline + streams >= self.clients.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::Published;

    #[test]
    fn every_client_waits_when_each_open_connection_but_the_streams_has_a_request_in_the_pipeline() {
        let published = Published::new("leader".into());
        assert!(published.try_open_connection(3));
        assert!(published.try_open_connection(3));
        assert!(published.try_open_connection(3));
        assert!(!published.try_open_connection(3), "at most 3 open");
        published.stream_opened(true);
        published.request_entered_pipeline();
        assert!(!published.every_client_waiting(), "one client connection is idle");
        published.request_entered_pipeline();
        assert!(published.every_client_waiting());
        published.requests_left_pipeline(1);
        assert!(!published.every_client_waiting());
        published.connection_closed();
        assert!(published.every_client_waiting(), "the idle one closed");
        published.stream_opened(false);
        assert!(!published.every_client_waiting(), "no longer counted as a stream, it counts as a client");
    }
}
