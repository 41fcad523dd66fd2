//! Differential tests: the conflict set against the naive reference on random workloads.
//!
//! `STOAT_CONFLICT_OPS=<n>` sets the operation count of the ignored long run;
//! `STOAT_CONFLICT_SEED=<seed>` replays one seed. A failure prints its seed.

use crate::random::SplitMix64;
use proptest::prelude::*;

use super::reference::ReferenceConflictSet;
use super::{ConflictSet, KeyRange, Outcome, ReadOutcome, ReadRange, TransactionRef};

/// Shapes of generated keys; each makes different comparisons hard.
#[derive(Clone, Copy, Debug)]
enum KeyShape {
    /// 0 to 3 bytes from {0x00, 0x01, 'a', 0xff}: collisions, prefixes, empty keys.
    Short,
    /// 14 to 16, or 22 to 24, bytes of 'p' then 0 to 3 bytes: keys whose 16-byte heads tie, and
    /// keys whose first 24 bytes (head and tail word) tie.
    LongSharedPrefix,
    /// Both, plus occasional 40-byte keys and keys starting with sixteen 0xff bytes.
    Mixed,
}

struct Workload {
    random: SplitMix64,
    shape: KeyShape,
    recent_keys: Vec<Vec<u8>>,
}

impl Workload {
    fn short_key(&mut self, max_len: u64) -> Vec<u8> {
        const ALPHABET: [u8; 4] = [0x00, 0x01, b'a', 0xff];
        let len = self.random.below(max_len + 1);
        (0..len).map(|_| ALPHABET[self.random.below(4) as usize]).collect()
    }

    fn fresh_key(&mut self) -> Vec<u8> {
        let shape = match self.shape {
            KeyShape::Mixed if self.random.chance(50) => KeyShape::Short,
            KeyShape::Mixed if self.random.chance(5) => return vec![b'q'; 40],
            // All-0xff heads equal the marker of unused slots.
            KeyShape::Mixed if self.random.chance(5) => {
                let mut key = vec![0xff; 16];
                key.extend(self.short_key(2));
                return key;
            }
            KeyShape::Mixed => KeyShape::LongSharedPrefix,
            shape => shape,
        };
        match shape {
            KeyShape::LongSharedPrefix => {
                const PREFIX_LENS: [usize; 6] = [14, 15, 16, 22, 23, 24];
                let mut key = vec![b'p'; PREFIX_LENS[self.random.below(6) as usize]];
                key.extend(self.short_key(3));
                key
            }
            _ => self.short_key(3),
        }
    }

    /// A key, often one used recently so that ranges touch and nest.
    fn key(&mut self) -> Vec<u8> {
        if !self.recent_keys.is_empty() && self.random.chance(40) {
            let index = self.random.below(self.recent_keys.len() as u64) as usize;
            return self.recent_keys[index].clone();
        }
        let key = self.fresh_key();
        if self.recent_keys.len() < 32 {
            self.recent_keys.push(key.clone());
        } else {
            let index = self.random.below(32) as usize;
            self.recent_keys[index] = key.clone();
        }
        key
    }

    /// A range: a point, an arbitrary (possibly empty or inverted) pair, or a sorted pair.
    fn range(&mut self) -> (Vec<u8>, Vec<u8>) {
        let begin = self.key();
        match self.random.below(4) {
            0 => {
                let mut end = begin.clone();
                end.push(0);
                (begin, end)
            }
            1 => (begin, self.key()),
            _ => {
                let other = self.key();
                (begin.clone().min(other.clone()), begin.max(other))
            }
        }
    }
}

fn as_ranges(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<KeyRange<'_>> {
    pairs.iter().map(|(begin, end)| KeyRange::new(begin, end)).collect()
}

/// An owned key range `(begin, end)`.
type OwnedRange = (Vec<u8>, Vec<u8>);

/// Owned form of one generated transaction.
struct OwnedTransaction {
    reads: Vec<(OwnedRange, u64)>,
    writes: Vec<OwnedRange>,
}

/// The two implementations driven in lockstep, with version bookkeeping.
struct Lockstep<const CAP: usize> {
    subject: ConflictSet<CAP>,
    reference: ReferenceConflictSet,
    newest_version: u64,
    operations: u64,
}

impl<const CAP: usize> Lockstep<CAP> {
    fn new(oldest_version: u64) -> Self {
        Lockstep {
            subject: ConflictSet::with_oldest_version(oldest_version),
            reference: ReferenceConflictSet::new(oldest_version),
            newest_version: oldest_version,
            operations: 0,
        }
    }

    fn read_version(&self, workload: &mut Workload) -> u64 {
        let oldest = self.subject.oldest_version();
        let low = oldest.saturating_sub(2);
        low + workload.random.below(self.newest_version + 3 - low)
    }

    fn next_version(&mut self, workload: &mut Workload) -> u64 {
        self.newest_version += 1 + workload.random.below(3);
        self.newest_version
    }

    fn step(&mut self, workload: &mut Workload) {
        match workload.random.below(10) {
            0..=4 => self.batch(workload),
            5 => self.writes(workload),
            6..=7 => self.reads(workload),
            _ => self.move_oldest(workload),
        }
    }

    fn transaction(&self, workload: &mut Workload) -> OwnedTransaction {
        let shared_read_version = self.read_version(workload);
        let read_count = workload.random.below(4);
        let reads = (0..read_count)
            .map(|_| {
                let version = match workload.random.chance(70) {
                    true => shared_read_version,
                    false => self.read_version(workload),
                };
                (workload.range(), version)
            })
            .collect();
        let write_count = workload.random.below(4);
        let writes = (0..write_count).map(|_| workload.range()).collect();
        OwnedTransaction { reads, writes }
    }

    fn batch(&mut self, workload: &mut Workload) {
        let size = match workload.random.chance(10) {
            true => 1 + workload.random.below(40),
            false => 1 + workload.random.below(6),
        };
        let owned: Vec<OwnedTransaction> = (0..size).map(|_| self.transaction(workload)).collect();
        let reads: Vec<Vec<ReadRange<'_>>> =
            (owned.iter()).map(|txn| txn.reads.iter().map(|((b, e), v)| read(b, e, *v)).collect()).collect();
        let writes: Vec<Vec<KeyRange<'_>>> = owned.iter().map(|txn| as_ranges(&txn.writes)).collect();
        let batch: Vec<(TransactionRef<'_>, u64)> = (reads.iter().zip(&writes))
            .map(|(reads, writes)| (TransactionRef { reads, writes }, self.next_version(workload)))
            .collect();
        let expected = self.reference.check_batch(&batch);
        let actual = self.subject.check_batch(&batch);
        assert_eq!(actual, expected, "batch {batch:?}");
        self.operations += batch.len() as u64;
    }

    fn writes(&mut self, workload: &mut Workload) {
        let pairs: Vec<_> = (0..workload.random.below(4)).map(|_| workload.range()).collect();
        let version = self.next_version(workload);
        self.subject.add_writes(&as_ranges(&pairs), version);
        self.reference.add_writes(&as_ranges(&pairs), version);
        self.operations += 1;
    }

    fn reads(&mut self, workload: &mut Workload) {
        let owned: Vec<_> =
            (0..1 + workload.random.below(4)).map(|_| (workload.range(), self.read_version(workload))).collect();
        let reads: Vec<ReadRange<'_>> = owned.iter().map(|((b, e), v)| read(b, e, *v)).collect();
        assert_eq!(self.subject.check(&reads), self.reference.check(&reads), "reads {reads:?}");
        self.operations += reads.len() as u64;
    }

    fn move_oldest(&mut self, workload: &mut Workload) {
        let oldest = self.subject.oldest_version();
        // Mostly trail the newest version by a small window; sometimes jump past it or go back.
        let target = match workload.random.below(10) {
            0 => oldest.saturating_sub(3),
            1 => self.newest_version + 2,
            _ => self.newest_version.saturating_sub(workload.random.below(12)),
        };
        self.subject.set_oldest_version(target);
        self.reference.set_oldest_version(target);
        self.newest_version = self.newest_version.max(self.subject.oldest_version());
        self.operations += 1;
    }
}

fn read<'a>(begin: &'a [u8], end: &'a [u8], read_version: u64) -> ReadRange<'a> {
    ReadRange { range: KeyRange::new(begin, end), read_version }
}

/// Runs `steps` random steps from `seed`; returns the number of operations compared.
fn run_seed(seed: u64, steps: u64) -> u64 {
    let mut random = SplitMix64::new(seed);
    let shape = [KeyShape::Short, KeyShape::LongSharedPrefix, KeyShape::Mixed][random.below(3) as usize];
    let chunk_capacity = [6, 7, 10, 64][random.below(4) as usize];
    let mut workload = Workload { random, shape, recent_keys: Vec::new() };
    match chunk_capacity {
        6 => run_lockstep::<6>(&mut workload, steps),
        7 => run_lockstep::<7>(&mut workload, steps),
        10 => run_lockstep::<10>(&mut workload, steps),
        _ => run_lockstep::<64>(&mut workload, steps),
    }
}

fn run_lockstep<const CAP: usize>(workload: &mut Workload, steps: u64) -> u64 {
    let mut lockstep = Lockstep::<CAP>::new(workload.random.below(5));
    // Prefetch hints go stale when chunks split or merge; vary how far ahead they are taken.
    (lockstep.subject).set_prefetch_lookahead(workload.random.below(4) as usize);
    for step in 0..steps {
        lockstep.step(workload);
        if step % 64 == 0 {
            lockstep.subject.assert_invariants();
        }
    }
    lockstep.subject.assert_invariants();
    lockstep.operations
}

/// Runs seeds until `operations_min` operations were compared, printing the failing seed.
fn run_seeds(first_seed: u64, steps_per_seed: u64, operations_min: u64) -> u64 {
    let mut operations = 0;
    let mut seed = first_seed;
    while operations < operations_min {
        let result = std::panic::catch_unwind(|| run_seed(seed, steps_per_seed));
        match result {
            Ok(count) => operations += count,
            Err(panic) => {
                eprintln!("conflict set differential test failed: STOAT_CONFLICT_SEED={seed} (steps {steps_per_seed})");
                std::panic::resume_unwind(panic);
            }
        }
        seed += 1;
    }
    operations
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|value| value.parse().expect("an integer"))
}

#[test]
fn differential_random_workloads() {
    if let Some(seed) = env_u64("STOAT_CONFLICT_SEED") {
        run_seed(seed, 2_000);
        return;
    }
    let operations = run_seeds(1, 2_000, 1_000_000);
    eprintln!("compared {operations} operations");
}

/// The long run: `STOAT_CONFLICT_OPS` operations (default ten million); run it in release.
#[test]
#[ignore = "long: cargo test --release -- --ignored"]
fn differential_random_workloads_long() {
    let operations_min = env_u64("STOAT_CONFLICT_OPS").unwrap_or(10_000_000);
    let operations = run_seeds(1_000_000, 20_000, operations_min);
    eprintln!("compared {operations} operations");
}

fn point_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    end.push(0);
    end
}

#[test]
fn point_read_sees_only_its_key() {
    let mut set = ConflictSet::new(0);
    set.add_writes(&[KeyRange::new(b"a", b"a\x00")], 5);
    let outcome = |key: &[u8], version| set.check_read(&read(key, &point_end(key), version));
    assert_eq!(outcome(b"a", 4), ReadOutcome::Conflict);
    assert_eq!(outcome(b"a", 5), ReadOutcome::Ok);
    assert_eq!(outcome(b"a\x00", 0), ReadOutcome::Ok);
    assert_eq!(outcome(b"", 0), ReadOutcome::Ok);
}

#[test]
fn adjacent_and_empty_ranges_do_not_intersect() {
    let mut set = ConflictSet::new(0);
    set.add_writes(&[KeyRange::new(b"b", b"c"), KeyRange::new(b"x", b"x")], 3);
    assert_eq!(set.check_read(&read(b"a", b"b", 0)), ReadOutcome::Ok);
    assert_eq!(set.check_read(&read(b"c", b"d", 0)), ReadOutcome::Ok);
    assert_eq!(set.check_read(&read(b"a", b"b\x00", 0)), ReadOutcome::Conflict);
    assert_eq!(set.check_read(&read(b"c", b"b", 0)), ReadOutcome::Ok);
    assert_eq!(set.check_read(&read(b"w", b"y", 0)), ReadOutcome::Ok);
}

#[test]
fn batch_reports_conflicting_indices_and_too_old() {
    let mut set = ConflictSet::new(10);
    let first_writes = [KeyRange::new(b"k", b"l")];
    let second_reads = [read(b"a", b"b", 10), read(b"k", b"k\x00", 10)];
    let old_reads = [read(b"z", b"zz", 9)];
    let batch = [
        (TransactionRef { reads: &[], writes: &first_writes }, 11),
        (TransactionRef { reads: &second_reads, writes: &first_writes }, 12),
        (TransactionRef { reads: &old_reads, writes: &[] }, 13),
    ];
    let outcomes = set.check_batch(&batch);
    assert_eq!(outcomes[0], Outcome::Committed);
    assert_eq!(outcomes[1], Outcome::Conflict { read_indices: vec![1] });
    assert_eq!(outcomes[2], Outcome::TooOld);
    assert_eq!(set.newest_version(), Some(11));
}

/// A long run with the oldest version trailing the newest keeps the boundary count and the
/// memory flat: forgotten history is reclaimed.
#[test]
fn memory_stays_flat_as_oldest_version_advances() {
    let mut random = SplitMix64::new(7);
    let mut set = ConflictSet::new(0);
    let window_versions = 1_000;
    let mut peak_after_warmup = (0, 0);
    let mut peak_late = (0, 0);
    for version in 1..=200_000u64 {
        let key = (random.below(1 << 40)).to_be_bytes();
        set.add_writes(&[KeyRange::new(&key, &point_end(&key))], version);
        set.set_oldest_version(version.saturating_sub(window_versions));
        let usage = (set.boundary_count(), set.memory_bytes());
        let peak = if version <= 20_000 { &mut peak_after_warmup } else { &mut peak_late };
        *peak = (peak.0.max(usage.0), peak.1.max(usage.1));
    }
    // One write adds at most two boundaries; a sweep of the collector takes a few thousand
    // writes, so a few times the window bounds the count.
    assert!(peak_late.0 <= 10 * window_versions as usize, "boundaries {peak_late:?}");
    assert!(peak_late.0 <= peak_after_warmup.0 * 3 / 2, "{peak_late:?} vs {peak_after_warmup:?}");
    assert!(peak_late.1 <= peak_after_warmup.1 * 3 / 2, "{peak_late:?} vs {peak_after_warmup:?}");
}

/// A read `(begin, end, lag)` whose version is `lag` below the newest version.
type LaggedRead = (Vec<u8>, Vec<u8>, u64);

/// Operations for the proptest below (which shrinks failures to a minimal sequence).
#[derive(Clone, Debug)]
enum Op {
    Writes(Vec<(Vec<u8>, Vec<u8>)>),
    Reads(Vec<LaggedRead>),
    Batch(Vec<(Vec<LaggedRead>, Vec<OwnedRange>)>),
    Oldest(u64),
}

/// Short keys, or short keys after a shared prefix of 15, 16, 23 or 24 bytes (where the head and
/// the tail word end).
fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop::sample::select(vec![0usize, 0, 15, 16, 23, 24]);
    let short = prop::collection::vec(prop::sample::select(vec![0u8, 1, b'a', 0xff]), 0..4);
    (prefix, short).prop_map(|(prefix_len, short)| {
        let mut key = vec![b'p'; prefix_len];
        key.extend(short);
        key
    })
}

fn range_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    (key_strategy(), key_strategy())
}

fn read_strategy() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, u64)> {
    (key_strategy(), key_strategy(), 0u64..8).prop_map(|(b, e, lag)| (b, e, lag))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let transaction = (prop::collection::vec(read_strategy(), 0..3), prop::collection::vec(range_strategy(), 0..3));
    prop_oneof![
        prop::collection::vec(range_strategy(), 0..3).prop_map(Op::Writes),
        prop::collection::vec(read_strategy(), 1..3).prop_map(Op::Reads),
        prop::collection::vec(transaction, 1..4).prop_map(Op::Batch),
        (0u64..6).prop_map(Op::Oldest),
    ]
}

/// Replays proptest operations; read versions are given as a lag behind the newest version.
fn replay(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut lockstep = Lockstep::<6>::new(0);
    let version_for = |lockstep: &Lockstep<6>, lag: u64| lockstep.newest_version.saturating_sub(lag);
    for op in ops {
        match op {
            Op::Writes(pairs) => {
                lockstep.newest_version += 1;
                lockstep.subject.add_writes(&as_ranges(pairs), lockstep.newest_version);
                lockstep.reference.add_writes(&as_ranges(pairs), lockstep.newest_version);
            }
            Op::Reads(reads) => {
                let reads: Vec<_> = reads.iter().map(|(b, e, lag)| read(b, e, version_for(&lockstep, *lag))).collect();
                prop_assert_eq!(lockstep.subject.check(&reads), lockstep.reference.check(&reads));
            }
            Op::Batch(transactions) => {
                let reads: Vec<Vec<_>> = (transactions.iter())
                    .map(|(reads, _)| {
                        reads.iter().map(|(b, e, lag)| read(b, e, version_for(&lockstep, *lag))).collect()
                    })
                    .collect();
                let writes: Vec<Vec<_>> = transactions.iter().map(|(_, writes)| as_ranges(writes)).collect();
                let first_version = lockstep.newest_version + 1;
                let batch: Vec<_> = (reads.iter().zip(&writes).enumerate())
                    .map(|(index, (reads, writes))| (TransactionRef { reads, writes }, first_version + index as u64))
                    .collect();
                lockstep.newest_version += batch.len() as u64;
                prop_assert_eq!(lockstep.subject.check_batch(&batch), lockstep.reference.check_batch(&batch));
            }
            Op::Oldest(lag) => {
                let target = lockstep.newest_version.saturating_sub(*lag);
                lockstep.subject.set_oldest_version(target);
                lockstep.reference.set_oldest_version(target);
            }
        }
        lockstep.subject.assert_invariants();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn proptest_matches_reference(ops in prop::collection::vec(op_strategy(), 1..60)) {
        replay(&ops)?;
    }
}
