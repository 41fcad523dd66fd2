//! Conflict set: the versioned range map that decides optimistic transactions (FoundationDB
//! resolver semantics).
//!
//! It owns the recent write history: for every key range, the version of the latest write that
//! covered it, for versions newer than the oldest version kept. It does no IO, spawns no threads
//! and reads no clock; the sequencer feeds it batches and versions.
//!
//! Semantics:
//! - Keys are byte strings in lexicographic order; ranges are half-open `[begin, end)`; a point
//!   read of `k` is `[k, k\x00)`; a range with `begin >= end` reads or writes nothing.
//! - A read conflicts iff a write at a version strictly greater than its read version intersects
//!   its range. It is too old iff its read version is below the oldest version kept.
//! - In a batch, transactions are decided in order; a transaction conflicts with the writes of
//!   earlier committed transactions of the same batch whatever its read versions; only committed
//!   transactions' writes are added, each at its own version.
//!
//! Invariants:
//! - write versions strictly increase and exceed the oldest version (asserted: only the
//!   sequencer assigns versions, so a violation is a bug, not bad input);
//! - the oldest version never decreases (a lower value is ignored);
//! - history at or before the oldest version is forgotten incrementally, a few chunks per write,
//!   so memory follows the live window rather than all history;
//! - no client input can make it panic: empty, inverted and long ranges are all accepted.
//!
//! Structure (see `boundaries.rs`): a sorted array of chunks of range boundaries
//! `(key, version of [key, next key))`, each chunk with its exact max version, found by
//! branch-free binary searches over 16-byte key heads. `check_batch` hides most cache misses
//! (~150 ns each on the benchmark machine) by prefetching, two transactions ahead, the chunks
//! that each transaction will search (`prefetch.rs` holds the module's only `unsafe`: the
//! prefetch instruction).
//! `reference` is the naive oracle used by the tests and the benchmark, not production code.

mod boundaries;
mod key;
mod prefetch;
#[doc(hidden)]
pub mod reference;
mod samples;
#[cfg(test)]
mod tests;

use boundaries::BoundaryMap;

/// A half-open key range `[begin, end)`; empty when `begin >= end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRange<'a> {
    pub begin: &'a [u8],
    pub end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub fn new(begin: &'a [u8], end: &'a [u8]) -> Self {
        KeyRange { begin, end }
    }

    pub fn is_empty(&self) -> bool {
        self.begin >= self.end
    }
}

/// A read (a precondition): a range and the version it was read at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRange<'a> {
    pub range: KeyRange<'a>,
    pub read_version: u64,
}

/// The verdict on one read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Ok,
    Conflict,
    TooOld,
}

/// One transaction as the sequencer hands it over: its reads and its writes.
#[derive(Clone, Copy, Debug)]
pub struct TransactionRef<'a> {
    pub reads: &'a [ReadRange<'a>],
    pub writes: &'a [KeyRange<'a>],
}

/// The verdict on one transaction of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Its writes were added at its version.
    Committed,
    /// These read indices (ascending) intersect newer writes; nothing was added.
    Conflict { read_indices: Vec<usize> },
    /// A read version is below the oldest version kept; nothing was checked or added.
    TooOld,
}

/// Boundary slots per chunk: chosen by measurement (`stoat-bench conflict --tune`).
pub const DEFAULT_CHUNK_CAPACITY: usize = 64;

/// Boundaries examined by the incremental garbage collector per range written. A write adds at
/// most two boundaries, so examining more than two sweeps the map faster than it grows.
const GC_EXAMINED_PER_WRITE: isize = 8;

/// The conflict set. See the module documentation for semantics and invariants.
///
/// `CHUNK_CAPACITY` is the number of boundary slots per chunk; the default was chosen by
/// measurement, and tests use tiny chunks to exercise splits and merges.
#[derive(Debug)]
pub struct ConflictSet<const CHUNK_CAPACITY: usize = DEFAULT_CHUNK_CAPACITY> {
    boundaries: BoundaryMap<CHUNK_CAPACITY>,
    oldest_version: u64,
    newest_version: Option<u64>,
    gc_cursor_chunk: usize,
    gc_debt_boundaries: isize,
    lookahead_transactions: usize,
    /// Per transaction of the current batch, the chunks its searches start from (reused).
    chunk_hints: Vec<[usize; PREFETCH_RANGES_MAX]>,
}

/// A chunk hint meaning "not known".
const NO_HINT: usize = usize::MAX;

/// Ranges of one upcoming transaction prefetched at most (its first reads, then writes).
const PREFETCH_RANGES_MAX: usize = 4;

impl ConflictSet {
    pub fn new(oldest_version: u64) -> Self {
        Self::with_oldest_version(oldest_version)
    }
}

impl<const CHUNK_CAPACITY: usize> ConflictSet<CHUNK_CAPACITY> {
    /// `new` for any chunk capacity (`ConflictSet::<8>::with_oldest_version(0)`).
    pub fn with_oldest_version(oldest_version: u64) -> Self {
        ConflictSet {
            boundaries: BoundaryMap::new(),
            oldest_version,
            newest_version: None,
            gc_cursor_chunk: 0,
            gc_debt_boundaries: 0,
            lookahead_transactions: 2,
            chunk_hints: Vec::new(),
        }
    }

    pub fn oldest_version(&self) -> u64 {
        self.oldest_version
    }

    /// The version of the latest `add_writes` call or committed transaction, if any.
    pub fn newest_version(&self) -> Option<u64> {
        self.newest_version
    }

    /// Checks one read against the history.
    pub fn check_read(&self, read: &ReadRange<'_>) -> ReadOutcome {
        if read.read_version < self.oldest_version {
            ReadOutcome::TooOld
        } else if self.intersects_newer(&read.range, read.read_version, NO_HINT) {
            ReadOutcome::Conflict
        } else {
            ReadOutcome::Ok
        }
    }

    /// Checks reads against the history, one outcome per read, in order.
    pub fn check(&self, reads: &[ReadRange<'_>]) -> Vec<ReadOutcome> {
        reads.iter().map(|read| self.check_read(read)).collect()
    }

    /// `chunk_hint`: where `range.begin` was last seen (`NO_HINT` if unknown).
    fn intersects_newer(&self, range: &KeyRange<'_>, read_version: u64, chunk_hint: usize) -> bool {
        (self.boundaries).any_newer_than(range.begin, range.end, read_version, chunk_hint)
    }

    /// Records `writes` at `version`, which must exceed every earlier write version and the
    /// oldest version.
    pub fn add_writes(&mut self, writes: &[KeyRange<'_>], version: u64) {
        self.add_writes_hinted(writes, version, &[]);
    }

    /// `chunk_hints[i]`: where `writes[i].end` was last seen (missing or `NO_HINT`: unknown).
    fn add_writes_hinted(&mut self, writes: &[KeyRange<'_>], version: u64, chunk_hints: &[usize]) {
        self.assert_next_version(version);
        self.newest_version = Some(version);
        for (index, write) in writes.iter().enumerate() {
            let chunk_hint = chunk_hints.get(index).copied().unwrap_or(NO_HINT);
            (self.boundaries).write(write.begin, write.end, version, chunk_hint);
        }
        self.gc_debt_boundaries += GC_EXAMINED_PER_WRITE * writes.len() as isize;
        self.collect_garbage_step();
    }

    fn assert_next_version(&self, version: u64) {
        assert!(
            self.newest_version.is_none_or(|newest| version > newest),
            "write version {version} does not exceed newest version {:?}",
            self.newest_version
        );
        assert!(
            version > self.oldest_version,
            "write version {version} does not exceed oldest version {}",
            self.oldest_version
        );
    }

    /// Raises the oldest version kept; reads below it become too old and history at or below it
    /// is forgotten as writes come in. A value below the current one is ignored.
    pub fn set_oldest_version(&mut self, oldest_version: u64) {
        self.oldest_version = self.oldest_version.max(oldest_version);
    }

    /// Decides a batch in order. `batch[i].1` is transaction `i`'s commit version; versions
    /// strictly increase and exceed the newest and oldest versions.
    pub fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome> {
        let Some(&(_, first_version)) = batch.first() else {
            return Vec::new();
        };
        self.assert_next_version(first_version);
        // Every history write is older than `first_version` and every write of this batch is at
        // least `first_version`, so reading as of `first_version - 1` at the latest sees exactly
        // the history newer than the read plus all earlier committed writes of the batch.
        let latest_read_version = first_version - 1;
        let lookahead = self.lookahead_transactions;
        let mut chunk_hints = std::mem::take(&mut self.chunk_hints);
        chunk_hints.clear();
        chunk_hints.resize(batch.len(), [NO_HINT; PREFETCH_RANGES_MAX]);
        let mut outcomes = Vec::with_capacity(batch.len());
        for (index, (transaction, version)) in batch.iter().enumerate() {
            if lookahead > 0 {
                if let Some((far, _)) = batch.get(index + 2 * lookahead) {
                    chunk_hints[index + 2 * lookahead] = self.prefetch_top_level(far);
                }
                if let Some((near, _)) = batch.get(index + lookahead) {
                    let stride_hints = chunk_hints[index + lookahead];
                    chunk_hints[index + lookahead] = self.prefetch_chunks(near, &stride_hints);
                }
            }
            let hints = &chunk_hints[index];
            outcomes.push(self.decide(transaction, *version, latest_read_version, hints));
        }
        self.chunk_hints = chunk_hints;
        outcomes
    }

    /// Calls `visit(slot, key, for_write)` for the keys whose chunks are prefetched for a
    /// transaction: the begin of its first reads, then the end of its first writes (the key
    /// each search starts from), `PREFETCH_RANGES_MAX` at most. Plain loops: the iterator chain
    /// this replaces cost more than the prefetches themselves.
    #[inline]
    fn for_each_prefetch_key(transaction: &TransactionRef<'_>, mut visit: impl FnMut(usize, &[u8], bool)) {
        // Empty ranges are prefetched too: a wasted prefetch costs less than the comparison.
        let reads = &transaction.reads[..transaction.reads.len().min(PREFETCH_RANGES_MAX)];
        for (slot, read) in reads.iter().enumerate() {
            visit(slot, read.range.begin, false);
        }
        let writes_max = PREFETCH_RANGES_MAX - reads.len();
        let writes = &transaction.writes[..transaction.writes.len().min(writes_max)];
        for (offset, write) in writes.iter().enumerate() {
            visit(reads.len() + offset, write.end, true);
        }
    }

    /// First stage of the prefetch pipeline: the part of the top level that the second stage
    /// will search; returns where each key's stride starts, as hints for the second stage.
    fn prefetch_top_level(&self, transaction: &TransactionRef<'_>) -> [usize; PREFETCH_RANGES_MAX] {
        let mut hints = [NO_HINT; PREFETCH_RANGES_MAX];
        Self::for_each_prefetch_key(transaction, |slot, key, _| {
            hints[slot] = self.boundaries.prefetch_top_level(key);
        });
        hints
    }

    /// Second stage: the chunks themselves; returns them as hints for the final search.
    /// `stride_hints`: what the first stage returned (`NO_HINT` where it did not run).
    fn prefetch_chunks(
        &self,
        transaction: &TransactionRef<'_>,
        stride_hints: &[usize; PREFETCH_RANGES_MAX],
    ) -> [usize; PREFETCH_RANGES_MAX] {
        let mut hints = [NO_HINT; PREFETCH_RANGES_MAX];
        Self::for_each_prefetch_key(transaction, |slot, key, for_write| {
            hints[slot] = self.boundaries.prefetch_chunk(key, for_write, stride_hints[slot]);
        });
        hints
    }

    /// Benchmark knob: how many transactions ahead `check_batch` prefetches (0: never).
    #[doc(hidden)]
    pub fn set_prefetch_lookahead(&mut self, lookahead_transactions: usize) {
        self.lookahead_transactions = lookahead_transactions;
    }

    /// `chunk_hints`: where the keys of `for_each_prefetch_key` were seen, if they were.
    fn decide(
        &mut self,
        transaction: &TransactionRef<'_>,
        version: u64,
        latest_read_version: u64,
        chunk_hints: &[usize; PREFETCH_RANGES_MAX],
    ) -> Outcome {
        if transaction.reads.iter().any(|read| read.read_version < self.oldest_version) {
            return Outcome::TooOld;
        }
        let read_indices: Vec<usize> = (transaction.reads.iter().enumerate())
            .filter(|(index, read)| {
                let read_version = read.read_version.min(latest_read_version);
                let chunk_hint = chunk_hints.get(*index).copied().unwrap_or(NO_HINT);
                self.intersects_newer(&read.range, read_version, chunk_hint)
            })
            .map(|(index, _)| index)
            .collect();
        if read_indices.is_empty() {
            let write_hints = chunk_hints.get(transaction.reads.len()..).unwrap_or(&[]);
            self.add_writes_hinted(transaction.writes, version, write_hints);
            Outcome::Committed
        } else {
            Outcome::Conflict { read_indices }
        }
    }

    /// Does the garbage collection owed by recent writes, one chunk at a time, round robin; a
    /// chunk examined beyond the debt is credited to later writes.
    fn collect_garbage_step(&mut self) {
        while self.gc_debt_boundaries > 0 {
            if self.gc_cursor_chunk >= self.boundaries.chunk_count() {
                self.gc_cursor_chunk = 0;
            }
            let examined = self.boundaries.collect_garbage(self.gc_cursor_chunk, self.oldest_version);
            self.gc_debt_boundaries -= examined.max(1) as isize;
            self.gc_cursor_chunk += 1;
        }
        // The next chunk to collect is cold; have it arrive while other writes proceed.
        self.boundaries.prefetch_chunk_at(self.gc_cursor_chunk);
    }

    /// Number of range boundaries stored (36 bytes each: head, version, length and tail word;
    /// chunks run 50-100% full, and keys longer than 24 bytes add the rest out of line).
    pub fn boundary_count(&self) -> usize {
        self.boundaries.boundary_count()
    }

    /// Heap bytes held, counting allocated capacity.
    pub fn memory_bytes(&self) -> usize {
        self.boundaries.memory_bytes()
    }

    #[cfg(test)]
    fn assert_invariants(&self) {
        self.boundaries.assert_invariants();
    }
}
