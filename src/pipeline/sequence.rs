//! Stage 1: takes requests in arrival order, decides them in batches with the
//! sequencer core, encodes the committed transactions into batch objects, and
//! sends each request on: to persistence, to the history reader, or straight
//! to a reply.
//!
//! Until stage 2 has recovered the log there is no sequencer: requests are
//! answered 503 "recovering". Once this server stops leading (fenced), they
//! are answered 503, or 409 leader_changed for commits that name a leader.
//! When stage 2 takes over the log again (its first batch lost to the
//! previous leader's late write), requests are answered 503 "recovering"
//! until the new state arrives, and the sequencer is rebuilt from it: a new
//! term, whose decisions are the only ones stage 2 acknowledges.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{select, Receiver, Sender, TrySendError};

use super::history::SearchRequest;
use super::published::Published;
use super::{PersistMessage, Replies, Reply, ReplyMessage, StageMessage, Takeover};
use crate::commit::sequencer::{Decision, Input, Sequencer, SequencerConfig};
use crate::log::format::{BatchEncoder, EncodedBatch};
use crate::ops::metrics::Metrics;
use crate::server::connection::Connection;
use crate::server::response::ApiError;
use crate::server::routes::Route;

pub(super) struct SequenceStage {
    pub requests: Receiver<StageMessage>,
    pub to_persist: Sender<PersistMessage>,
    pub to_reply: Sender<Replies>,
    pub to_history: Sender<SearchRequest>,
    pub recovered: Receiver<Takeover>,
    /// Stage 2 asks for a batch when it can write one.
    pub batch_wanted: Receiver<()>,
    /// Stage 2 says the last batch write in flight has landed (or that it is
    /// not ready or leading any more), a reactor that every client connection
    /// now waits in the pipeline or that `min_batch_alongside` requests are
    /// queued, or the pipeline that a shutdown is queued: a batch held back
    /// looks at whether it still should be.
    pub look_again: Receiver<()>,
    /// A batch is written while others are in flight only once it has this
    /// many requests; a smaller one waits for them to land (or to grow).
    pub min_batch_alongside: usize,
    /// A batch smaller than `min_batch_alongside` is not written sooner than
    /// this after the previous one.
    pub batch_interval: Duration,
    pub config: SequencerConfig,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub batch_max: usize,
    pub batch_timeout: Duration,
    pub batch_bytes_max: usize,
}

/// Stage 1's state once the log is recovered.
struct Sequencing {
    sequencer: Sequencer,
    /// Stage 2 has asked for a batch that has not been sent yet.
    batch_wanted: bool,
    /// The last version in the log (committed in an earlier batch): the
    /// next batch object continues from it.
    log_version: u64,
    /// The takeover this sequencer was built for (see `Takeover`).
    term: u64,
    pacing: Pacing,
}

/// What `hold_small_batch` remembers between batches.
#[derive(Debug, Default, Clone, Copy)]
struct Pacing {
    /// When the last batch went to stage 2.
    last_batch_at: Option<Instant>,
    /// Set when a hold for `batch_interval` gathered no request: holds are
    /// skipped from then on (a lone client sending one request after
    /// another would only be slowed by them) until `HOLD_PROBE` has passed
    /// or requests queue up on their own.
    hold_gathered_nothing_at: Option<Instant>,
}

const RECOVERING: &str = "recovering: the log is being read from storage";
/// How often a wait for stage 2 checks that this server is still ready.
const READY_POLL: Duration = Duration::from_millis(100);
/// A batch held beside writes in flight looks at the queue every
/// `batch_interval`, but never more often than this.
const HOLD_POLL_MIN: Duration = Duration::from_micros(100);
/// After a hold that gathered nothing, how long holds are skipped (unless
/// requests queue up on their own) before one is tried again.
const HOLD_PROBE: Duration = Duration::from_millis(100);

impl SequenceStage {
    pub fn run(self) {
        let Some((mut sequencing, mut first)) = self.wait_for_recovery() else {
            let _ = self.to_persist.send(PersistMessage::Shutdown);
            return;
        };
        loop {
            let (mut connections, mut stopping) = match first.take() {
                Some(connection) => {
                    let mut connections = vec![connection];
                    let stopping = self.take_queued(&mut connections);
                    (connections, stopping)
                }
                None => self.collect_batch(),
            };
            self.adopt_takeover(&mut sequencing);
            if !stopping && !connections.is_empty() && !sequencing.batch_wanted && self.published.is_ready() {
                // Decide as late as possible: wait until the batch can be
                // written, then take everything that queued meanwhile.
                stopping = self.wait_until_wanted(&mut sequencing, &mut connections);
                stopping |= self.take_queued(&mut connections);
            }
            if !stopping && !connections.is_empty() && connections.len() < self.min_batch_alongside {
                stopping = self.hold_small_batch(&mut sequencing.pacing, &mut connections);
            }
            if !connections.is_empty() {
                // Readiness first: stage 2 sends a new takeover before it
                // becomes ready again, so once it is ready again the takeover
                // is adopted here. (A `ready` from before a loss lets this
                // batch be decided in the old term: stage 2 answers it 503.)
                let ready = self.published.is_ready();
                self.adopt_takeover(&mut sequencing);
                if !self.published.is_leading() {
                    connections.into_iter().for_each(|connection| self.refuse_not_leader(connection));
                } else if !ready {
                    let replies = connections
                        .into_iter()
                        .map(|connection| ReplyMessage {
                            connection,
                            reply: Reply::Error(ApiError::Unavailable(RECOVERING.into())),
                        })
                        .collect();
                    self.send_replies(replies);
                } else {
                    self.decide(&mut sequencing, connections);
                }
            }
            if stopping {
                let _ = self.to_persist.send(PersistMessage::Shutdown);
                return;
            }
        }
    }

    /// Answers requests 503 until stage 2 sends the recovered state; `None`
    /// if told to stop first. A request that arrives with the state already
    /// there is kept for the first batch, not refused.
    fn wait_for_recovery(&self) -> Option<(Sequencing, Option<Box<Connection>>)> {
        loop {
            select! {
                recv(self.recovered) -> takeover => return Some((self.start(takeover.ok()?), None)),
                recv(self.requests) -> message => match message {
                    Ok(StageMessage::Request(mut connection)) => {
                        if let Ok(takeover) = self.recovered.try_recv() {
                            connection.set_taken_at(Instant::now());
                            return Some((self.start(takeover), Some(connection)));
                        }
                        let error = ApiError::Unavailable(RECOVERING.into());
                        self.reply(ReplyMessage { connection, reply: Reply::Error(error) });
                    }
                    Ok(StageMessage::Shutdown) | Err(_) => return None,
                },
            }
        }
    }

    fn start(&self, takeover: Takeover) -> Sequencing {
        let Takeover { mut recovered, term } = takeover;
        // Past every version published so far, which a lost term may have
        // raised (this thread publishes them, so none is missed).
        recovered.first_version = recovered.first_version.max(self.published.committed_version() + 1);
        let log_version = recovered.committed_version;
        let sequencer = Sequencer::new(self.config, self.published.leader_id.clone(), recovered);
        Sequencing { sequencer, batch_wanted: false, log_version, term, pacing: Pacing::default() }
    }

    /// Rebuilds the sequencer if stage 2 has taken over the log again. A
    /// request for a batch already taken is kept: it may be the new term's
    /// (stage 2 asks once and waits for a batch); one left over from the old
    /// term costs nothing, since stage 2 takes batches only when it can.
    fn adopt_takeover(&self, sequencing: &mut Sequencing) {
        if let Ok(takeover) = self.recovered.try_recv() {
            tracing::info!(term = takeover.term, "sequencing again from the log recovered anew");
            let (batch_wanted, pacing) = (sequencing.batch_wanted, sequencing.pacing);
            *sequencing = self.start(takeover);
            sequencing.batch_wanted = batch_wanted;
            sequencing.pacing = pacing;
        }
    }

    /// The next batch of requests: whatever is queued (up to the limit), or,
    /// with a batch timeout, whatever arrives within it. The flag says a
    /// shutdown was received.
    fn collect_batch(&self) -> (Vec<Box<Connection>>, bool) {
        let mut connections = Vec::new();
        let first = self.requests.recv();
        let mut taken_at = Instant::now();
        match first {
            Ok(StageMessage::Request(connection)) => take(&mut connections, connection, taken_at),
            Ok(StageMessage::Shutdown) | Err(_) => return (connections, true),
        }
        let deadline = taken_at + self.batch_timeout;
        while connections.len() < self.batch_max {
            let message = if self.batch_timeout.is_zero() {
                self.requests.try_recv().ok()
            } else {
                let message = self.requests.recv_deadline(deadline).ok();
                taken_at = Instant::now();
                message
            };
            match message {
                Some(StageMessage::Request(connection)) => take(&mut connections, connection, taken_at),
                Some(StageMessage::Shutdown) => return (connections, true),
                None => break,
            }
        }
        (connections, false)
    }

    /// Waits until stage 2 asks for a batch; true if a shutdown arrived
    /// instead. Requests that arrive meanwhile stay in the queue and are
    /// taken together once it asks: waking for each of them (as this did)
    /// cost two context switches per request on a busy core. Every
    /// `READY_POLL` the queue is looked at anyway, for a shutdown and so that
    /// it does not fill while storage is slow. Gives up (false) once the
    /// server is no longer ready: stage 2 will not ask.
    fn wait_until_wanted(&self, sequencing: &mut Sequencing, connections: &mut Vec<Box<Connection>>) -> bool {
        while !sequencing.batch_wanted && self.published.is_ready() {
            select! {
                // Disconnected means stage 2 is gone: stop waiting for it.
                recv(self.batch_wanted) -> _ => sequencing.batch_wanted = true,
                default(READY_POLL) => {
                    if self.take_queued(connections) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Holds back a batch smaller than `min_batch_alongside`: while other
    /// batch writes are in flight, until it has grown to that or nothing is
    /// in flight; then until `batch_interval` has passed since the previous
    /// batch, unless no one else could send a request meanwhile (every client
    /// connection is waiting in the pipeline) or the last such hold gathered
    /// nothing (`Pacing`). True if a shutdown arrived.
    ///
    /// On a core the stages share, every batch costs a round of thread
    /// wake-ups and, on local disk, a file and a journal sync, nearly as much
    /// for one commit as for sixteen; at moderate load batches would
    /// otherwise shrink to one or two commits and that cost would fill the
    /// core (docs/benchmarks.md). Arrivals do not wake this thread one by
    /// one: it looks at the queue when the last write in flight lands, when
    /// the interval is over, when a reactor says that enough requests are
    /// queued or that no more can come (`PipelineSender::try_send`), and
    /// every `batch_interval` (at least `HOLD_POLL_MIN`) while writes are in
    /// flight, so holding costs a few wake-ups per batch, not one per
    /// request.
    fn hold_small_batch(&self, pacing: &mut Pacing, connections: &mut Vec<Box<Connection>>) -> bool {
        // With no interval, the tokens alone end a hold beside writes in
        // flight; the poll is only a safety net.
        let poll = match self.batch_interval.is_zero() {
            true => READY_POLL,
            false => self.batch_interval.clamp(HOLD_POLL_MIN, READY_POLL),
        };
        // Held for the interval (with how many requests at its start).
        let mut interval_hold: Option<usize> = None;
        loop {
            if self.take_queued(connections) {
                return true;
            }
            if connections.len() >= self.min_batch_alongside || !self.published.is_ready() {
                break;
            }
            let timeout = if self.published.writes_in_flight() > 0 {
                poll
            } else {
                let now = Instant::now();
                let Some(due) = pacing.last_batch_at.map(|at| at + self.batch_interval).filter(|&due| due > now) else {
                    break;
                };
                if self.published.every_client_waiting() {
                    break;
                }
                if interval_hold.is_none() {
                    let skipping = pacing.hold_gathered_nothing_at.is_some_and(|at| now - at < HOLD_PROBE);
                    if skipping && connections.len() < 2 {
                        break;
                    }
                    interval_hold = Some(connections.len());
                }
                due - now
            };
            // Woken by a token to look again (the pipeline and the reactors
            // hold senders, so it is never disconnected while this runs).
            let _ = self.look_again.recv_timeout(timeout);
        }
        if let Some(before) = interval_hold {
            pacing.hold_gathered_nothing_at = (connections.len() <= before).then(Instant::now);
        }
        false
    }

    /// Adds what is queued (up to the batch limit) without waiting; true if
    /// a shutdown was among it.
    fn take_queued(&self, connections: &mut Vec<Box<Connection>>) -> bool {
        let taken_at = Instant::now();
        while connections.len() < self.batch_max {
            match self.requests.try_recv() {
                Ok(StageMessage::Request(connection)) => take(connections, connection, taken_at),
                Ok(StageMessage::Shutdown) => return true,
                Err(_) => break,
            }
        }
        false
    }

    fn decide(&self, sequencing: &mut Sequencing, connections: Vec<Box<Connection>>) {
        let started = Instant::now();
        let queue_seconds = self.metrics.stage_seconds("queue");
        let mut first_taken = started;
        for connection in &connections {
            let taken_at = connection.taken_at();
            queue_seconds.observe(taken_at.saturating_duration_since(connection.received_at()).as_secs_f64());
            first_taken = first_taken.min(taken_at);
        }
        // Per batch, as a hold is: one histogram update per request (a lock
        // and a bucket search) is already the queue's.
        let batch_wait = started.saturating_duration_since(first_taken);
        self.metrics.stage_seconds("batch_wait").observe(batch_wait.as_secs_f64());
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let decisions = {
            let inputs: Vec<Input<'_>> = connections.iter().map(|connection| input_of(connection)).collect();
            sequencing.sequencer.decide(now_ms, self.published.oldest_version(), &inputs)
        };
        // After a new takeover the sequencer starts below what was published
        // (the lost term's commits); the published version never goes back.
        let committed_version = sequencing.sequencer.committed_version();
        if committed_version > self.published.committed_version() {
            self.published.set_committed_version(committed_version);
        }
        let timestamp_ms = sequencing.sequencer.last_timestamp_ms();
        let term = sequencing.term;
        let mut batches = BatchBuilder::new(sequencing, self.batch_bytes_max);
        let mut after_batches = Vec::new();
        // Answered at once (not committed, errors), sent together at the end.
        let mut replies = Vec::new();
        // Counted here and added once per outcome: the counter family's
        // lookup takes a lock and hashes the label.
        let mut outcomes: Vec<(&'static str, u64)> = Vec::new();
        for (connection, decision) in connections.into_iter().zip(decisions) {
            if let Some(outcome) = outcome_label(&decision) {
                match outcomes.iter_mut().find(|(label, _)| *label == outcome) {
                    Some((_, count)) => *count += 1,
                    None => outcomes.push((outcome, 1)),
                }
            }
            match decision {
                Decision::Committed { version } => batches.push(connection, version, timestamp_ms),
                Decision::Duplicate { version } => {
                    let message = ReplyMessage { connection, reply: Reply::Committed { version, duplicate: true } };
                    after_batches.push(PersistMessage::AwaitDurable { message, version, term });
                }
                Decision::StatusCommitted { version } | Decision::StatusNotCommitted { version } => {
                    let committed = matches!(decision, Decision::StatusCommitted { .. });
                    let message = ReplyMessage { connection, reply: Reply::Status { committed, version } };
                    after_batches.push(PersistMessage::AwaitDurable { message, version, term });
                }
                Decision::StatusSearchLog { min_version, below, version } => {
                    self.search_history(connection, min_version, below, version, term);
                }
                Decision::NotCommitted { reason, conflicts, version } => {
                    let reply = Reply::NotCommitted { reason: reason.as_str(), conflicts, version };
                    replies.push(ReplyMessage { connection, reply });
                }
                Decision::BadRequest(message) => {
                    replies.push(ReplyMessage { connection, reply: Reply::Error(ApiError::BadRequest(message)) });
                }
                Decision::VersionTooOld { oldest_version } => {
                    let message =
                        format!("min_version is older than the retained log, which starts after {oldest_version}");
                    let reply = Reply::Error(ApiError::VersionTooOld { message, oldest_version });
                    replies.push(ReplyMessage { connection, reply });
                }
            }
        }
        for (outcome, count) in outcomes {
            self.metrics.record_commit_outcomes(outcome, count);
        }
        // Batches first, then what waits on them, so stage 2 sees them in order.
        let batches = batches.finish();
        if !batches.is_empty() {
            sequencing.batch_wanted = false;
            sequencing.pacing.last_batch_at = Some(Instant::now());
        }
        for (batch, waiting) in batches {
            self.metrics.batch_transactions.observe(f64::from(batch.transaction_count));
            let _ = self.to_persist.send(PersistMessage::Batch { batch, waiting, term });
        }
        for message in after_batches {
            let _ = self.to_persist.send(message);
        }
        self.send_replies(replies);
        self.metrics.stage_seconds("decide").observe(started.elapsed().as_secs_f64());
    }

    fn search_history(&self, connection: Box<Connection>, min_version: u64, below: u64, version: u64, term: u64) {
        let request_id = connection.status_query().request_id.clone();
        let request = SearchRequest { connection, request_id, min_version, below, version, term };
        if let Err(TrySendError::Full(request) | TrySendError::Disconnected(request)) =
            self.to_history.try_send(request)
        {
            let error = ApiError::Unavailable("too many status lookups in the log at once; retry shortly".into());
            self.reply(ReplyMessage { connection: request.connection, reply: Reply::Error(error) });
        }
    }

    fn refuse_not_leader(&self, connection: Box<Connection>) {
        let reply = if connection.route() == Route::Commit && connection.commit().leader_id().is_some() {
            Reply::NotCommitted {
                reason: "leader_changed",
                conflicts: Vec::new(),
                version: self.published.durable_version(),
            }
        } else {
            Reply::Error(ApiError::Unavailable("this server is no longer the leader".into()))
        };
        self.reply(ReplyMessage { connection, reply });
    }

    fn reply(&self, message: ReplyMessage) {
        self.send_replies(vec![message]);
    }

    fn send_replies(&self, replies: Replies) {
        if replies.is_empty() {
            return;
        }
        // The reply stage outlives this one (it stops after us), so a send
        // can only fail if it crashed; the connections are then dropped.
        let _ = self.to_reply.send(replies);
    }
}

/// Encodes committed transactions into batch objects of at most
/// `bytes_max` (one transaction may exceed it alone), each with the replies
/// that wait for it.
struct BatchBuilder<'s> {
    sequencing: &'s mut Sequencing,
    bytes_max: usize,
    current: Option<(BatchEncoder, Vec<ReplyMessage>)>,
    done: Vec<(EncodedBatch, Vec<ReplyMessage>)>,
}

impl<'s> BatchBuilder<'s> {
    fn new(sequencing: &'s mut Sequencing, bytes_max: usize) -> Self {
        BatchBuilder { sequencing, bytes_max, current: None, done: Vec::new() }
    }

    fn push(&mut self, connection: Box<Connection>, version: u64, timestamp_ms: u64) {
        let leader_id = self.sequencing.sequencer.leader_id();
        let log_version = self.sequencing.log_version;
        let (encoder, waiting) =
            self.current.get_or_insert_with(|| (BatchEncoder::new(leader_id, log_version), Vec::new()));
        let commit = connection.commit();
        encoder.push(version, commit.request_id(), timestamp_ms, commit.operations());
        waiting.push(ReplyMessage { connection, reply: Reply::Committed { version, duplicate: false } });
        self.sequencing.log_version = version;
        if encoder.len_bytes() >= self.bytes_max {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Some((encoder, waiting)) = self.current.take() {
            self.done.push((encoder.finish(), waiting));
        }
    }

    fn finish(mut self) -> Vec<(EncodedBatch, Vec<ReplyMessage>)> {
        self.close();
        self.done
    }
}

/// The `outcome` label of a commit decision (status lookups have none).
fn outcome_label(decision: &Decision) -> Option<&'static str> {
    match decision {
        Decision::Committed { .. } => Some("committed"),
        Decision::Duplicate { .. } => Some("duplicate"),
        Decision::NotCommitted { reason, .. } => Some(reason.as_str()),
        Decision::BadRequest(_) => Some("bad_request"),
        _ => None,
    }
}

fn input_of(connection: &Connection) -> Input<'_> {
    match connection.route() {
        Route::Status => {
            let query = connection.status_query();
            Input::Status { request_id: &query.request_id, min_version: query.min_version }
        }
        _ => Input::Commit(connection.commit()),
    }
}

/// Adds a request taken off the queue at `taken_at` to the batch being
/// formed.
fn take(connections: &mut Vec<Box<Connection>>, mut connection: Box<Connection>, taken_at: Instant) {
    connection.set_taken_at(taken_at);
    connections.push(connection);
}
