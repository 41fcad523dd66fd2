//! Stage 2: recovers the log at start, then makes committed batches durable
//! through the `Persister`, publishes the durable version, and releases the
//! replies whose versions are durable.
//!
//! Start-up: the store is opened and the log's tail recovered, retried with
//! backoff for as long as it takes (the server listens meanwhile and
//! `/readyz` is 503). The recovered state goes to stage 1, which answers
//! "recovering" until then. If recovery found batches behind a hole (left by
//! a crashed leader), only one batch is written until it is durable: that
//! batch takes the hole's name, so the old leader can no longer fill it, and
//! only then are the orphans deleted (before this leader's versions could
//! reach their names).
//!
//! Taking over again: a leader killed with a batch write in flight can have
//! that write land after the next leader listed the log (S3 completes a
//! request it has fully received). The new leader's first batch then finds
//! its name taken by a batch of the leader it took over from. Rather than
//! stay fenced with no leader left, stage 2 recovers the log again (which
//! now ends with that batch) and starts a new term: stage 1 rebuilds its
//! sequencer from the new state, and whatever was decided in the lost term
//! is answered 503 (none of it is in the log). Only a first batch that lost
//! to the *previous* leader does this: nothing of this leader was durable
//! yet, and a newer leader (whose batch carries another leader id) is never
//! fought. Nor is a live predecessor fought for ever: a dead one's late
//! writes are at most `chain::BATCH_WRITES_IN_FLIGHT_MAX`, so after that
//! many losses in a row this server stays fenced. Until this leader's first
//! batch is durable its batches are not shown to subscribers either, so no
//! stream sees a lost term.
//!
//! Invariants:
//! - A reply waiting on version v is released only once `durable_version >= v`.
//! - After fencing or a permanent storage failure nothing more is released
//!   as durable: every waiting reply is answered 503 (its outcome is unknown
//!   here; the next leader's `/v1/status` knows).
//! - Only what stage 1 decided in the current term is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};

use super::history::{self, SearchRequest};
use super::published::Published;
use super::{PersistMessage, Replies, Reply, ReplyMessage, Takeover};
use crate::commit::sequencer::Recovered;
use crate::config::PersistConfig;
use crate::log::chain;
use crate::log::persister::{Action, Persister, PersisterConfig};
use crate::log::recovery::{recover, RecoveredLog, RecoveryConfig};
use crate::log::store::{Blocking, Completion, ObjectStore};
use crate::ops::metrics::Metrics;
use crate::retention::worker::RetentionMessage;
use crate::server::response::ApiError;
use crate::subscribe::feed::{Feed, FeedBatch};
use crate::subscribe::history::{self as subscribe_history, Deliver, HistoryRequest};

/// Opens the configured store; called (and retried) by stage 2 at start.
pub type StoreOpener = Box<dyn Fn() -> std::io::Result<Arc<dyn ObjectStore>> + Send>;

const RECOVERY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RECOVERY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long a stopping server waits for batch writes already in flight.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

pub(super) struct PersistStage {
    pub inbox: Receiver<PersistMessage>,
    pub to_reply: Sender<Replies>,
    pub to_sequencer: Sender<Takeover>,
    /// Tells stage 1 that the next batch can be written now.
    pub ready_for_batch: Sender<()>,
    /// Wakes stage 1 when the last batch write in flight has landed.
    pub look_again: Sender<()>,
    pub history_requests: Receiver<SearchRequest>,
    pub history_to_persist: Sender<PersistMessage>,
    pub open_store: StoreOpener,
    pub config: PersistConfig,
    pub request_ids_recovered: usize,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub feed: Arc<Feed>,
    /// Taken at start: the subscribers' history reader needs the store.
    pub subscribe_history: Option<(Receiver<HistoryRequest>, Deliver)>,
    /// The retention worker, given the store once the log is recovered.
    pub retention: Sender<RetentionMessage>,
}

impl PersistStage {
    pub fn run(mut self) {
        let Some((store, mut recovered)) = self.recover_with_backoff(None) else { return };
        if let Some((requests, deliver)) = self.subscribe_history.take() {
            if let Err(error) = subscribe_history::spawn(store.clone(), self.published.clone(), requests, deliver) {
                tracing::error!(%error, "cannot start the subscribers' history reader");
            }
        }
        let history = history::spawn(store.clone(), self.history_requests.clone(), self.history_to_persist.clone());
        if let Err(error) = history {
            tracing::error!(%error, "cannot start the history reader; old status lookups will fail");
        }
        let oldest = recovered.oldest_version.saturating_sub(1);
        self.published.set_oldest_version(oldest);
        self.metrics.retention_oldest_version.set(i64::try_from(oldest).unwrap_or(i64::MAX));
        // The worker loads the policies before any truncation round; until
        // then it answers 503. A full queue cannot drop this: it blocks.
        let _ = self.retention.send(RetentionMessage::Start(store.clone()));
        let mut term = 0;
        loop {
            if !self.begin_term(&recovered, term) {
                return;
            }
            let persister = Persister::new(self.persister_config(), recovered.last_version);
            match Driver::new(&self, store.clone(), persister, &recovered, term).run() {
                Ended::Stopped => return,
                Ended::LostTakeover => {}
            }
            // Only a term with nothing durable ends this way, so `term`
            // counts the takeovers lost in a row.
            term += 1;
            let backoff = RECOVERY_BACKOFF_FIRST.saturating_mul(1 << (term - 1).min(16)).min(RECOVERY_BACKOFF_MAX);
            if !self.pause(backoff) {
                return;
            }
            match self.recover_with_backoff(Some(&store)) {
                Some((_, again)) => recovered = again,
                None => return,
            }
        }
    }

    /// Publishes the recovered log and hands stage 1 its state for `term`;
    /// false if stage 1 is gone.
    fn begin_term(&self, recovered: &RecoveredLog, term: u64) -> bool {
        let published = &self.published;
        self.feed.reset(recovered.last_version);
        // A later term's log extends the earlier one's; what was published
        // (the lost term's committed versions included) never goes back.
        if recovered.last_version > published.committed_version() {
            published.set_committed_version(recovered.last_version);
        }
        if recovered.last_version > published.durable_version() {
            published.set_durable_version(recovered.last_version);
        }
        self.publish_history_metrics(recovered);
        let state = sequencer_state(recovered, self.request_ids_recovered);
        if self.to_sequencer.send(Takeover { recovered: state, term }).is_err() {
            return false;
        }
        published.set_ready(true);
        tracing::info!(
            last_version = recovered.last_version,
            objects = recovered.objects_listed,
            orphans = recovered.orphaned_objects.len(),
            term,
            "log recovered; serving"
        );
        true
    }

    fn publish_history_metrics(&self, recovered: &RecoveredLog) {
        let metrics = &self.metrics;
        let objects = recovered.objects_listed - recovered.orphaned_objects.len();
        metrics.history_objects.set(objects as i64);
        let bytes = recovered.objects_bytes.saturating_sub(recovered.orphaned_bytes);
        metrics.history_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    fn persister_config(&self) -> PersisterConfig {
        PersisterConfig {
            max_in_flight: self.config.batch_writes_in_flight,
            backoff_initial_ms: self.config.retry_initial_ms,
            backoff_max_ms: self.config.retry_max_ms,
            attempts_max: u32::MAX,
            jitter_seed: std::process::id() as u64 ^ unix_ms(),
        }
    }

    /// Opens the store (unless `opened` is given) and recovers the log,
    /// retrying with backoff; `None` if the pipeline is told to stop first.
    fn recover_with_backoff(
        &self,
        opened: Option<&Arc<dyn ObjectStore>>,
    ) -> Option<(Arc<dyn ObjectStore>, RecoveredLog)> {
        let config = RecoveryConfig {
            recent_transactions: self.request_ids_recovered,
            chain_check_objects: 16,
            ..RecoveryConfig::default()
        };
        let mut backoff = RECOVERY_BACKOFF_FIRST;
        loop {
            let store = match opened {
                Some(store) => Ok(store.clone()),
                None => (self.open_store)().map_err(|error| format!("cannot open the store: {error}")),
            };
            let attempt = store
                .and_then(|store| recover(&*store, &config).map(|log| (store, log)).map_err(|error| error.to_string()));
            match attempt {
                Ok(result) => return Some(result),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "log recovery failed");
                }
            }
            if !self.pause(backoff) {
                return None;
            }
            backoff = (backoff * 2).min(RECOVERY_BACKOFF_MAX);
        }
    }

    /// Waits for `duration`, answering 503 to whatever stage 1 decided in a
    /// term that is over; false if told to stop first.
    fn pause(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            match self.inbox.recv_deadline(deadline) {
                Ok(PersistMessage::Shutdown) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return false,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return true,
                Ok(PersistMessage::Batch { waiting, .. }) => self.answer_term_over(waiting),
                Ok(PersistMessage::AwaitDurable { message, .. }) => self.answer_term_over(vec![message]),
            }
        }
    }

    /// Answers what stage 1 decided in a term whose takeover lost.
    fn answer_term_over(&self, messages: Replies) {
        answer_unavailable(
            &self.to_reply,
            messages,
            "this server is taking over the log again: its first write lost to the previous leader's last one; \
             the outcome of this request is unknown here: retry it, or ask /v1/status",
        );
    }
}

/// Answers every message 503 with `why`.
fn answer_unavailable(to_reply: &Sender<Replies>, mut messages: Replies, why: &str) {
    if messages.is_empty() {
        return;
    }
    for message in &mut messages {
        message.reply = Reply::Error(ApiError::Unavailable(why.into()));
    }
    // The reply stage outlives this one; a failed send means it crashed,
    // and dropping the connections closes them unanswered.
    let _ = to_reply.send(messages);
}

/// The sequencer's starting state from the recovered log. (Stage 1 also
/// starts past every version published so far, which a lost term may have
/// raised: see `SequenceStage::start`.)
fn sequencer_state(log: &RecoveredLog, asked: usize) -> Recovered {
    let recent: Vec<(String, u64)> =
        log.recent_transactions.iter().map(|t| (t.request_id.clone(), t.version)).collect();
    // Fewer ids than asked for means every transaction of the log is there.
    let request_ids_from_version = match recent.first() {
        Some(&(_, first)) if recent.len() >= asked => first,
        _ => 0,
    };
    Recovered {
        committed_version: log.last_version,
        recent_request_ids: recent,
        request_ids_from_version,
        last_timestamp_ms: 0,
        first_version: chain::first_version_after(log.last_version),
    }
}

/// How the stage-2 loop of one term ended.
enum Ended {
    /// Told to stop (or every sender is gone).
    Stopped,
    /// The term's first batch lost its name to the previous leader's late
    /// write: recover and take over again.
    LostTakeover,
}

/// What woke the stage-2 loop.
enum Woken {
    Message(Option<PersistMessage>),
    Completion(Option<Completion>),
    Timeout,
}

/// The running loop of stage 2 for one term.
struct Driver<'s> {
    stage: &'s PersistStage,
    term: u64,
    /// The leader id of the recovered log's last batch: the leader this one
    /// took over from.
    predecessor: Option<String>,
    /// Batches accepted before this term's first batch is durable: shown to
    /// subscribers only once it is (a lost takeover shows them nothing).
    unfed: Vec<Arc<FeedBatch>>,
    lost_takeover: bool,
    /// The writes in flight last published.
    writes_published: usize,
    store: Arc<dyn ObjectStore>,
    persister: Persister,
    started: Instant,
    completions: (Sender<Completion>, Receiver<Completion>),
    durable_version: u64,
    /// Replies waiting for the durable version to reach their key.
    awaiting: BTreeMap<u64, Vec<ReplyMessage>>,
    /// When each accepted batch (by last version) was handed over.
    accepted_at: BTreeMap<u64, Instant>,
    orphans: Vec<String>,
    /// The version the log ended at when recovered; orphans go once the
    /// durable version passes it.
    recovered_version: u64,
    /// A "ready for a batch" is with stage 1 and not yet answered by one.
    batch_asked: bool,
    stopped: bool,
    shutting_down: Option<Instant>,
}

impl<'s> Driver<'s> {
    fn new(
        stage: &'s PersistStage,
        store: Arc<dyn ObjectStore>,
        persister: Persister,
        recovered: &RecoveredLog,
        term: u64,
    ) -> Self {
        let durable_version = persister.durable_version();
        Driver {
            stage,
            term,
            predecessor: recovered.tail.as_ref().map(|tail| tail.leader_id.clone()),
            unfed: Vec::new(),
            lost_takeover: false,
            writes_published: usize::MAX,
            store,
            persister,
            started: Instant::now(),
            completions: crossbeam_channel::unbounded(),
            durable_version,
            awaiting: BTreeMap::new(),
            accepted_at: BTreeMap::new(),
            orphans: recovered.orphaned_objects.clone(),
            recovered_version: durable_version,
            batch_asked: false,
            stopped: false,
            shutting_down: None,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn run(mut self) -> Ended {
        loop {
            while let Some(action) = self.persister.next_action() {
                self.act(action);
            }
            self.publish_writes_in_flight();
            if self.lost_takeover {
                // Told to stop meanwhile: stop, do not take over again.
                return if self.shutting_down.is_some() { Ended::Stopped } else { Ended::LostTakeover };
            }
            if !self.orphans.is_empty() && self.durable_version > self.recovered_version {
                self.delete_orphans();
            }
            self.ask_for_batch();
            if let Some(deadline) = self.shutting_down {
                if self.persister.in_flight() == 0 || Instant::now() >= deadline || self.stopped {
                    return Ended::Stopped;
                }
            }
            self.wait();
            let now_ms = self.now_ms();
            self.persister.tick(now_ms);
        }
    }

    /// Waits for a message, a completion, or the next retry time. Batches
    /// are taken only while the persister can accept them (backpressure).
    fn wait(&mut self) {
        let timeout = match self.persister.next_retry_at_ms() {
            Some(at_ms) => Duration::from_millis(at_ms.saturating_sub(self.now_ms())),
            None => Duration::from_millis(500),
        };
        let woken = if self.accepting() {
            select! {
                recv(self.stage.inbox) -> message => Woken::Message(message.ok()),
                recv(self.completions.1) -> completion => Woken::Completion(completion.ok()),
                default(timeout) => Woken::Timeout,
            }
        } else {
            select! {
                recv(self.completions.1) -> completion => Woken::Completion(completion.ok()),
                default(timeout) => Woken::Timeout,
            }
        };
        match woken {
            Woken::Message(Some(message)) => self.handle(message),
            // Every sender is gone: nothing more will come.
            Woken::Message(None) => self.begin_shutdown(),
            Woken::Completion(Some(completion)) => {
                let now_ms = self.now_ms();
                self.persister.completed(completion, now_ms);
            }
            Woken::Completion(None) | Woken::Timeout => {}
        }
    }

    /// Publishes the batch writes in flight; when none is left, wakes stage 1
    /// in case it holds a small batch back until then.
    fn publish_writes_in_flight(&mut self) {
        let writes = self.persister.in_flight();
        if writes != self.writes_published {
            self.writes_published = writes;
            self.stage.published.set_writes_in_flight(writes);
            if writes == 0 {
                let _ = self.stage.look_again.try_send(());
            }
        }
    }

    /// Asks stage 1 for its next batch once one can be written. Stage 1
    /// decides only then, so everything that arrived meanwhile is in it.
    fn ask_for_batch(&mut self) {
        if !self.batch_asked && self.accepting() {
            self.batch_asked = self.stage.ready_for_batch.try_send(()).is_ok();
        }
    }

    fn accepting(&self) -> bool {
        self.shutting_down.is_none() && (self.stopped || self.persister.can_accept())
    }

    fn handle(&mut self, message: PersistMessage) {
        match message {
            PersistMessage::Batch { waiting, term, .. } if term != self.term => self.stage.answer_term_over(waiting),
            PersistMessage::AwaitDurable { message, term, .. } if term != self.term => {
                self.stage.answer_term_over(vec![message])
            }
            PersistMessage::Batch { batch, waiting, .. } => {
                if self.stopped {
                    self.answer_unavailable(waiting);
                    return;
                }
                let last_version = batch.last_version;
                let size_bytes = batch.bytes.len() as i64;
                self.batch_asked = false;
                let for_subscribers = FeedBatch::from_encoded(&batch);
                match self.persister.batch_ready(batch) {
                    Ok(()) => {
                        if self.persister.made_a_batch_durable() {
                            self.stage.feed.push(for_subscribers);
                        } else {
                            self.unfed.push(for_subscribers);
                        }
                        self.stage.metrics.history_objects.inc();
                        self.stage.metrics.history_bytes.inc_by(size_bytes);
                        self.accepted_at.insert(last_version, Instant::now());
                        self.awaiting.entry(last_version).or_default().extend(waiting);
                    }
                    Err(_) => self.answer_unavailable(waiting),
                }
            }
            PersistMessage::AwaitDurable { message, version, .. } => {
                if version <= self.durable_version {
                    self.send(vec![message]);
                } else if self.stopped {
                    self.answer_unavailable(vec![message]);
                } else {
                    self.awaiting.entry(version).or_default().push(message);
                }
            }
            PersistMessage::Shutdown => self.begin_shutdown(),
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Submit { op_id, op } => self.store.submit(op_id, op, &self.completions.0),
            Action::DurableAdvanced { durable_version, .. } => self.advance_durable(durable_version),
            Action::RetryAt { .. } => {}
            Action::Fenced { first_version, name, winner_leader_id } => {
                let to_predecessor = winner_leader_id.is_some() && winner_leader_id == self.predecessor;
                // A dead predecessor's late writes are at most the ones it had
                // in flight; more losses in a row mean it is alive.
                let may_retake = self.term < chain::BATCH_WRITES_IN_FLIGHT_MAX as u64;
                if to_predecessor && may_retake && !self.persister.made_a_batch_durable() {
                    tracing::warn!(
                        first_version,
                        %name,
                        term = self.term,
                        "the previous leader's last write landed after the log was read; taking over again"
                    );
                    self.lose_takeover();
                } else {
                    tracing::error!(
                        first_version,
                        %name,
                        winner = winner_leader_id.as_deref().unwrap_or("unknown"),
                        "fenced: another leader wrote the next batch; this server stops committing"
                    );
                    self.stop();
                }
            }
            Action::Failed { first_version, error } => {
                tracing::error!(first_version, %error, "a batch write failed for good; this server stops committing");
                self.stop();
            }
        }
    }

    fn advance_durable(&mut self, version: u64) {
        self.durable_version = version;
        self.stage.published.set_durable_version(version);
        for batch in self.unfed.drain(..) {
            self.stage.feed.push(batch);
        }
        self.stage.feed.durable_advanced(version);
        let still_accepted = self.accepted_at.split_off(&(version + 1));
        let done = std::mem::replace(&mut self.accepted_at, still_accepted);
        let wait_seconds = self.stage.metrics.stage_seconds("durable_wait");
        for (_, accepted) in done {
            wait_seconds.observe(accepted.elapsed().as_secs_f64());
        }
        let still_waiting = self.awaiting.split_off(&(version + 1));
        let released: Replies = std::mem::replace(&mut self.awaiting, still_waiting).into_values().flatten().collect();
        self.send(released);
    }

    /// This term's takeover lost: not ready until the log is recovered
    /// again; everything waiting is answered.
    fn lose_takeover(&mut self) {
        self.lost_takeover = true;
        self.stage.published.set_ready(false);
        // A batch stage 1 holds back is then answered at once.
        let _ = self.stage.look_again.try_send(());
        let waiting: Vec<ReplyMessage> = std::mem::take(&mut self.awaiting).into_values().flatten().collect();
        self.stage.answer_term_over(waiting);
    }

    /// This server can no longer commit: answer everything waiting.
    fn stop(&mut self) {
        self.stopped = true;
        self.stage.published.stop_leading();
        let _ = self.stage.look_again.try_send(());
        let waiting: Vec<ReplyMessage> = std::mem::take(&mut self.awaiting).into_values().flatten().collect();
        self.answer_unavailable(waiting);
    }

    fn answer_unavailable(&self, messages: Replies) {
        answer_unavailable(
            &self.stage.to_reply,
            messages,
            "this server is no longer the leader; the outcome of this commit is unknown here: \
             ask /v1/status on the current leader",
        );
    }

    fn send(&self, replies: Replies) {
        if replies.is_empty() {
            return;
        }
        // The reply stage outlives this one; a failed send means it crashed,
        // and dropping the connections closes them unanswered.
        let _ = self.stage.to_reply.send(replies);
    }

    fn begin_shutdown(&mut self) {
        self.shutting_down.get_or_insert(Instant::now() + SHUTDOWN_DRAIN);
    }

    /// Removes the orphaned batches recovery found (a fenced or crashed
    /// leader's, inside this leader's first batch or behind the hole it
    /// filled). Readers skip them anyway (see `log::chain`); this keeps the
    /// listing short. Once this leader's first batch is durable no writer
    /// that left them can still fill the hole.
    fn delete_orphans(&mut self) {
        let orphans = std::mem::take(&mut self.orphans);
        match Blocking::new(&*self.store).delete(orphans.clone()) {
            Ok(()) => tracing::info!(count = orphans.len(), "deleted batches a fenced or crashed leader left behind"),
            Err(error) => tracing::warn!(%error, count = orphans.len(), "cannot delete orphaned batches; they stay"),
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
