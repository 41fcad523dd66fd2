//! Stage 1: takes requests in arrival order, decides them in batches with the
//! sequencer core, and sends each on to persistence or straight to a reply.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use super::published::Published;
use super::{PersistMessage, Reply, ReplyMessage, StageMessage};
use crate::commit::sequencer::{Decision, Input, Sequencer};
use crate::commit::transaction::LoggedTransaction;
use crate::ops::metrics::Metrics;
use crate::server::connection::Connection;
use crate::server::response::ApiError;
use crate::server::routes::Route;

pub(super) struct SequenceStage {
    pub requests: Receiver<StageMessage>,
    pub to_persist: Sender<PersistMessage>,
    pub to_reply: Sender<ReplyMessage>,
    pub sequencer: Sequencer,
    pub published: Arc<Published>,
    pub metrics: Arc<Metrics>,
    pub batch_max: usize,
}

impl SequenceStage {
    pub fn run(mut self) {
        while let Ok(first) = self.requests.recv() {
            let mut connections = Vec::new();
            let mut stopping = false;
            match first {
                StageMessage::Request(connection) => connections.push(connection),
                StageMessage::Shutdown => stopping = true,
            }
            // Take whatever else is waiting, up to the batch limit: batches
            // form from load, without waiting.
            while !stopping && connections.len() < self.batch_max {
                match self.requests.try_recv() {
                    Ok(StageMessage::Request(connection)) => connections.push(connection),
                    Ok(StageMessage::Shutdown) => stopping = true,
                    Err(_) => break,
                }
            }
            if !connections.is_empty() {
                self.decide(connections);
            }
            if stopping {
                let _ = self.to_persist.send(PersistMessage::Shutdown);
                return;
            }
        }
    }

    // The boxes are the connections' identity between threads: each one
    // moves on, alone, to the stage that answers it.
    #[allow(clippy::vec_box)]
    fn decide(&mut self, connections: Vec<Box<Connection>>) {
        let started = Instant::now();
        let queue_seconds = self.metrics.stage_seconds("queue");
        for connection in &connections {
            queue_seconds.observe(started.saturating_duration_since(connection.received_at()).as_secs_f64());
        }
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let decisions = {
            let inputs: Vec<Input<'_>> = connections.iter().map(|connection| input_of(connection)).collect();
            self.sequencer.decide(now_ms, self.published.oldest_version(), &inputs)
        };
        self.published.set_committed_version(self.sequencer.committed_version());
        let timestamp_ms = self.sequencer.last_timestamp_ms();
        let mut transactions = Vec::new();
        let mut waiting = Vec::new();
        let mut after_batch = Vec::new();
        for (connection, decision) in connections.into_iter().zip(decisions) {
            if let Some(outcome) = outcome_label(&decision) {
                self.metrics.record_commit_outcome(outcome);
            }
            match decision {
                Decision::Committed { version } => {
                    transactions.push(logged(&connection, version, timestamp_ms));
                    waiting.push(ReplyMessage { connection, reply: Reply::Committed { version, duplicate: false } });
                }
                Decision::Duplicate { version } => {
                    let message = ReplyMessage { connection, reply: Reply::Committed { version, duplicate: true } };
                    after_batch.push(PersistMessage::AwaitDurable { message, version });
                }
                Decision::StatusCommitted { version } | Decision::StatusNotCommitted { version } => {
                    let committed = matches!(decision, Decision::StatusCommitted { .. });
                    let message = ReplyMessage { connection, reply: Reply::Status { committed, version } };
                    after_batch.push(PersistMessage::AwaitDurable { message, version });
                }
                Decision::StatusSearchLog { min_version, below, version } => {
                    let request_id = connection.status_query().request_id.clone();
                    after_batch.push(PersistMessage::SearchLog { connection, request_id, min_version, below, version });
                }
                Decision::NotCommitted { reason, conflicts, version } => {
                    let reply = Reply::NotCommitted { reason: reason.as_str(), conflicts, version };
                    self.reply(ReplyMessage { connection, reply });
                }
                Decision::BadRequest(message) => {
                    self.reply(ReplyMessage { connection, reply: Reply::Error(ApiError::BadRequest(message)) });
                }
                Decision::VersionTooOld { oldest_version } => {
                    let message =
                        format!("min_version is older than the retained log, which starts at {oldest_version}");
                    let reply = Reply::Error(ApiError::VersionTooOld { message, oldest_version });
                    self.reply(ReplyMessage { connection, reply });
                }
            }
        }
        self.metrics.batch_transactions.observe(transactions.len() as f64);
        if !transactions.is_empty() {
            let _ = self.to_persist.send(PersistMessage::Batch { transactions, waiting });
        }
        for message in after_batch {
            let _ = self.to_persist.send(message);
        }
        self.metrics.stage_seconds("decide").observe(started.elapsed().as_secs_f64());
    }

    fn reply(&self, message: ReplyMessage) {
        // The reply stage outlives this one (it stops after us), so a send
        // can only fail if it crashed; the connection is then dropped.
        let _ = self.to_reply.send(message);
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

fn logged(connection: &Connection, version: u64, timestamp_ms: u64) -> LoggedTransaction {
    let commit = connection.commit();
    LoggedTransaction {
        version,
        request_id: commit.request_id().to_string(),
        timestamp_ms,
        operations: commit.operations().map(|operation| operation.to_owned()).collect(),
    }
}
