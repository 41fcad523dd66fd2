//! Tests of the persister: ordering, bounds, retries, fencing, and a seeded
//! random run against a model store that fails on purpose.

use std::collections::BTreeMap;

use super::*;
use crate::commit::transaction::OperationRef;
use crate::log::chain;
use crate::log::format::BatchEncoder;

fn config(max_in_flight: usize) -> PersisterConfig {
    PersisterConfig {
        max_in_flight,
        backoff_initial_ms: 100,
        backoff_max_ms: 1_000,
        attempts_max: u32::MAX,
        jitter_seed: 7,
    }
}

/// A batch of one transaction per version in `first..=last`.
fn batch(prev_version: u64, first: u64, last: u64, leader_id: &str) -> EncodedBatch {
    let mut encoder = BatchEncoder::new(leader_id, prev_version);
    for version in first..=last {
        let key = version.to_le_bytes();
        encoder.push(version, &format!("r{version}"), 0, [OperationRef::Delete { key: &key }]);
    }
    encoder.finish()
}

fn drain(persister: &mut Persister) -> Vec<Action> {
    std::iter::from_fn(|| persister.next_action()).collect()
}

/// The op ids of the `Submit`s among `actions`, in order.
fn submitted_all(actions: &[Action]) -> Vec<OpId> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Submit { op_id, .. } => Some(*op_id),
            _ => None,
        })
        .collect()
}

/// The op id of the one `Submit` among `actions`.
fn submitted(actions: &[Action]) -> OpId {
    let ids = submitted_all(actions);
    assert_eq!(ids.len(), 1, "{actions:?}");
    ids[0]
}

fn durable_versions(actions: &[Action]) -> Vec<u64> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::DurableAdvanced { durable_version, .. } => Some(*durable_version),
            _ => None,
        })
        .collect()
}

fn done(op_id: OpId, result: Result<OpOutput, StoreError>) -> Completion {
    Completion { op_id, result }
}

fn transient() -> StoreError {
    StoreError::transient("timeout")
}

/// A persister that started after `start` and has made its first batch
/// (`start + 1`) durable, so later batches may be written alongside others.
fn writing_alongside(max_in_flight: usize, start: u64) -> Persister {
    let mut persister = Persister::new(config(max_in_flight), start);
    persister.batch_ready(batch(start, start + 1, start + 1, "a")).unwrap();
    let op_id = submitted(&drain(&mut persister));
    persister.completed(done(op_id, Ok(OpOutput::Created)), 0);
    assert_eq!(durable_versions(&drain(&mut persister)), [start + 1]);
    persister
}

#[test]
fn durable_version_advances_in_order_despite_out_of_order_completions() {
    let mut persister = writing_alongside(4, 9);
    let mut ids = Vec::new();
    for (prev, first, last) in [(10, 11, 12), (12, 13, 15), (15, 16, 16)] {
        persister.batch_ready(batch(prev, first, last, "a")).unwrap();
        ids.push(submitted(&drain(&mut persister)));
    }
    persister.completed(done(ids[2], Ok(OpOutput::Created)), 0);
    persister.completed(done(ids[1], Ok(OpOutput::Created)), 0);
    assert!(drain(&mut persister).is_empty());
    assert_eq!(persister.durable_version(), 10);
    persister.completed(done(ids[0], Ok(OpOutput::Created)), 0);
    assert_eq!(durable_versions(&drain(&mut persister)), [12, 15, 16]);
    assert_eq!((persister.durable_version(), persister.in_flight()), (16, 0));
}

#[test]
fn the_first_batch_and_batches_past_the_version_window_are_written_alone() {
    let mut persister = Persister::new(config(4), 100);
    persister.batch_ready(batch(100, 101, 101, "a")).unwrap();
    let first = submitted(&drain(&mut persister));
    persister.batch_ready(batch(101, 102, 102, "a")).unwrap();
    assert!(drain(&mut persister).is_empty(), "held until the first batch is durable");
    persister.completed(done(first, Ok(OpOutput::Created)), 0);
    let actions = drain(&mut persister);
    assert_eq!(durable_versions(&actions), [101]);
    let second = submitted(&actions);
    // Within the window of the durable version: written alongside.
    let near = 101 + chain::VERSION_WINDOW;
    persister.batch_ready(batch(102, near, near, "a")).unwrap();
    let third = submitted(&drain(&mut persister));
    // Past it: held until everything before it is durable, and the batches
    // after it wait behind it.
    persister.batch_ready(batch(near, near + 1, near + 1, "a")).unwrap();
    persister.batch_ready(batch(near + 1, near + 2, near + 2, "a")).unwrap();
    assert!(drain(&mut persister).is_empty());
    persister.completed(done(third, Ok(OpOutput::Created)), 0);
    assert!(drain(&mut persister).is_empty(), "the second batch is not durable yet");
    persister.completed(done(second, Ok(OpOutput::Created)), 0);
    let actions = drain(&mut persister);
    assert_eq!(durable_versions(&actions), [102, near]);
    // Now the held batch is first, and the one behind it is near the new
    // durable version: both are written.
    let ids = submitted_all(&actions);
    assert_eq!(ids.len(), 2, "{actions:?}");
    persister.completed(done(ids[1], Ok(OpOutput::Created)), 0);
    persister.completed(done(ids[0], Ok(OpOutput::Created)), 0);
    assert_eq!(durable_versions(&drain(&mut persister)), [near + 1, near + 2]);
}

#[test]
fn in_flight_is_bounded_and_waiting_retries_count() {
    let mut persister = Persister::new(config(2), 0);
    persister.batch_ready(batch(0, 1, 1, "a")).unwrap();
    let first = submitted(&drain(&mut persister));
    persister.batch_ready(batch(1, 2, 2, "a")).unwrap();
    drain(&mut persister);
    assert!(!persister.can_accept());
    assert_eq!(persister.batch_ready(batch(2, 3, 3, "a")), Err(Rejected::Full));
    persister.completed(done(first, Err(transient())), 0);
    assert!(!persister.can_accept(), "a batch waiting to retry is still in flight");
    let retry_at_ms = persister.next_retry_at_ms().unwrap();
    persister.tick(retry_at_ms);
    let op_id = submitted(&drain(&mut persister));
    persister.completed(done(op_id, Ok(OpOutput::Created)), retry_at_ms);
    assert_eq!(durable_versions(&drain(&mut persister)), [1]);
    assert!(persister.can_accept());
}

#[test]
fn transient_failures_retry_with_growing_jittered_backoff() {
    let mut persister = Persister::new(config(1), 0);
    persister.batch_ready(batch(0, 1, 1, "a")).unwrap();
    let mut op_id = submitted(&drain(&mut persister));
    let mut now_ms = 1_000;
    for (attempt, capped_ms) in [(1u32, 100u64), (2, 200), (3, 400), (4, 800), (5, 1_000), (6, 1_000)] {
        persister.completed(done(op_id, Err(transient())), now_ms);
        let actions = drain(&mut persister);
        let [Action::RetryAt { at_ms }] = actions.as_slice() else { panic!("attempt {attempt}: {actions:?}") };
        let delay_ms = at_ms - now_ms;
        assert!((capped_ms / 2..=capped_ms).contains(&delay_ms), "attempt {attempt}: {delay_ms} ms");
        persister.tick(at_ms - 1);
        assert!(drain(&mut persister).is_empty(), "not before its time");
        now_ms = *at_ms;
        persister.tick(now_ms);
        op_id = submitted(&drain(&mut persister));
    }
    persister.completed(done(op_id, Ok(OpOutput::Created)), now_ms);
    assert_eq!(durable_versions(&drain(&mut persister)), [1]);
}

#[test]
fn running_out_of_attempts_or_a_permanent_error_fails() {
    let mut persister = Persister::new(PersisterConfig { attempts_max: 2, ..config(2) }, 0);
    persister.batch_ready(batch(0, 1, 1, "a")).unwrap();
    let op_id = submitted(&drain(&mut persister));
    persister.completed(done(op_id, Err(transient())), 0);
    drain(&mut persister);
    persister.tick(u64::MAX);
    let op_id = submitted(&drain(&mut persister));
    persister.completed(done(op_id, Err(transient())), 0);
    assert!(matches!(drain(&mut persister).as_slice(), [Action::Failed { first_version: 1, .. }]));
    assert!(persister.is_stopped());

    let mut persister = Persister::new(config(2), 0);
    persister.batch_ready(batch(0, 1, 1, "a")).unwrap();
    let op_id = submitted(&drain(&mut persister));
    persister.completed(done(op_id, Err(StoreError::permanent("denied"))), 0);
    assert!(matches!(drain(&mut persister).as_slice(), [Action::Failed { .. }]));
}

#[test]
fn another_leaders_object_fences_and_nothing_more_is_durable() {
    let mut persister = writing_alongside(4, 0);
    persister.batch_ready(batch(1, 2, 2, "a")).unwrap();
    let first = submitted(&drain(&mut persister));
    persister.batch_ready(batch(2, 3, 3, "a")).unwrap();
    let second = submitted(&drain(&mut persister));
    persister.completed(done(second, Ok(OpOutput::Created)), 0);
    persister.completed(done(first, Err(StoreError::AlreadyExists { name: batch_name(2) })), 0);
    let actions = drain(&mut persister);
    let [Action::Submit { op_id: verify, op: ObjectOp::Get { name, range: None } }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(name, &batch_name(2));
    let theirs = batch(1, 2, 2, "b").bytes.to_vec();
    persister.completed(done(*verify, Ok(OpOutput::Bytes(theirs))), 0);
    let actions = drain(&mut persister);
    let [Action::Fenced { first_version: 2, winner_leader_id, .. }] = actions.as_slice() else { panic!("{actions:?}") };
    assert_eq!(winner_leader_id.as_deref(), Some("b"), "the winning object's leader");
    assert_eq!(persister.durable_version(), 1);
    assert_eq!(persister.batch_ready(batch(3, 4, 4, "a")), Err(Rejected::Stopped));
    persister.completed(done(first, Ok(OpOutput::Created)), 0);
    assert!(drain(&mut persister).is_empty());
}

#[test]
fn a_retry_that_finds_its_own_lost_write_succeeds() {
    let mut persister = Persister::new(config(1), 0);
    persister.batch_ready(batch(0, 1, 3, "a")).unwrap();
    let actions = drain(&mut persister);
    let [Action::Submit { op_id, op: ObjectOp::PutIfAbsent { bytes: ours, .. } }] = actions.as_slice() else {
        panic!()
    };
    // The put happened but its reply was lost.
    persister.completed(done(*op_id, Err(transient())), 0);
    drain(&mut persister);
    persister.tick(u64::MAX);
    let retry = submitted(&drain(&mut persister));
    persister.completed(done(retry, Err(StoreError::AlreadyExists { name: batch_name(1) })), 0);
    let verify = submitted(&drain(&mut persister));
    persister.completed(done(verify, Err(transient())), 0);
    drain(&mut persister);
    persister.tick(u64::MAX);
    let verify = submitted(&drain(&mut persister));
    persister.completed(done(verify, Ok(OpOutput::Bytes(ours.to_vec()))), 0);
    assert_eq!(durable_versions(&drain(&mut persister)), [3]);
}

/// A model object store with faults, driven step by step from a seed.
struct ModelRun {
    random: SplitMix64,
    objects: BTreeMap<String, Vec<u8>>,
    /// Submitted, not yet completed.
    pending: Vec<(OpId, ObjectOp)>,
    now_ms: u64,
    next_version: u64,
    /// (first_version, last_version, bytes) reported durable, in order.
    durable: Vec<(u64, u64, ObjectBytes)>,
    stopped: bool,
    max_in_flight: usize,
}

impl ModelRun {
    fn chance(&mut self, percent: u64) -> bool {
        self.random.next_u64() % 100 < percent
    }

    /// Runs one completion against the model with a random fault: fail
    /// before applying, or apply and lose the reply.
    fn complete(&mut self, persister: &mut Persister) {
        let index = (self.random.next_u64() % self.pending.len() as u64) as usize;
        let (op_id, op) = self.pending.swap_remove(index);
        let result = if self.chance(15) { Err(transient()) } else { self.apply(op.clone()) };
        let result = if result.is_ok() && self.chance(10) { Err(transient()) } else { result };
        persister.completed(Completion { op_id, result }, self.now_ms);
    }

    fn apply(&mut self, op: ObjectOp) -> Result<OpOutput, StoreError> {
        match op {
            ObjectOp::PutIfAbsent { name, bytes } => match self.objects.entry(name) {
                std::collections::btree_map::Entry::Occupied(entry) => {
                    Err(StoreError::AlreadyExists { name: entry.key().clone() })
                }
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(bytes.to_vec());
                    Ok(OpOutput::Created)
                }
            },
            ObjectOp::Get { name, .. } => {
                self.objects.get(&name).cloned().map(OpOutput::Bytes).ok_or(StoreError::NotFound { name })
            }
            other => panic!("the persister only puts and gets: {other:?}"),
        }
    }

    fn carry_out(&mut self, persister: &mut Persister) {
        while let Some(action) = persister.next_action() {
            match action {
                Action::Submit { op_id, op } => self.pending.push((op_id, op)),
                Action::DurableAdvanced { first_version, durable_version, bytes } => {
                    assert!(!self.stopped, "durable after a stop");
                    let previous = self.durable.last().map_or(0, |entry| entry.1);
                    assert!(first_version > previous);
                    assert_eq!(self.objects.get(&batch_name(first_version)), Some(&*bytes), "durable means stored");
                    self.durable.push((first_version, durable_version, bytes));
                }
                Action::RetryAt { at_ms } => assert!(at_ms > self.now_ms),
                Action::Fenced { name, .. } => {
                    self.stopped = true;
                    assert!(self.objects.contains_key(&name), "fenced by an object that exists");
                }
                Action::Failed { error, .. } => {
                    panic!("no permanent errors in this model: {error}")
                }
            }
        }
        assert!(persister.in_flight() <= self.max_in_flight);
    }

    /// Another leader writes the batch we are about to write.
    fn intrude(&mut self) {
        let first = self.next_version;
        self.objects
            .entry(batch_name(first))
            .or_insert_with(|| batch(first - 1, first, first, "intruder").bytes.to_vec());
    }

    fn step(&mut self, persister: &mut Persister) {
        let choice = self.random.next_u64() % 100;
        if choice < 30 && persister.can_accept() {
            let length = 1 + self.random.next_u64() % 3;
            let (first, last) = (self.next_version, self.next_version + length - 1);
            persister.batch_ready(batch(first - 1, first, last, "us")).unwrap();
            self.next_version = last + 1;
        } else if choice < 80 && !self.pending.is_empty() {
            self.complete(persister);
        } else if choice == 80 && self.chance(10) {
            self.intrude();
        } else {
            self.now_ms += 1 + self.random.next_u64() % 300;
            persister.tick(self.now_ms);
        }
        self.carry_out(persister);
    }

    /// Every batch reported durable is still stored with our bytes.
    fn check_durable_stays(&self) {
        for (first_version, _, bytes) in &self.durable {
            assert_eq!(self.objects.get(&batch_name(*first_version)), Some(&**bytes));
        }
    }
}

#[test]
fn random_runs_against_a_failing_model_keep_durability_promises() {
    let (mut fenced_runs, mut durable_batches) = (0, 0);
    for seed in 0..200u64 {
        match std::panic::catch_unwind(|| run_model(seed)) {
            Ok((fenced, durable)) => {
                fenced_runs += usize::from(fenced);
                durable_batches += durable;
            }
            Err(panic) => {
                eprintln!("persister model run failed with seed {seed}");
                std::panic::resume_unwind(panic);
            }
        }
    }
    // The runs cover both endings and make real progress.
    assert!((20..180).contains(&fenced_runs), "{fenced_runs} fenced runs");
    assert!(durable_batches > 200 * 20, "{durable_batches} durable batches");
}

/// Returns whether the run was fenced and how many batches became durable.
fn run_model(seed: u64) -> (bool, usize) {
    let max_in_flight = 1 + (seed % 5) as usize;
    let mut persister = Persister::new(PersisterConfig { jitter_seed: seed, ..config(max_in_flight) }, 0);
    let mut run = ModelRun {
        random: SplitMix64::new(seed),
        objects: BTreeMap::new(),
        pending: Vec::new(),
        now_ms: 0,
        next_version: 1,
        durable: Vec::new(),
        stopped: false,
        max_in_flight,
    };
    for _ in 0..400 {
        run.step(&mut persister);
        run.check_durable_stays();
    }
    assert_eq!(persister.is_stopped(), run.stopped);
    if !run.stopped {
        assert_eq!(run.durable.last().map_or(0, |entry| entry.1), persister.durable_version());
    }
    (run.stopped, run.durable.len())
}
