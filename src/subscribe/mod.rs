//! `GET /v1/subscribe`: the change stream.
//!
//! A subscriber is a connection that stays on its home reactor. Stage 2
//! pushes every batch it accepts into the shared [`feed::Feed`] (the live
//! tail) and wakes the reactors that have subscribers; each reactor writes
//! to each of its streams what comes after the stream's position, straight
//! from the batch's shared event bytes (encoded once, by the first reader).
//! A stream that is behind the oldest batch the feed keeps (it asked for
//! older history, or it read too slowly and the feed moved on) is served by
//! the [`history`] reader from storage, a batch at a time, until it reaches
//! the feed again. Commits never wait for subscribers: the feed drops old
//! batches whatever the streams' positions.
//!
//! - `event.rs`: the SSE bytes (transaction, checkpoint, error events),
//!   prefix filtering.
//! - `feed.rs`: the live tail and the shared encoded events.
//! - `stream.rs`: one subscriber's position and what it sends next (pure).
//! - `history.rs`: the reader of older batches from storage.
//! - `query.rs`: the request's parameters.

pub mod event;
pub mod feed;
pub mod history;
pub mod query;
pub mod stream;
