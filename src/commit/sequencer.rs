//! The sequencer's decision core: orders requests, assigns versions, and
//! decides each commit against the conflict set; answers status lookups in
//! the same order. Pure: no IO, no threads, no clock (time is an input).
//!
//! Invariants:
//! - Only the sequencer assigns versions; they strictly increase across
//!   calls, and a committed transaction's version is above every version
//!   committed before it.
//! - Requests are decided in the order given; a commit conflicts with the
//!   earlier commits of the same call exactly as with older ones.
//! - A request id commits at most once while it is remembered (duplicates
//!   get the original version).

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::conflict::{ConflictSet, KeyRange, Outcome, ReadRange, TransactionRef};
use super::parse::CommitRequest;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequencerConfig {
    /// Reads from this long ago are still checked (not `too_old`).
    pub conflict_window_ms: u64,
    /// ... and so are reads of the last this-many versions, whichever keeps more.
    pub conflict_window_versions: u64,
    /// Request ids remembered for duplicate detection and status lookups.
    pub request_index_capacity: usize,
}

/// What the log says at start-up.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// The version of the last transaction in the log (0 when empty).
    pub committed_version: u64,
    /// Request ids of the last transactions in the log, oldest first.
    pub recent_request_ids: Vec<(String, u64)>,
    /// The first version whose request id `recent_request_ids` includes:
    /// ids of older transactions must be looked up in the log.
    pub request_ids_from_version: u64,
    pub last_timestamp_ms: u64,
    /// The version the first transaction gets; when not past
    /// `committed_version` (e.g. 0), `committed_version + 1`. A new leader
    /// skips ahead of what a previous leader may still be writing (see
    /// `log::chain::first_version_after`).
    pub first_version: u64,
}

/// One request, in arrival order.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    Commit(&'a CommitRequest),
    Status { request_id: &'a str, min_version: Option<u64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCommittedReason {
    Conflict,
    TooOld,
    LeaderChanged,
}

impl NotCommittedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotCommittedReason::Conflict => "conflict",
            NotCommittedReason::TooOld => "too_old",
            NotCommittedReason::LeaderChanged => "leader_changed",
        }
    }
}

/// The decision on one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Committed at `version`, in this call's batch.
    Committed {
        version: u64,
    },
    /// Its request id already committed at `version`.
    Duplicate {
        version: u64,
    },
    /// `version` is a version to retry from.
    NotCommitted {
        reason: NotCommittedReason,
        conflicts: Vec<usize>,
        version: u64,
    },
    /// A 400: the request names a version the log has not reached.
    BadRequest(String),
    StatusCommitted {
        version: u64,
    },
    /// No transaction with the id is in the log from `min_version` to `version`.
    StatusNotCommitted {
        version: u64,
    },
    /// The id is not among the remembered ones, which start at `below`: the
    /// log from `min_version` up to `below` must be searched; if it is not
    /// there either, the answer is not committed at `version`.
    StatusSearchLog {
        min_version: u64,
        below: u64,
        version: u64,
    },
    /// `min_version` is older than the retained log.
    VersionTooOld {
        oldest_version: u64,
    },
}

pub struct Sequencer {
    config: SequencerConfig,
    leader_id: String,
    conflicts: ConflictSet,
    /// The last version given to any transaction (committed or not).
    last_assigned_version: u64,
    /// The first version this sequencer gives (see `Recovered::first_version`):
    /// the skipped versions before it do not count towards the version side
    /// of the conflict window.
    first_version: u64,
    /// The version of the last committed transaction.
    committed_version: u64,
    last_timestamp_ms: u64,
    /// (first version assigned at a time, that time), oldest first, for the
    /// time side of the conflict window.
    assigned_at: VecDeque<(u64, u64)>,
    request_ids: RequestIndex,
}

impl Sequencer {
    pub fn new(config: SequencerConfig, leader_id: String, recovered: Recovered) -> Self {
        let first_version = recovered.first_version.max(recovered.committed_version + 1);
        let mut request_ids = RequestIndex::new(config.request_index_capacity, recovered.request_ids_from_version);
        for (id, version) in recovered.recent_request_ids {
            request_ids.insert(&id, version);
        }
        Sequencer {
            config,
            leader_id,
            // History before the recovered tail is unknown: reads older than
            // it are too old to check.
            conflicts: ConflictSet::new(recovered.committed_version),
            last_assigned_version: first_version - 1,
            first_version,
            committed_version: recovered.committed_version,
            last_timestamp_ms: recovered.last_timestamp_ms,
            assigned_at: VecDeque::new(),
            request_ids,
        }
    }

    pub fn committed_version(&self) -> u64 {
        self.committed_version
    }

    pub fn leader_id(&self) -> &str {
        &self.leader_id
    }

    /// The timestamp of the transactions committed by the last `decide`:
    /// the clock, but never earlier than a previous batch's.
    pub fn last_timestamp_ms(&self) -> u64 {
        self.last_timestamp_ms
    }

    /// Decides `inputs` in order. `oldest_retained` is the oldest version the
    /// log still holds (for status lookups).
    pub fn decide(&mut self, now_ms: u64, oldest_retained: u64, inputs: &[Input<'_>]) -> Vec<Decision> {
        self.advance_conflict_window(now_ms);
        self.last_timestamp_ms = self.last_timestamp_ms.max(now_ms);
        let mut decisions: Vec<Option<Decision>> = vec![None; inputs.len()];
        // Commits waiting for the conflict check, with their ids' hashes.
        let mut pending: Vec<(usize, u64)> = Vec::new();
        let mut pending_ids: HashSet<&str, BatchIdHasher> = HashSet::default();
        for (index, input) in inputs.iter().enumerate() {
            match *input {
                Input::Commit(request) => {
                    // A second commit of an id waiting in this batch must see
                    // whether the first committed.
                    if pending_ids.contains(request.request_id()) {
                        self.check_pending(now_ms, inputs, &mut pending, &mut decisions);
                        pending_ids.clear();
                    }
                    let id_hash = self.request_ids.hash(request.request_id());
                    match self.precheck(request, id_hash) {
                        Some(decision) => decisions[index] = Some(decision),
                        None => {
                            pending.push((index, id_hash));
                            pending_ids.insert(request.request_id());
                        }
                    }
                }
                Input::Status { request_id, min_version } => {
                    self.check_pending(now_ms, inputs, &mut pending, &mut decisions);
                    pending_ids.clear();
                    decisions[index] = Some(self.status(request_id, min_version, oldest_retained));
                }
            }
        }
        self.check_pending(now_ms, inputs, &mut pending, &mut decisions);
        decisions.into_iter().map(|decision| decision.expect("every input is decided")).collect()
    }

    /// Decisions that need no conflict check: duplicates, a wrong leader,
    /// versions from the future.
    /// `id_hash`: the request id's hash in the index.
    fn precheck(&self, request: &CommitRequest, id_hash: u64) -> Option<Decision> {
        if let Some(version) = self.request_ids.get_hashed(id_hash, request.request_id()) {
            return Some(Decision::Duplicate { version });
        }
        if request.leader_id().is_some_and(|leader_id| leader_id != self.leader_id) {
            return Some(self.not_committed(NotCommittedReason::LeaderChanged, Vec::new()));
        }
        match request.newest_version_named() {
            Some((field, version)) if version > self.committed_version => Some(Decision::BadRequest(format!(
                "{field}: {version} is newer than the newest committed version {}",
                self.committed_version
            ))),
            _ => None,
        }
    }

    /// Runs the pending commits through the conflict set, each at its own
    /// version, and records their decisions.
    fn check_pending(
        &mut self,
        now_ms: u64,
        inputs: &[Input<'_>],
        pending: &mut Vec<(usize, u64)>,
        decisions: &mut [Option<Decision>],
    ) {
        if pending.is_empty() {
            return;
        }
        let requests: Vec<&CommitRequest> = pending
            .iter()
            .map(|&(index, _)| match inputs[index] {
                Input::Commit(request) => request,
                Input::Status { .. } => unreachable!("only commits are pending"),
            })
            .collect();
        let first_version = self.last_assigned_version + 1;
        let outcomes = check_batch(&mut self.conflicts, &requests, first_version);
        self.last_assigned_version = first_version + requests.len() as u64 - 1;
        self.note_assigned(first_version, now_ms);
        for (offset, ((&(index, id_hash), request), outcome)) in pending.iter().zip(&requests).zip(outcomes).enumerate()
        {
            let version = first_version + offset as u64;
            decisions[index] = Some(match outcome {
                Outcome::Committed => {
                    self.committed_version = version;
                    self.request_ids.insert_hashed(id_hash, request.request_id(), version);
                    Decision::Committed { version }
                }
                Outcome::Conflict { read_indices } => self.not_committed(NotCommittedReason::Conflict, read_indices),
                Outcome::TooOld => self.not_committed(NotCommittedReason::TooOld, Vec::new()),
            });
        }
        // The version to retry from is the newest committed after this batch.
        for &(index, _) in pending.iter() {
            if let Some(Decision::NotCommitted { version, .. }) = &mut decisions[index] {
                *version = self.committed_version;
            }
        }
        pending.clear();
    }

    fn not_committed(&self, reason: NotCommittedReason, conflicts: Vec<usize>) -> Decision {
        Decision::NotCommitted { reason, conflicts, version: self.committed_version }
    }

    fn status(&self, request_id: &str, min_version: Option<u64>, oldest_retained: u64) -> Decision {
        // Versions up to `oldest_retained` are deleted once it is above 0
        // (it is the version the retained log continues from).
        let first_retained = if oldest_retained == 0 { 0 } else { oldest_retained.saturating_add(1) };
        let min_version = min_version.unwrap_or(first_retained);
        if min_version < first_retained {
            return Decision::VersionTooOld { oldest_version: oldest_retained };
        }
        if min_version > self.committed_version {
            return Decision::BadRequest(format!(
                "min_version: {min_version} is newer than the newest committed version {}",
                self.committed_version
            ));
        }
        let version = self.committed_version;
        match self.request_ids.get(request_id) {
            Some(committed_at) if committed_at >= min_version => Decision::StatusCommitted { version: committed_at },
            Some(_) => Decision::StatusNotCommitted { version },
            None if min_version >= self.request_ids.covers_from_version() => Decision::StatusNotCommitted { version },
            None => Decision::StatusSearchLog { min_version, below: self.request_ids.covers_from_version(), version },
        }
    }

    /// Moves the oldest checkable version forward: reads of the last
    /// `conflict_window_versions` versions and of versions assigned in the
    /// last `conflict_window_ms` are kept, whichever keeps more.
    fn advance_conflict_window(&mut self, now_ms: u64) {
        let cutoff_ms = now_ms.saturating_sub(self.config.conflict_window_ms);
        while self.assigned_at.front().is_some_and(|&(_, at_ms)| at_ms < cutoff_ms) {
            self.assigned_at.pop_front();
        }
        // A read at version R needs only the writes after R, so a read just
        // before the first version of the window can still be checked.
        let last = self.last_assigned_version;
        let by_time = self.assigned_at.front().map_or(last, |&(version, _)| version - 1);
        // Versions skipped at start were never assigned: a window reaching
        // into them keeps everything this sequencer has seen.
        let by_versions = match last.saturating_sub(self.config.conflict_window_versions) {
            version if version < self.first_version => 0,
            version => version,
        };
        self.conflicts.set_oldest_version(by_time.min(by_versions));
    }

    fn note_assigned(&mut self, first_version: u64, now_ms: u64) {
        // One entry per millisecond is enough resolution for the window.
        if self.assigned_at.back().is_none_or(|&(_, at_ms)| at_ms < now_ms) {
            self.assigned_at.push_back((first_version, now_ms));
        }
    }
}

/// Builds the conflict set's view of the requests (one flat buffer of reads
/// and one of writes) and decides them at consecutive versions.
fn check_batch(conflicts: &mut ConflictSet, requests: &[&CommitRequest], first_version: u64) -> Vec<Outcome> {
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut spans = Vec::with_capacity(requests.len());
    for request in requests {
        let (reads_start, writes_start) = (reads.len(), writes.len());
        reads.extend(
            request
                .preconditions()
                .map(|read| ReadRange { range: KeyRange::new(read.begin, read.end), read_version: read.version }),
        );
        writes.extend(request.write_ranges().map(|(begin, end)| KeyRange::new(begin, end)));
        spans.push((reads_start..reads.len(), writes_start..writes.len()));
    }
    let batch: Vec<(TransactionRef<'_>, u64)> = spans
        .into_iter()
        .enumerate()
        .map(|(offset, (read_span, write_span))| {
            let transaction = TransactionRef { reads: &reads[read_span], writes: &writes[write_span] };
            (transaction, first_version + offset as u64)
        })
        .collect();
    conflicts.check_batch(&batch)
}

/// How the ids of one batch are hashed while it is decided: foldhash (with a
/// random seed), several times cheaper than SipHash. Ids come from clients
/// and foldhash does not claim to resist chosen collisions, but this set
/// lives for one batch and holds at most `commit.batch_transactions_max`
/// ids, which bounds what collisions could cost. The long-lived index
/// below keeps std's SipHash.
type BatchIdHasher = foldhash::quality::RandomState;

/// The request ids of the newest committed transactions and their
/// versions, at most `capacity` (the oldest are forgotten first);
/// `covers_from_version` says from which version on it is complete.
///
/// Ids come from clients, so they are hashed with SipHash under a key
/// chosen per process (`RandomState`), once per commit: the caller hashes
/// the id and passes the hash to both the lookup and the insertion. The
/// ids live in `order`, oldest first, in place (up to `INLINE_ID_BYTES`,
/// which covers UUIDs; longer ones are boxed), so that remembering one
/// allocates nothing; the table holds each id's hash and the sequence
/// number of its newest entry in `order`. Each table entry keeps its hash:
/// when the table clears out the tombstones that removals leave, entries
/// are moved, not hashed again. With std's `HashMap` that rehash hashed
/// 100,000 ids at once, about 20 ms during which no commit was decided
/// (`perf record` during a paced run, docs/benchmarks.md). The table is
/// also sized at the start for twice `capacity`, so it never grows and,
/// below half full, seldom needs a clean-up.
struct RequestIndex {
    capacity: usize,
    hasher: RandomState,
    /// (hash, sequence number of the id's newest entry in `order`).
    versions: HashTable<(u64, u64)>,
    /// Oldest first; `order[i]` has sequence number `first_sequence + i`.
    order: VecDeque<Remembered>,
    first_sequence: u64,
    covers_from_version: u64,
}

struct Remembered {
    version: u64,
    hash: u64,
    id: IdBytes,
}

/// Ids up to this many bytes are kept in place (a UUID has 36).
const INLINE_ID_BYTES: usize = 46;

/// A request id's bytes (ids are ASCII; they are only compared).
enum IdBytes {
    Inline { len: u8, bytes: [u8; INLINE_ID_BYTES] },
    Boxed(Box<[u8]>),
}

impl IdBytes {
    fn new(id: &str) -> Self {
        let id = id.as_bytes();
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID_BYTES => {
                let mut bytes = [0; INLINE_ID_BYTES];
                bytes[..id.len()].copy_from_slice(id);
                IdBytes::Inline { len, bytes }
            }
            _ => IdBytes::Boxed(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            IdBytes::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IdBytes::Boxed(bytes) => bytes,
        }
    }
}

impl RequestIndex {
    fn new(capacity: usize, covers_from_version: u64) -> Self {
        RequestIndex {
            capacity,
            hasher: RandomState::new(),
            versions: HashTable::with_capacity(capacity.saturating_mul(2)),
            order: VecDeque::with_capacity(capacity),
            first_sequence: 0,
            covers_from_version,
        }
    }

    fn hash(&self, request_id: &str) -> u64 {
        self.hasher.hash_one(request_id)
    }

    fn get(&self, request_id: &str) -> Option<u64> {
        self.get_hashed(self.hash(request_id), request_id)
    }

    /// `get` with the id's `hash` (from [`RequestIndex::hash`]).
    fn get_hashed(&self, hash: u64, request_id: &str) -> Option<u64> {
        let entry = |sequence: u64| &self.order[(sequence - self.first_sequence) as usize];
        self.versions
            .find(hash, |&(found, sequence)| found == hash && entry(sequence).id.as_bytes() == request_id.as_bytes())
            .map(|&(_, sequence)| entry(sequence).version)
    }

    fn insert(&mut self, request_id: &str, version: u64) {
        self.insert_hashed(self.hash(request_id), request_id, version);
    }

    /// `insert` with the id's `hash` (from [`RequestIndex::hash`]).
    fn insert_hashed(&mut self, hash: u64, request_id: &str, version: u64) {
        if self.capacity == 0 {
            self.covers_from_version = version + 1;
            return;
        }
        let RequestIndex { capacity, versions, order, first_sequence, covers_from_version, .. } = self;
        while order.len() >= *capacity {
            if let Some(forgotten) = order.pop_front() {
                let sequence = *first_sequence;
                *first_sequence += 1;
                // Only this very entry: an id given again later is a newer one.
                if let Ok(entry) = versions.find_entry(forgotten.hash, |&(_, found)| found == sequence) {
                    entry.remove();
                }
                *covers_from_version = forgotten.version + 1;
            }
        }
        let sequence = *first_sequence + order.len() as u64;
        let same_id = |&(found, other): &(u64, u64)| {
            found == hash && order[(other - *first_sequence) as usize].id.as_bytes() == request_id.as_bytes()
        };
        match versions.entry(hash, same_id, |&(found, _)| found) {
            hashbrown::hash_table::Entry::Occupied(mut occupied) => occupied.get_mut().1 = sequence,
            hashbrown::hash_table::Entry::Vacant(vacant) => {
                vacant.insert((hash, sequence));
            }
        }
        order.push_back(Remembered { version, hash, id: IdBytes::new(request_id) });
    }

    fn covers_from_version(&self) -> u64 {
        self.covers_from_version
    }
}

#[cfg(test)]
mod tests;
