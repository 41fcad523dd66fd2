//! Test and benchmark oracle: the naive conflict set, a plain list of written ranges.
//!
//! Not for production: every check scans every remembered write (quadratic over a workload).
//! It implements the semantics as literally as possible, batch rule included, so that the real
//! `ConflictSet` can be compared with it on random workloads (FoundationDB's
//! `ReferenceMiniConflictSet` plays the same role).

use super::{KeyRange, Outcome, ReadOutcome, ReadRange, TransactionRef};

#[derive(Clone, Debug)]
struct Write {
    begin: Vec<u8>,
    end: Vec<u8>,
    version: u64,
}

fn intersects(begin: &[u8], end: &[u8], other: &KeyRange<'_>) -> bool {
    begin < end && !other.is_empty() && begin < other.end && other.begin < end
}

/// The naive conflict set (oracle only).
#[derive(Debug, Default)]
pub struct ReferenceConflictSet {
    writes: Vec<Write>,
    oldest_version: u64,
}

impl ReferenceConflictSet {
    pub fn new(oldest_version: u64) -> Self {
        ReferenceConflictSet { writes: Vec::new(), oldest_version }
    }

    pub fn check_read(&self, read: &ReadRange<'_>) -> ReadOutcome {
        if read.read_version < self.oldest_version {
            return ReadOutcome::TooOld;
        }
        let newer_write_intersects = self
            .writes
            .iter()
            .any(|write| write.version > read.read_version && intersects(&write.begin, &write.end, &read.range));
        if newer_write_intersects {
            ReadOutcome::Conflict
        } else {
            ReadOutcome::Ok
        }
    }

    pub fn check(&self, reads: &[ReadRange<'_>]) -> Vec<ReadOutcome> {
        reads.iter().map(|read| self.check_read(read)).collect()
    }

    pub fn add_writes(&mut self, writes: &[KeyRange<'_>], version: u64) {
        for write in writes {
            self.writes.push(Write { begin: write.begin.to_vec(), end: write.end.to_vec(), version });
        }
    }

    /// Raises the oldest version and drops writes at or below it: no read that is not too old
    /// can conflict with them.
    pub fn set_oldest_version(&mut self, oldest_version: u64) {
        self.oldest_version = self.oldest_version.max(oldest_version);
        let oldest_version = self.oldest_version;
        self.writes.retain(|write| write.version > oldest_version);
    }

    /// The batch rule, literally: check history, then the batch's earlier committed writes.
    pub fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome> {
        let mut batch_writes: Vec<Write> = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (transaction, version) in batch {
            let outcome = self.decide(transaction, &batch_writes);
            if outcome == Outcome::Committed {
                batch_writes.extend(transaction.writes.iter().map(|write| Write {
                    begin: write.begin.to_vec(),
                    end: write.end.to_vec(),
                    version: *version,
                }));
            }
            outcomes.push(outcome);
        }
        self.writes.extend(batch_writes);
        outcomes
    }

    fn decide(&self, transaction: &TransactionRef<'_>, batch_writes: &[Write]) -> Outcome {
        let reads = transaction.reads;
        if reads.iter().any(|read| read.read_version < self.oldest_version) {
            return Outcome::TooOld;
        }
        let read_indices: Vec<usize> = (0..reads.len())
            .filter(|&index| {
                let read = &reads[index];
                self.check_read(read) == ReadOutcome::Conflict
                    || batch_writes.iter().any(|write| intersects(&write.begin, &write.end, &read.range))
            })
            .collect();
        if read_indices.is_empty() {
            Outcome::Committed
        } else {
            Outcome::Conflict { read_indices }
        }
    }

    /// Number of writes remembered.
    pub fn write_count(&self) -> usize {
        self.writes.len()
    }
}
