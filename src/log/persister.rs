//! The persistence core of stage 2: which batch objects to write, when to
//! retry, when a version is durable, and when this leader is fenced. A pure
//! state machine: no threads, no IO, no clock (the caller passes `now_ms`, a
//! monotonic millisecond count), randomness from a seed.
//!
//! The caller feeds it finished batches (`batch_ready`), store completions
//! (`completed`) and time (`tick`), and carries out the [`Action`]s it
//! returns from `next_action`: submit an operation, publish a durable
//! version, wake at a time, or stop.
//!
//! Invariants:
//! - at most `max_in_flight` batches are accepted and not yet durable
//!   (held, writing, waiting to retry, verifying, or written behind an
//!   earlier batch); the caller asks `can_accept` before handing over a batch;
//! - a batch is written while an earlier one is still being written only as
//!   [`chain::may_write_alongside`] allows (near the durable version, and
//!   never before this leader's first batch is durable); otherwise it is
//!   held until every batch before it is durable. This is what keeps a
//!   fenced leader's late batches inside the winner's (see `chain`);
//! - the durable version advances strictly in order: a batch is reported
//!   durable only when it and every batch accepted before it are written;
//! - `AlreadyExists` is never taken at face value: the object is read back,
//!   and only if its bytes differ from ours (another leader wrote it) is the
//!   persister fenced; a retry that finds its own earlier write succeeds;
//! - after `Fenced` or `Failed` nothing is ever reported durable again.

use std::collections::VecDeque;
use std::sync::Arc;

use super::chain;
use super::format::{BatchView, EncodedBatch};
use super::names::batch_name;
use super::store::{Completion, ObjectBytes, ObjectOp, OpId, OpOutput, StoreError};
use crate::random::SplitMix64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersisterConfig {
    /// Batches accepted and not yet durable, at most.
    pub max_in_flight: usize,
    /// Delay before the first retry of a failed operation; doubles per
    /// attempt up to `backoff_max_ms`, then jittered to between half and all
    /// of it.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Attempts of one operation before the persister gives up (`Failed`).
    pub attempts_max: u32,
    /// Seeds the jitter, so a run can be replayed.
    pub jitter_seed: u64,
}

impl Default for PersisterConfig {
    fn default() -> Self {
        PersisterConfig {
            max_in_flight: 8,
            backoff_initial_ms: 50,
            backoff_max_ms: 5_000,
            attempts_max: u32::MAX,
            jitter_seed: 0,
        }
    }
}

/// What the caller must do, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Submit `op` to the store with `op_id`; pass its completion back.
    Submit { op_id: OpId, op: ObjectOp },
    /// The batch `first_version..=durable_version` and every one before it
    /// are durable: publish `durable_version`, acknowledge its commits and
    /// hand its bytes to subscribers.
    DurableAdvanced { first_version: u64, durable_version: u64, bytes: ObjectBytes },
    /// Call `tick` at or after `at_ms`: a retry is waiting.
    RetryAt { at_ms: u64 },
    /// Another writer holds the name of our batch: another leader exists,
    /// or a write of an earlier one landed late. Stop leading; nothing more
    /// will be reported durable. `winner_leader_id` is the leader id in the
    /// object found under the name (`None` if it was gone or unreadable).
    Fenced { first_version: u64, name: String, winner_leader_id: Option<String> },
    /// A write failed in a way retrying cannot fix (or ran out of attempts).
    /// Stop; nothing more will be reported durable.
    Failed { first_version: u64, error: StoreError },
}

/// Why `batch_ready` refused a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("max_in_flight batches are already in flight")]
    Full,
    #[error("the persister has stopped (fenced or failed)")]
    Stopped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Put-if-absent of our bytes.
    Put,
    /// Reading the object back after `AlreadyExists`.
    Verify,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    /// Accepted, not yet submitted: waits for the batches before it.
    Held,
    InFlight {
        op_id: OpId,
        phase: Phase,
    },
    Waiting {
        at_ms: u64,
        phase: Phase,
    },
    Written,
}

#[derive(Debug)]
struct Slot {
    first_version: u64,
    last_version: u64,
    name: String,
    bytes: ObjectBytes,
    state: SlotState,
    /// Submissions of the current phase so far.
    attempts: u32,
}

#[derive(Debug)]
pub struct Persister {
    config: PersisterConfig,
    /// Accepted, not yet durable, in version order.
    slots: VecDeque<Slot>,
    durable_version: u64,
    /// The durable version at start: a batch is written alongside others
    /// only once the durable version has passed it.
    start_version: u64,
    /// Last version of the last accepted batch: the next batch's
    /// `prev_version`.
    accepted_version: u64,
    next_op_id: OpId,
    stopped: bool,
    jitter: SplitMix64,
    actions: VecDeque<Action>,
}

impl Persister {
    /// Starts after `durable_version`, the last version of the recovered log.
    pub fn new(config: PersisterConfig, durable_version: u64) -> Self {
        assert!(config.max_in_flight >= 1 && config.attempts_max >= 1, "persister config");
        Persister {
            jitter: SplitMix64::new(config.jitter_seed),
            config,
            slots: VecDeque::new(),
            durable_version,
            start_version: durable_version,
            accepted_version: durable_version,
            next_op_id: 1,
            stopped: false,
            actions: VecDeque::new(),
        }
    }

    pub fn can_accept(&self) -> bool {
        !self.stopped && self.slots.len() < self.config.max_in_flight
    }

    pub fn durable_version(&self) -> u64 {
        self.durable_version
    }

    /// Batches accepted and not yet durable.
    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Whether a batch of this leader has become durable (until then none
    /// of its writes is part of the log).
    pub fn made_a_batch_durable(&self) -> bool {
        self.durable_version > self.start_version
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The earliest time a waiting retry is due, if any.
    pub fn next_retry_at_ms(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|slot| match slot.state {
                SlotState::Waiting { at_ms, .. } => Some(at_ms),
                _ => None,
            })
            .min()
    }

    /// The next thing the caller must do.
    pub fn next_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Accepts a finished batch and starts writing it.
    ///
    /// # Panics
    /// If the batch does not follow the previous one (`prev_version` equal
    /// to the last accepted version): only the sequencer assigns versions,
    /// and it chains them.
    pub fn batch_ready(&mut self, batch: EncodedBatch) -> Result<(), Rejected> {
        if self.stopped {
            return Err(Rejected::Stopped);
        }
        if !self.can_accept() {
            return Err(Rejected::Full);
        }
        assert_eq!(batch.prev_version, self.accepted_version, "batches chain by prev_version");
        assert!(batch.first_version > batch.prev_version && batch.last_version >= batch.first_version);
        // Paired with the decoder's checks when the batch is read back.
        debug_assert!(BatchView::parse(&batch.bytes).is_ok_and(|view| {
            (view.first_version, view.last_version, view.prev_version)
                == (batch.first_version, batch.last_version, batch.prev_version)
        }));
        self.accepted_version = batch.last_version;
        self.slots.push_back(Slot {
            first_version: batch.first_version,
            last_version: batch.last_version,
            name: batch_name(batch.prev_version + 1),
            bytes: batch.bytes,
            state: SlotState::Held,
            attempts: 0,
        });
        self.release_held();
        Ok(())
    }

    /// Submits held batches that may be written now: the first batch when
    /// nothing before it is pending, and later ones as
    /// [`chain::may_write_alongside`] allows, in order.
    fn release_held(&mut self) {
        let made_a_batch_durable = self.made_a_batch_durable();
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if slot.state != SlotState::Held {
                continue;
            }
            if index == 0 || chain::may_write_alongside(slot.last_version, self.durable_version, made_a_batch_durable) {
                self.submit(index, Phase::Put);
            } else {
                // Later batches wait behind this one.
                return;
            }
        }
    }

    /// Takes the store's answer to an operation we asked for. Completions of
    /// operations no longer wanted (after a stop) are ignored.
    pub fn completed(&mut self, completion: Completion, now_ms: u64) {
        let found = self
            .slots
            .iter()
            .position(|slot| matches!(slot.state, SlotState::InFlight { op_id, .. } if op_id == completion.op_id));
        let Some(index) = found else { return };
        let SlotState::InFlight { phase, .. } = self.slots[index].state else {
            return;
        };
        match (phase, completion.result) {
            (Phase::Put, Ok(OpOutput::Created)) => self.written(index),
            (Phase::Put, Err(StoreError::AlreadyExists { .. })) => self.submit(index, Phase::Verify),
            (Phase::Verify, Ok(OpOutput::Bytes(stored))) if stored == *self.slots[index].bytes => self.written(index),
            (Phase::Verify, Ok(OpOutput::Bytes(stored))) => {
                let winner = BatchView::parse(&stored).ok().map(|view| view.leader_id.to_owned());
                self.fence(index, winner)
            }
            (Phase::Verify, Err(StoreError::NotFound { .. })) => self.fence(index, None),
            (_, Err(error @ StoreError::Transient { .. })) => self.retry_later(index, phase, error, now_ms),
            (_, Err(error)) => self.fail(index, error),
            (_, Ok(other)) => self.fail(index, StoreError::permanent(format!("unexpected store output {other:?}"))),
        }
    }

    /// Resubmits every operation whose retry time has come.
    pub fn tick(&mut self, now_ms: u64) {
        for index in 0..self.slots.len() {
            if let SlotState::Waiting { at_ms, phase } = self.slots[index].state {
                if at_ms <= now_ms {
                    self.submit(index, phase);
                }
            }
        }
    }

    fn submit(&mut self, index: usize, phase: Phase) {
        let op_id = self.next_op_id;
        self.next_op_id += 1;
        let slot = &mut self.slots[index];
        let previous_phase = match slot.state {
            SlotState::Waiting { phase, .. } => Some(phase),
            _ => None,
        };
        if previous_phase != Some(phase) {
            slot.attempts = 0;
        }
        slot.attempts += 1;
        slot.state = SlotState::InFlight { op_id, phase };
        let op = match phase {
            Phase::Put => ObjectOp::PutIfAbsent { name: slot.name.clone(), bytes: Arc::clone(&slot.bytes) },
            Phase::Verify => ObjectOp::Get { name: slot.name.clone(), range: None },
        };
        self.actions.push_back(Action::Submit { op_id, op });
    }

    fn written(&mut self, index: usize) {
        self.slots[index].state = SlotState::Written;
        while self.slots.front().is_some_and(|slot| slot.state == SlotState::Written) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            assert!(slot.first_version > self.durable_version, "durable version advances in order");
            self.durable_version = slot.last_version;
            self.actions.push_back(Action::DurableAdvanced {
                first_version: slot.first_version,
                durable_version: slot.last_version,
                bytes: slot.bytes,
            });
        }
        self.release_held();
    }

    fn retry_later(&mut self, index: usize, phase: Phase, error: StoreError, now_ms: u64) {
        let attempts = self.slots[index].attempts;
        if attempts >= self.config.attempts_max {
            return self.fail(index, error);
        }
        let at_ms = now_ms.saturating_add(self.backoff_ms(attempts));
        self.slots[index].state = SlotState::Waiting { at_ms, phase };
        self.actions.push_back(Action::RetryAt { at_ms });
    }

    /// Exponential in the attempts made, capped, with "equal jitter": between
    /// half and all of the capped delay, so retries of many leaders spread.
    fn backoff_ms(&mut self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(32);
        let capped = self.config.backoff_initial_ms.saturating_mul(1 << doublings).min(self.config.backoff_max_ms);
        let half = capped / 2;
        half + self.jitter.next_u64() % (capped - half + 1)
    }

    fn fence(&mut self, index: usize, winner_leader_id: Option<String>) {
        let slot = &self.slots[index];
        let action = Action::Fenced { first_version: slot.first_version, name: slot.name.clone(), winner_leader_id };
        self.stop(action);
    }

    fn fail(&mut self, index: usize, error: StoreError) {
        let action = Action::Failed { first_version: self.slots[index].first_version, error };
        self.stop(action);
    }

    fn stop(&mut self, action: Action) {
        self.stopped = true;
        self.slots.clear();
        self.actions.push_back(action);
    }
}

#[cfg(test)]
mod tests;
