//! The commit pipeline: three stage threads joined by bounded channels.
//!
//! ```text
//! reactors ──StageMessage──► 1 sequence ──PersistMessage──► 2 persist ──Replies──► 3 reply ──► reactors
//!                               └──────────────── Replies (not committed, errors) ────┘
//! ```
//!
//! A request travels as `Box<Connection>` with its parsed commit or status
//! query inside; the last stage writes the response into it and returns it to
//! its home reactor. Each stage owns its state and takes one message enum.
//! Connections leave stages 1 and 2 and stage 3 in groups (`Replies`, one
//! mail per reactor): what one batch releases wakes the next thread once,
//! not once per request, which on a busy core would switch threads for
//! every answer.
//!
//! The retention worker (`crate::retention::worker`) is started here too: it
//! takes `/v1/retention/` requests from the reactors on its own bounded
//! queue, gets the store from stage 2 once the log is recovered, and stops
//! with the stages.
//!
//! Invariants:
//! - Only stage 1 assigns versions; only stage 2 moves the durable version.
//! - A commit (or a status answer naming a version) is answered only once
//!   the durable version has reached that version.
//! - Every channel is bounded; a full stage blocks the one before it, and a
//!   full input queue is answered 429 by the reactors.

mod history;
mod persist;
pub mod published;
mod reply;
mod sequence;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use crate::commit::sequencer::SequencerConfig;
use crate::config::{CommitConfig, PersistConfig, RetentionConfig};
use crate::log::format::EncodedBatch;
use crate::ops::metrics::Metrics;
use crate::retention::worker::{self as retention_worker, RetentionMessage, RetentionWorker};
use crate::server::connection::Connection;
use crate::server::ReactorHandles;
use crate::subscribe::feed::Feed;
use crate::subscribe::history::{Deliver, HistoryRequest};
pub use persist::StoreOpener;
use published::Published;

/// Messages that may wait between the sequencer and persistence. Batches do
/// not pile up here: the sequencer decides a batch only when persistence has
/// asked for one (see `sequence.rs`).
const PERSIST_QUEUE_DEPTH: usize = 16;
/// Groups of replies that may wait for the reply stage (a group is what one
/// batch or one decision released; connections are bounded by
/// `server.max_connections` in any case).
const REPLY_QUEUE_DEPTH: usize = 4096;

/// The one message type stage 1 takes.
pub enum StageMessage {
    /// A complete request and the connection it came on.
    Request(Box<Connection>),
    /// Finish what is queued, then stop (each stage passes it on).
    Shutdown,
}

/// What the pipeline needs to start.
pub struct PipelineParts {
    pub queue_depth: usize,
    pub commit: CommitConfig,
    pub persist: PersistConfig,
    pub retention: RetentionConfig,
    pub open_store: StoreOpener,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    /// Stage 2 pushes batches into it for subscribers.
    pub feed: Arc<Feed>,
    /// Subscribers' history reads; stage 2 starts their reader once the
    /// store is open.
    pub subscribe_history: crossbeam_channel::Receiver<HistoryRequest>,
    pub deliver_history: Deliver,
}

/// How long stopping waits for the stages to finish what they have.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The running stages and the sending side of their input queue.
pub struct Pipeline {
    /// The input queue (its sender), as reactors use it.
    reactors_sender: PipelineSender,
    /// Policy requests to the retention worker.
    retention: Sender<RetentionMessage>,
    /// Disconnects when every stage thread has ended.
    stages_running: crossbeam_channel::Receiver<()>,
    threads: Vec<JoinHandle<()>>,
}

/// How a reactor hands a request to stage 1.
#[derive(Clone)]
pub struct PipelineSender {
    requests: Sender<StageMessage>,
    look_again: Sender<()>,
    published: Arc<Published>,
    /// Queued requests that end a hold of stage 1 (`min_batch_alongside`,
    /// at most the queue's capacity); `None` when stage 1 never holds a
    /// batch back (`min_batch_alongside` 1, the S3 default), so no token is
    /// ever needed.
    enough_queued: Option<usize>,
}

impl PipelineSender {
    /// Hands a request to stage 1; a full queue fails at once. The request is
    /// counted in the pipeline first (stage 3 may give it back before this
    /// returns). Stage 1 is told to look again if a batch it holds back for
    /// more requests need not wait any longer: this request's connection was
    /// the last client connection not yet waiting in the pipeline (no more
    /// will come), or the queue now holds `min_batch_alongside` requests.
    pub fn try_send(&self, connection: Box<Connection>) -> Result<(), TrySendError<StageMessage>> {
        self.published.request_entered_pipeline();
        let sent = self.requests.try_send(StageMessage::Request(connection));
        match (&sent, self.enough_queued) {
            (Ok(()), Some(enough)) if self.requests.len() >= enough || self.published.every_client_waiting() => {
                let _ = self.look_again.try_send(());
            }
            (Ok(()), _) => {}
            (Err(_), _) => self.published.requests_left_pipeline(1),
        }
        sent
    }

    /// Requests queued for stage 1.
    pub fn queued(&self) -> usize {
        self.requests.len()
    }
}

impl Pipeline {
    /// Starts the stage threads; replies go back through `reactors`. Stage 2
    /// recovers the log first; until then requests are answered 503.
    pub fn start(parts: PipelineParts, reactors: Arc<ReactorHandles>) -> std::io::Result<Pipeline> {
        let (sender, requests) = crossbeam_channel::bounded(parts.queue_depth);
        let (to_persist, persist_inbox) = crossbeam_channel::bounded(PERSIST_QUEUE_DEPTH);
        let (to_reply, reply_inbox) = crossbeam_channel::bounded(REPLY_QUEUE_DEPTH);
        let (to_history, history_requests) = crossbeam_channel::bounded(history::QUEUE_DEPTH);
        let (to_sequencer, recovered) = crossbeam_channel::bounded(1);
        let (ready_for_batch, batch_wanted) = crossbeam_channel::bounded(1);
        let (look_again, looking_again) = crossbeam_channel::bounded(1);
        // Never more than a batch may hold.
        let min_batch_alongside =
            parts.persist.batch_min_alongside.clamp(1, parts.commit.batch_transactions_max.max(1));
        let (retention, retention_inbox) = crossbeam_channel::bounded(retention_worker::QUEUE_DEPTH);
        let config = SequencerConfig {
            conflict_window_ms: parts.commit.conflict_window_ms,
            conflict_window_versions: parts.commit.conflict_window_versions,
            request_index_capacity: parts.commit.request_index_capacity,
        };
        let stage1 = sequence::SequenceStage {
            requests,
            to_persist: to_persist.clone(),
            to_reply: to_reply.clone(),
            to_history,
            recovered,
            batch_wanted,
            look_again: looking_again,
            min_batch_alongside,
            batch_interval: Duration::from_micros(parts.persist.batch_interval_us),
            config,
            published: parts.published.clone(),
            metrics: parts.metrics.clone(),
            batch_max: parts.commit.batch_transactions_max,
            batch_timeout: Duration::from_micros(parts.persist.batch_timeout_us),
            batch_bytes_max: parts.persist.batch_bytes_max,
        };
        let stage2 = persist::PersistStage {
            inbox: persist_inbox,
            to_reply: to_reply.clone(),
            to_sequencer,
            ready_for_batch,
            look_again: look_again.clone(),
            history_requests,
            history_to_persist: to_persist,
            open_store: parts.open_store,
            request_ids_recovered: parts.commit.request_index_capacity,
            config: parts.persist,
            published: parts.published.clone(),
            metrics: parts.metrics.clone(),
            feed: parts.feed,
            subscribe_history: Some((parts.subscribe_history, parts.deliver_history)),
            retention: retention.clone(),
        };
        let retention_worker = RetentionWorker {
            inbox: retention_inbox,
            reactors: reactors.clone(),
            published: parts.published.clone(),
            metrics: parts.metrics.clone(),
            config: parts.retention,
        };
        let stage3 = reply::ReplyStage {
            inbox: reply_inbox,
            reactors,
            leader_id_field: reply::leader_id_field(&parts.published.leader_id),
            metrics: parts.metrics.clone(),
            published: parts.published.clone(),
        };
        drop(to_reply);
        let (running, stages_running) = crossbeam_channel::bounded::<()>(0);
        let (running1, running2, running3, running4) = (running.clone(), running.clone(), running.clone(), running);
        let threads = vec![
            spawn("stoat-sequence", move || {
                stage1.run();
                drop(running1);
            })?,
            spawn("stoat-persist", move || {
                stage2.run();
                drop(running2);
            })?,
            spawn("stoat-reply", move || {
                stage3.run();
                drop(running3);
            })?,
            spawn("stoat-retention", move || {
                retention_worker.run();
                drop(running4);
            })?,
        ];
        let enough_queued =
            (min_batch_alongside > 1).then(|| min_batch_alongside.min(sender.capacity().unwrap_or(usize::MAX)).max(1));
        let reactors_sender =
            PipelineSender { requests: sender, look_again, published: parts.published, enough_queued };
        Ok(Pipeline { reactors_sender, retention, stages_running, threads })
    }

    /// What reactors hand requests to stage 1 with.
    pub fn sender(&self) -> PipelineSender {
        self.reactors_sender.clone()
    }

    /// The retention worker's queue, for reactors (`try_send`; full: 429).
    pub fn retention_sender(&self) -> Sender<RetentionMessage> {
        self.retention.clone()
    }

    /// Asks the stages to finish what they have and waits for them, for at
    /// most `STOP_TIMEOUT` (a stage stuck on storage must not hold the
    /// process; nothing unacknowledged is lost by exiting).
    pub fn stop(self) {
        let deadline = std::time::Instant::now() + STOP_TIMEOUT;
        // The worker finishes the request or the delete it is doing; an
        // interrupted round leaves no hole (it deletes oldest first).
        let _ = self.retention.send_deadline(RetentionMessage::Shutdown, deadline);
        if self.reactors_sender.requests.send_deadline(StageMessage::Shutdown, deadline).is_err() {
            tracing::warn!("the pipeline did not take the shutdown in time");
            return;
        }
        // A batch stage 1 holds back sees the shutdown now.
        let _ = self.reactors_sender.look_again.try_send(());
        match self.stages_running.recv_deadline(deadline) {
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                for thread in self.threads {
                    let _ = thread.join();
                }
            }
            _ => tracing::warn!("the pipeline did not stop in time; exiting anyway"),
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(body)
}

/// What a connection is answered with, built by stage 3.
#[derive(Debug)]
pub(crate) enum Reply {
    Committed { version: u64, duplicate: bool },
    NotCommitted { reason: &'static str, conflicts: Vec<usize>, version: u64 },
    Status { committed: bool, version: u64 },
    Error(crate::server::response::ApiError),
}

/// A connection and its answer, on the way to stage 3.
pub(crate) struct ReplyMessage {
    pub connection: Box<Connection>,
    pub reply: Reply,
}

/// What stage 3 takes: the replies released together, in order.
pub(crate) type Replies = Vec<ReplyMessage>;

/// Messages stage 2 takes.
pub(crate) enum PersistMessage {
    /// A batch object of committed transactions, and the commits that wait
    /// for it to be durable.
    Batch {
        batch: EncodedBatch,
        waiting: Vec<ReplyMessage>,
        term: u64,
    },
    /// Answer once the durable version reaches `version`.
    AwaitDurable {
        message: ReplyMessage,
        version: u64,
        term: u64,
    },
    Shutdown,
}

/// Stage 2 to stage 1: the state to sequence from, once the log is
/// recovered. `term` counts this process's takeovers of the log (0 for the
/// first; another follows only when the first batch of one lost its name to
/// the previous leader's late write, see `persist.rs`). Everything stage 1
/// decides carries the term it was decided in, and stage 2 answers 503 to
/// what belongs to a term that is over: its decisions rest on a log that
/// turned out to continue differently.
pub(crate) struct Takeover {
    pub recovered: crate::commit::sequencer::Recovered,
    pub term: u64,
}
