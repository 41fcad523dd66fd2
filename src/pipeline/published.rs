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
}
