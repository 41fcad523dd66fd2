//! One subscriber's stream: where it is in the log and what it sends next.
//! No IO: the reactor asks it for the next bytes (shared event bytes of a
//! batch, or bytes appended to the connection's output), writes them, and
//! carries out its requests for history.
//!
//! Invariants:
//! - Gapless: every batch served continues the stream's position
//!   (`prev_version <= position < last_version`, checked for each one);
//!   anything else ends the stream with an error event rather than skip.
//! - In order: nothing is appended to the output while shared bytes are
//!   being written (`advance` is called only once they are all out).
//! - Bounded: a stream holds at most the batch it is writing and
//!   `HISTORY_BATCHES_AHEAD` batches read from storage.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::event::{self, Prefix};
use super::feed::{Events, Feed, FeedBatch, Lookup};
use super::history::HistoryAnswer;
use crate::pipeline::published::Published;

/// Batches read from storage ahead of the one being written, at most.
const HISTORY_BATCHES_AHEAD: usize = 2;

/// What `advance` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Advance {
    /// Something to write: shared bytes (see `shared`) or output appended.
    /// `events` transaction events were added.
    Progress { events: usize },
    /// Nothing to send until the feed moves or history arrives.
    Idle,
}

#[derive(Debug)]
struct SharedBytes {
    events: Arc<Events>,
    start: usize,
    end: usize,
}

#[derive(Debug)]
pub struct Subscription {
    /// Tells this stream's history answers from those of an earlier
    /// connection that had the same slot.
    pub serial: u64,
    durable: bool,
    prefix: Option<Prefix>,
    /// Every transaction up to this version has been sent (or filtered out).
    position: u64,
    /// `position` is the last version of a batch this stream served (not a
    /// version the client gave): the next batch is named `position + 1`.
    at_batch_end: bool,
    /// The version of the last event sent: a filtered stream's next
    /// `prev_version`.
    last_sent: u64,
    shared: Option<SharedBytes>,
    history: VecDeque<Arc<FeedBatch>>,
    history_requested: bool,
    pending_error: Option<(&'static str, String, Option<u64>)>,
    /// A checkpoint goes out at the next opportunity.
    pub checkpoint_due: bool,
    pub last_checkpoint: Instant,
    /// Has reached the live tail at least once (the first time, a
    /// checkpoint tells the client so).
    caught_up: bool,
    /// The error event is written; close once the output is out.
    ended: bool,
    /// Which subscriber gauge counts this stream (kept by the reactor).
    pub counted_catching_up: bool,
}

impl Subscription {
    pub fn new(serial: u64, after: u64, durable: bool, prefix: Option<Prefix>, now: Instant) -> Self {
        Subscription {
            serial,
            durable,
            prefix,
            position: after,
            at_batch_end: false,
            last_sent: after,
            shared: None,
            history: VecDeque::new(),
            history_requested: false,
            pending_error: None,
            checkpoint_due: false,
            last_checkpoint: now,
            caught_up: false,
            ended: false,
            counted_catching_up: false,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn is_durable(&self) -> bool {
        self.durable
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Reading history from storage rather than the live tail.
    pub fn is_catching_up(&self) -> bool {
        self.history_requested || !self.history.is_empty()
    }

    /// The shared event bytes still to write, if any.
    pub fn shared(&self) -> Option<&[u8]> {
        self.shared.as_ref().map(|shared| &shared.events.text[shared.start..shared.end])
    }

    /// `written` bytes of `shared()` went out.
    pub fn shared_written(&mut self, written: usize) {
        if let Some(shared) = self.shared.as_mut() {
            shared.start += written;
            debug_assert!(shared.start <= shared.end);
            if shared.start >= shared.end {
                self.shared = None;
            }
        }
    }

    /// Ends the stream with an error event (after what is being written).
    pub fn end(&mut self, code: &'static str, message: String, oldest_version: Option<u64>) {
        if !self.ended {
            self.pending_error.get_or_insert((code, message, oldest_version));
        }
    }

    /// Produces the next thing to send. Call only when everything produced
    /// before is written (no shared bytes, empty output).
    pub fn advance(&mut self, feed: &Feed, published: &Published, out: &mut Vec<u8>, now: Instant) -> Advance {
        debug_assert!(self.shared.is_none());
        if self.ended {
            return Advance::Idle;
        }
        if let Some((code, message, oldest)) = self.pending_error.take() {
            event::write_error(out, code, &message, oldest);
            self.ended = true;
            return Advance::Progress { events: 0 };
        }
        if self.checkpoint_due {
            self.write_checkpoint(out, published, now);
            return Advance::Progress { events: 0 };
        }
        while self.history.front().is_some_and(|batch| batch.last_version <= self.position) {
            self.history.pop_front();
        }
        let batch = match self.history.front() {
            Some(batch) => batch.clone(),
            None => match feed.lookup(self.position, self.durable) {
                Lookup::Batch(batch) => batch,
                Lookup::UpToDate => {
                    if !self.caught_up {
                        self.caught_up = true;
                        self.write_checkpoint(out, published, now);
                        return Advance::Progress { events: 0 };
                    }
                    return Advance::Idle;
                }
                // History is asked for through `history_wanted`.
                Lookup::Behind => return Advance::Idle,
            },
        };
        self.serve(&batch, out)
    }

    fn serve(&mut self, batch: &FeedBatch, out: &mut Vec<u8>) -> Advance {
        if !(batch.prev_version <= self.position && self.position < batch.last_version) {
            let message = format!(
                "internal error: the batch {}..={} (after {}) does not continue the stream at {}",
                batch.first_version, batch.last_version, batch.prev_version, self.position
            );
            tracing::error!(%message, "subscriber stream ended");
            self.end("internal", message, None);
            return Advance::Progress { events: 0 };
        }
        let events = match &self.prefix {
            None => match batch.events() {
                Ok(events) => {
                    let first = events.first_after(self.position);
                    let count = events.len() - first;
                    let (start, end) = (events.offset(first), events.text.len());
                    self.shared = (start < end).then_some(SharedBytes { events, start, end });
                    self.last_sent = batch.last_version;
                    count
                }
                Err(error) => return self.unreadable(batch, error),
            },
            Some(prefix) => match batch.view() {
                Ok(view) => {
                    let mut count = 0;
                    for transaction in view.transactions().filter(|t| t.version > self.position) {
                        if prefix.touches(&transaction) {
                            event::write_transaction(out, &transaction, self.last_sent, view.leader_id, Some(prefix));
                            self.last_sent = transaction.version;
                            count += 1;
                        }
                    }
                    count
                }
                Err(error) => return self.unreadable(batch, error),
            },
        };
        self.position = batch.last_version;
        self.at_batch_end = true;
        Advance::Progress { events }
    }

    fn unreadable(&mut self, batch: &FeedBatch, error: crate::log::format::FormatError) -> Advance {
        let message = format!("the batch after version {} cannot be read: {error}", batch.prev_version);
        tracing::error!(%message, "subscriber stream ended");
        self.end("internal", message, None);
        Advance::Progress { events: 0 }
    }

    /// A checkpoint: everything up to `committed_version` was sent (what a
    /// prefix filter kept of it); `durable_version` is what of that is
    /// durable, the point to resume from after a change of leader.
    fn write_checkpoint(&mut self, out: &mut Vec<u8>, published: &Published, now: Instant) {
        let durable = self.position.min(published.durable_version());
        event::write_checkpoint(out, self.position, durable, &published.leader_id);
        self.checkpoint_due = false;
        self.last_checkpoint = now;
    }

    /// The version after which history should be read from storage now, if
    /// a read should be asked for, and whether it is the end of a batch of
    /// the log (see `HistoryRequest::at_batch_end`).
    pub fn history_wanted(&self, feed: &Feed) -> Option<(u64, bool)> {
        if self.history_requested || self.history.len() >= HISTORY_BATCHES_AHEAD || self.ended {
            return None;
        }
        let (point, at_batch_end) = match self.history.back() {
            Some(batch) => (batch.last_version, true),
            None => (self.position, self.at_batch_end),
        };
        matches!(feed.lookup(point, self.durable), Lookup::Behind).then_some((point, at_batch_end))
    }

    /// The read asked for by `history_wanted` was queued.
    pub fn history_requested(&mut self) {
        self.history_requested = true;
    }

    /// The answer to the read asked for.
    pub fn history_arrived(&mut self, answer: HistoryAnswer) {
        self.history_requested = false;
        match answer {
            HistoryAnswer::Batch(batch) => self.history.push_back(batch),
            HistoryAnswer::TooOld { oldest_version } => self.end(
                "version_too_old",
                format!(
                    "history after version {} is no longer retained; the oldest version is {oldest_version}",
                    self.history.back().map_or(self.position, |batch| batch.last_version)
                ),
                Some(oldest_version),
            ),
            HistoryAnswer::Failed(message) => self.end("unavailable", message, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::transaction::OperationRef;
    use crate::log::format::{BatchEncoder, BatchView};

    fn batch(prev: u64, versions: std::ops::RangeInclusive<u64>, key_prefix: &str) -> Arc<FeedBatch> {
        let mut encoder = BatchEncoder::new("leader", prev);
        for version in versions {
            let key = format!("{key_prefix}{version}");
            encoder.push(version, "r", 0, [OperationRef::Write { key: key.as_bytes(), value: b"v" }]);
        }
        FeedBatch::from_encoded(&encoder.finish())
    }

    /// Runs a subscription until idle; returns the text it sent.
    fn drain(subscription: &mut Subscription, feed: &Feed, published: &Published) -> String {
        let mut sent = Vec::new();
        let mut out = Vec::new();
        loop {
            match subscription.advance(feed, published, &mut out, Instant::now()) {
                Advance::Idle => break,
                Advance::Progress { .. } => {
                    sent.append(&mut out);
                    if let Some(bytes) = subscription.shared() {
                        // Written in two parts, as a socket might.
                        let half = bytes.len() / 2;
                        sent.extend_from_slice(&bytes[..half]);
                        subscription.shared_written(half);
                        sent.extend_from_slice(subscription.shared().unwrap_or_default());
                        let rest = subscription.shared().map_or(0, <[u8]>::len);
                        subscription.shared_written(rest);
                    }
                }
            }
        }
        String::from_utf8(sent).unwrap()
    }

    /// `(id, prev_version)` of every transaction event in `text`.
    fn chain(text: &str) -> Vec<(u64, u64)> {
        text.split("\n\n")
            .filter(|event| event.contains("event: transaction"))
            .map(|event| {
                let data = event.lines().find_map(|line| line.strip_prefix("data: ")).unwrap();
                let json: serde_json::Value = serde_json::from_str(data).unwrap();
                (json["version"].as_u64().unwrap(), json["prev_version"].as_u64().unwrap())
            })
            .collect()
    }

    fn setup() -> (Feed, Published) {
        let feed = Feed::new(1 << 20);
        feed.reset(10);
        let published = Published::new("leader".into());
        published.set_committed_version(10);
        published.set_durable_version(10);
        (feed, published)
    }

    #[test]
    fn live_stream_sends_each_version_once_in_order_from_mid_batch() {
        let (feed, published) = setup();
        feed.push(batch(10, 11..=13, "k"));
        feed.push(batch(13, 15..=16, "k"));
        published.set_committed_version(16);
        published.set_durable_version(16);
        feed.durable_advanced(16);
        let mut subscription = Subscription::new(1, 12, true, None, Instant::now());
        let text = drain(&mut subscription, &feed, &published);
        assert_eq!(chain(&text), [(13, 12), (15, 13), (16, 15)]);
        // The first catch-up ends with a checkpoint at the position.
        assert!(text.ends_with("event: checkpoint\ndata: {\"committed_version\":16,\"durable_version\":16,\"leader_id\":\"leader\"}\n\n"), "{text}");
        feed.push(batch(16, 17..=17, "k"));
        published.set_committed_version(17);
        // Durable: nothing until it is durable.
        assert_eq!(drain(&mut subscription, &feed, &published), "");
        published.set_durable_version(17);
        feed.durable_advanced(17);
        assert_eq!(chain(&drain(&mut subscription, &feed, &published)), [(17, 16)]);
    }

    #[test]
    fn undurable_streams_see_commits_before_durability() {
        let (feed, published) = setup();
        feed.push(batch(10, 11..=12, "k"));
        published.set_committed_version(12);
        let mut subscription = Subscription::new(1, 10, false, None, Instant::now());
        let text = drain(&mut subscription, &feed, &published);
        assert_eq!(chain(&text), [(11, 10), (12, 11)]);
        // Its checkpoint says how much of it is durable: the resume point.
        assert!(text.contains("{\"committed_version\":12,\"durable_version\":10,"), "{text}");
    }

    #[test]
    fn a_stream_behind_the_feed_reads_history_then_joins_the_tail() {
        let (feed, published) = setup();
        feed.push(batch(10, 11..=12, "k"));
        published.set_committed_version(12);
        published.set_durable_version(12);
        feed.durable_advanced(12);
        let mut subscription = Subscription::new(1, 3, true, None, Instant::now());
        assert_eq!(drain(&mut subscription, &feed, &published), "");
        assert_eq!(subscription.history_wanted(&feed), Some((3, false)), "a version the client gave");
        subscription.history_requested();
        assert!(subscription.is_catching_up());
        assert_eq!(subscription.history_wanted(&feed), None);
        subscription.history_arrived(HistoryAnswer::Batch(batch(2, 4..=6, "k")));
        // Prefetch the next one while this one is written.
        assert_eq!(subscription.history_wanted(&feed), Some((6, true)), "the end of a batch of the log");
        subscription.history_requested();
        subscription.history_arrived(HistoryAnswer::Batch(batch(6, 8..=10, "k")));
        assert_eq!(subscription.history_wanted(&feed), None, "the feed continues from 10");
        let text = drain(&mut subscription, &feed, &published);
        assert_eq!(chain(&text), [(4, 2), (5, 4), (6, 5), (8, 6), (9, 8), (10, 9), (11, 10), (12, 11)]);
        assert!(!subscription.is_catching_up());
    }

    #[test]
    fn a_batch_that_does_not_continue_the_stream_ends_it() {
        let (feed, published) = setup();
        let mut subscription = Subscription::new(1, 3, true, None, Instant::now());
        subscription.history_requested();
        subscription.history_arrived(HistoryAnswer::Batch(batch(5, 6..=7, "k")));
        let text = drain(&mut subscription, &feed, &published);
        assert!(text.starts_with("event: error\ndata: {\"error\":\"internal\""), "{text}");
        assert!(subscription.is_ended());
    }

    #[test]
    fn history_gone_ends_the_stream_with_version_too_old() {
        let (feed, published) = setup();
        let mut subscription = Subscription::new(1, 3, true, None, Instant::now());
        subscription.history_requested();
        subscription.history_arrived(HistoryAnswer::TooOld { oldest_version: 8 });
        let text = drain(&mut subscription, &feed, &published);
        let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
        let json: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!((json["error"].as_str(), json["oldest_version"].as_u64()), (Some("version_too_old"), Some(8)));
        assert_eq!(drain(&mut subscription, &feed, &published), "", "nothing after the error");
    }

    #[test]
    fn prefix_streams_chain_their_own_events() {
        let (feed, published) = setup();
        let mut encoder = BatchEncoder::new("leader", 10);
        encoder.push(11, "a", 0, [OperationRef::Write { key: b"user/1", value: b"x" }]);
        encoder.push(12, "b", 0, [OperationRef::Write { key: b"other", value: b"x" }]);
        encoder.push(13, "c", 0, [OperationRef::Delete { key: b"user/2" }]);
        let encoded = encoder.finish();
        assert!(BatchView::parse(&encoded.bytes).is_ok());
        feed.push(FeedBatch::from_encoded(&encoded));
        published.set_committed_version(13);
        let mut subscription = Subscription::new(1, 10, false, Some(Prefix::new(b"user/".to_vec())), Instant::now());
        let text = drain(&mut subscription, &feed, &published);
        assert_eq!(chain(&text), [(11, 10), (13, 11)]);
        assert_eq!(subscription.position(), 13);
    }

    #[test]
    fn checkpoints_wait_for_shared_bytes_to_be_written() {
        let (feed, published) = setup();
        feed.push(batch(10, 11..=11, "k"));
        published.set_committed_version(11);
        let mut subscription = Subscription::new(1, 10, false, None, Instant::now());
        let mut out = Vec::new();
        assert_eq!(subscription.advance(&feed, &published, &mut out, Instant::now()), Advance::Progress { events: 1 });
        assert!(out.is_empty() && subscription.shared().is_some());
        subscription.checkpoint_due = true;
        subscription.end("unavailable", "stopping".into(), None);
        // The reactor writes the shared bytes before advancing again.
        let length = subscription.shared().unwrap().len();
        subscription.shared_written(length);
        subscription.advance(&feed, &published, &mut out, Instant::now());
        assert!(String::from_utf8_lossy(&out).starts_with("event: error"), "errors come first once due");
    }
}
