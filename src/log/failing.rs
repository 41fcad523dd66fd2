//! A store wrapper that fails operations on purpose, for tests: after a
//! countdown, and with seeded probabilities either before the inner store
//! sees an operation or after it applied it (the reply is lost, which is what
//! makes a retried put-if-absent find its own object).
//!
//! Invariant: like every store, it sends exactly one completion per
//! submitted operation, with the caller's op id. Faults are decided from the
//! seed in submission order, so a single-threaded caller gets the same faults
//! on every run.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};

use super::store::{Completion, ObjectOp, ObjectStore, OpId, StoreError};
use crate::random::SplitMix64;

/// Which operations fail, and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    pub seed: u64,
    /// Operations let through normally before every later one fails with a
    /// transient error, as a disk or network that died; `None`: never.
    pub fail_after_ops: Option<u64>,
    /// Chance per million that an operation fails before the inner store
    /// sees it.
    pub fail_before_ppm: u32,
    /// Chance per million that an operation is applied but its reply is
    /// replaced by a transient error.
    pub lose_reply_ppm: u32,
    /// Every put reaches the inner store this much later (slow storage).
    pub put_delay_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    FailBefore,
    LoseReply,
}

#[derive(Debug)]
struct FaultState {
    plan: FaultPlan,
    random: SplitMix64,
    operations_seen: u64,
}

impl FaultState {
    fn decide(&mut self) -> Fault {
        self.operations_seen += 1;
        if self.plan.fail_after_ops.is_some_and(|allowed| self.operations_seen > allowed) {
            return Fault::FailBefore;
        }
        if self.random.chance_ppm(self.plan.fail_before_ppm) {
            return Fault::FailBefore;
        }
        if self.random.chance_ppm(self.plan.lose_reply_ppm) {
            return Fault::LoseReply;
        }
        Fault::None
    }
}

/// Where a completion from the inner store goes back to.
struct Pending {
    op_id: OpId,
    reply: Sender<Completion>,
    lose_reply: bool,
}

type PendingTable = Arc<Mutex<HashMap<OpId, Pending>>>;

/// Wraps any store; see the module docs.
pub struct FailingStore {
    inner: Arc<dyn ObjectStore>,
    faults: Mutex<FaultState>,
    pending: PendingTable,
    forward: Sender<Completion>,
    next_inner_op_id: AtomicU64,
}

impl std::fmt::Debug for FailingStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        formatter.debug_struct("FailingStore").field("plan", &faults.plan).finish()
    }
}

impl FailingStore {
    /// Starts a thread that passes the inner store's completions back to
    /// the callers; it ends once this store and its operations are gone.
    pub fn new(inner: Arc<dyn ObjectStore>, plan: FaultPlan) -> Self {
        let (forward, completions) = crossbeam_channel::unbounded();
        let pending: PendingTable = Arc::default();
        let table = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("stoat-failing-store".into())
            .spawn(move || forward_completions(&completions, &table))
            .expect("spawn the failing store's thread");
        let faults = Mutex::new(FaultState { random: SplitMix64::new(plan.seed), plan, operations_seen: 0 });
        FailingStore { inner, faults, pending, forward, next_inner_op_id: AtomicU64::new(0) }
    }

    /// Replaces the plan (for example with the default, to heal the store).
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
        *faults = FaultState { random: SplitMix64::new(plan.seed), plan, operations_seen: 0 };
    }
}

impl ObjectStore for FailingStore {
    fn submit(&self, op_id: OpId, op: ObjectOp, reply: &Sender<Completion>) {
        let (fault, delay_ms) = {
            let mut faults = self.faults.lock().unwrap_or_else(PoisonError::into_inner);
            (faults.decide(), faults.plan.put_delay_ms)
        };
        if fault == Fault::FailBefore {
            let result = Err(StoreError::transient("injected failure before the operation"));
            let _ = reply.send(Completion { op_id, result });
            return;
        }
        let inner_op_id = self.next_inner_op_id.fetch_add(1, Ordering::Relaxed);
        let entry = Pending { op_id, reply: reply.clone(), lose_reply: fault == Fault::LoseReply };
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(inner_op_id, entry);
        if delay_ms > 0 && matches!(op, ObjectOp::PutIfAbsent { .. }) {
            let (inner, forward) = (Arc::clone(&self.inner), self.forward.clone());
            let delayed = std::thread::Builder::new().name("stoat-slow-put".into()).spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(delay_ms));
                inner.submit(inner_op_id, op, &forward);
            });
            if delayed.is_err() {
                let _ = self.forward.send(Completion {
                    op_id: inner_op_id,
                    result: Err(StoreError::transient("cannot start a delayed put")),
                });
            }
            return;
        }
        self.inner.submit(inner_op_id, op, &self.forward);
    }
}

fn forward_completions(completions: &Receiver<Completion>, pending: &PendingTable) {
    for completion in completions.iter() {
        let entry = pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&completion.op_id);
        let Some(entry) = entry else { continue };
        let result =
            if entry.lose_reply { Err(StoreError::transient("injected loss of the reply")) } else { completion.result };
        let _ = entry.reply.send(Completion { op_id: entry.op_id, result });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::local::{LocalStore, LocalStoreOptions};
    use crate::log::store::Blocking;

    #[test]
    fn faults_fail_before_or_after_applying_and_heal() {
        let directory = tempfile::tempdir().unwrap();
        let options = LocalStoreOptions { sync: false, ..LocalStoreOptions::default() };
        let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(directory.path(), options).unwrap());
        let store =
            FailingStore::new(Arc::clone(&local), FaultPlan { fail_before_ppm: 1_000_000, ..FaultPlan::default() });
        let failed = Blocking::new(&store).put_if_absent("a", vec![1]);
        assert!(matches!(failed, Err(StoreError::Transient { .. })));
        assert!(
            matches!(Blocking::new(local.as_ref()).get("a", None), Err(StoreError::NotFound { .. })),
            "not applied"
        );

        store.set_plan(FaultPlan { lose_reply_ppm: 1_000_000, ..FaultPlan::default() });
        let lost = Blocking::new(&store).put_if_absent("a", vec![2]);
        assert!(matches!(lost, Err(StoreError::Transient { .. })));
        assert_eq!(Blocking::new(local.as_ref()).get("a", None), Ok(vec![2]), "applied, reply lost");

        store.set_plan(FaultPlan { fail_after_ops: Some(1), ..FaultPlan::default() });
        assert_eq!(Blocking::new(&store).get("a", None), Ok(vec![2]));
        assert!(Blocking::new(&store).get("a", None).is_err(), "the countdown ran out");
        store.set_plan(FaultPlan::default());
        assert_eq!(Blocking::new(&store).get("a", None), Ok(vec![2]), "healed");

        store.set_plan(FaultPlan { put_delay_ms: 200, ..FaultPlan::default() });
        let started = std::time::Instant::now();
        Blocking::new(&store).put_if_absent("b", vec![3]).unwrap();
        assert!(started.elapsed() >= std::time::Duration::from_millis(200), "the put waited");
        assert_eq!(Blocking::new(local.as_ref()).get("b", None), Ok(vec![3]));
    }
}
