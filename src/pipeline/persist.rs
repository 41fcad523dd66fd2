//! Stage 2: makes committed batches durable, publishes the durable version,
//! and releases replies once the versions they name are durable.
//!
//! The log here is an in-memory stand-in: a batch is durable as soon as it is
//! stored. The durable log (object storage) replaces `MemoryLog` behind the
//! same messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use super::published::Published;
use super::{PersistMessage, Reply, ReplyMessage};
use crate::commit::transaction::LoggedTransaction;
use crate::ops::metrics::Metrics;

pub(super) struct PersistStage {
    inbox: Receiver<PersistMessage>,
    to_reply: Sender<ReplyMessage>,
    published: Arc<Published>,
    metrics: Arc<Metrics>,
    log: MemoryLog,
    durable_version: u64,
    /// Replies waiting for the durable version to reach their key.
    awaiting: BTreeMap<u64, Vec<ReplyMessage>>,
}

impl PersistStage {
    pub fn new(
        inbox: Receiver<PersistMessage>,
        to_reply: Sender<ReplyMessage>,
        published: Arc<Published>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let durable_version = published.durable_version();
        PersistStage {
            inbox,
            to_reply,
            published,
            metrics,
            log: MemoryLog::default(),
            durable_version,
            awaiting: BTreeMap::new(),
        }
    }

    pub fn run(mut self) {
        while let Ok(message) = self.inbox.recv() {
            match message {
                PersistMessage::Batch { transactions, waiting } => self.persist(transactions, waiting),
                PersistMessage::AwaitDurable { message, version } => self.await_durable(message, version),
                PersistMessage::SearchLog { connection, request_id, min_version, below, version } => {
                    let found = self.log.find(&request_id, min_version, below);
                    let reply = match found {
                        Some(committed_at) => Reply::Status { committed: true, version: committed_at },
                        None => Reply::Status { committed: false, version },
                    };
                    self.await_durable(ReplyMessage { connection, reply }, version);
                }
                PersistMessage::Shutdown => break,
            }
        }
        // Everything still waiting names versions that were never made
        // durable (there are none with the in-memory log); dropping the
        // connections closes them unanswered, which is what a crash does.
    }

    fn persist(&mut self, transactions: Vec<LoggedTransaction>, waiting: Vec<ReplyMessage>) {
        let started = Instant::now();
        let Some(last) = transactions.last().map(|transaction| transaction.version) else {
            return;
        };
        self.log.append(transactions);
        self.metrics.stage_seconds("durable_wait").observe(started.elapsed().as_secs_f64());
        for message in waiting {
            self.awaiting.entry(last).or_default().push(message);
        }
        self.advance_durable(last);
    }

    fn advance_durable(&mut self, version: u64) {
        assert!(version >= self.durable_version, "durable version must not go back");
        self.durable_version = version;
        self.published.set_durable_version(version);
        let still_waiting = self.awaiting.split_off(&(version + 1));
        for (_, messages) in std::mem::replace(&mut self.awaiting, still_waiting) {
            for message in messages {
                let _ = self.to_reply.send(message);
            }
        }
    }

    fn await_durable(&mut self, message: ReplyMessage, version: u64) {
        if version <= self.durable_version {
            let _ = self.to_reply.send(message);
        } else {
            self.awaiting.entry(version).or_default().push(message);
        }
    }
}

/// The stand-in log: every committed transaction, in version order.
#[derive(Default)]
struct MemoryLog {
    transactions: Vec<LoggedTransaction>,
}

impl MemoryLog {
    fn append(&mut self, transactions: Vec<LoggedTransaction>) {
        for transaction in transactions {
            if let Some(last) = self.transactions.last() {
                assert!(transaction.version > last.version, "the log's versions must increase");
            }
            self.transactions.push(transaction);
        }
    }

    /// The version at which `request_id` committed, if in `[min_version, below)`.
    fn find(&self, request_id: &str, min_version: u64, below: u64) -> Option<u64> {
        let start = self.transactions.partition_point(|t| t.version < min_version);
        self.transactions[start..]
            .iter()
            .take_while(|t| t.version < below)
            .find(|t| t.request_id == request_id)
            .map(|t| t.version)
    }
}
