//! The HTTP/1.1 server: N reactor threads, each with its own `mio::Poll`,
//! owning the connections placed on it.
//!
//! Reactor 0 also owns the listening socket: it accepts, enforces
//! `server.max_connections`, and places each new connection on the reactors
//! round-robin (its own share directly, the others' through their mailbox).
//! A complete request is either answered on the reactor (health, metrics,
//! version: reads of published state) or handed, with its connection, to the
//! pipeline (commits, status) or the retention worker (policies), which
//! return the connection through the mailbox.
//!
//! Invariants:
//! - Only the home reactor reads or writes a connection's socket.
//! - Every queue is bounded: the pipeline queue by `pipeline.queue_depth`
//!   (full: 429), the retention worker's queue by 256 (full: 429), each mailbox by the number of connections it can receive
//!   (at most `server.max_connections`).

pub mod connection;
mod handlers;
mod reactor;
pub mod response;
pub mod routes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use prometheus_client::metrics::gauge::Gauge;

use crate::config::Settings;
use crate::ops::metrics::Metrics;
use crate::pipeline::published::Published;
use crate::pipeline::{Pipeline, PipelineParts, StoreOpener};
use crate::subscribe::feed::Feed;
use crate::subscribe::history::{HistoryAnswer, HistoryRequest};
use connection::Connection;

/// What the reactors share: read-only settings, the published state, and
/// the subscribers' feed.
pub struct ServerContext {
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub published: Arc<Published>,
    pub feed: Arc<Feed>,
    open_connections: Arc<ConnectionCount>,
    /// Time to parse a commit body (on the reactors).
    pub(crate) stage_parse_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl ServerContext {
    pub fn new(settings: Settings, metrics: Arc<Metrics>, published: Arc<Published>) -> Self {
        let open_connections =
            Arc::new(ConnectionCount { published: published.clone(), gauge: metrics.connections_open.clone() });
        let stage_parse_seconds = metrics.stage_seconds("parse");
        let feed = Arc::new(Feed::new(settings.config.subscribe.buffer_bytes));
        ServerContext { settings, metrics, published, feed, open_connections, stage_parse_seconds }
    }
}

/// The number of open connections, shared by all reactors (kept in
/// `Published`, where stage 1 reads it too).
struct ConnectionCount {
    published: Arc<Published>,
    gauge: Gauge,
}

/// Holds one place in the open-connection count; gives it back on drop, so
/// a connection is counted until it is gone, wherever it ends.
pub(crate) struct OpenConnections(Arc<ConnectionCount>);

impl OpenConnections {
    /// Takes a place if fewer than `max` are open.
    fn try_open(count: &Arc<ConnectionCount>, max: usize) -> Option<OpenConnections> {
        if !count.published.try_open_connection(max) {
            return None;
        }
        count.gauge.inc();
        Some(OpenConnections(count.clone()))
    }
}

impl Drop for OpenConnections {
    fn drop(&mut self) {
        self.0.published.connection_closed();
        self.0.gauge.dec();
    }
}

/// Messages to a reactor from other threads.
pub(crate) enum Mail {
    /// A socket accepted by reactor 0, to be owned here.
    Accepted(TcpStream, OpenConnections),
    /// Connections coming home from the pipeline with their responses.
    Returned(Vec<Box<Connection>>),
    /// Stop accepting, finish in-flight requests, close, exit.
    Shutdown,
    /// The subscribers' feed moved (coalesced: at most one pending).
    FeedAdvanced,
    /// History a stream asked for, read from storage.
    History(HistoryRequest, HistoryAnswer),
}

/// How other threads reach one reactor: a mailbox and a waker. Wakes are
/// coalesced: a sender wakes the reactor only if no wake is pending.
pub(crate) struct ReactorHandle {
    sender: Sender<Mail>,
    waker: mio::Waker,
    wake_pending: AtomicBool,
    /// A `FeedAdvanced` is in the mailbox and not yet read.
    feed_pending: AtomicBool,
    /// Subscribe streams on this reactor (only those are told the feed moved).
    streams: AtomicUsize,
    /// Of which with `durable=false` (only those are told of batches that
    /// are not durable yet).
    eager_streams: AtomicUsize,
}

impl ReactorHandle {
    fn send(&self, mail: Mail) {
        if self.sender.send(mail).is_err() {
            // The reactor has exited (shutdown deadline passed); the mail,
            // and any connection in it, is dropped, closing the socket.
            return;
        }
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    /// Called by the reactor when woken, before it drains the mailbox.
    fn clear_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }
}

/// Every reactor's handle, indexed by reactor.
pub struct ReactorHandles(Vec<ReactorHandle>);

impl ReactorHandles {
    /// Gives a connection back to its home reactor.
    pub fn return_connection(&self, connection: Box<Connection>) {
        self.0[connection.home].send(Mail::Returned(vec![connection]));
    }

    /// Gives connections back to their home reactors, one mail (and at most
    /// one wake) per reactor. Leaves `connections` empty.
    pub fn return_connections(&self, connections: &mut Vec<Box<Connection>>) {
        match self.0.len() {
            0 => connections.clear(),
            1 => self.0[0].send(Mail::Returned(std::mem::take(connections))),
            reactors => {
                let mut by_home: Vec<Vec<Box<Connection>>> = (0..reactors).map(|_| Vec::new()).collect();
                for connection in connections.drain(..) {
                    by_home[connection.home].push(connection);
                }
                for (handle, mine) in self.0.iter().zip(by_home) {
                    if !mine.is_empty() {
                        handle.send(Mail::Returned(mine));
                    }
                }
            }
        }
    }

    /// Tells every reactor with streams that can use it that the feed moved.
    fn feed_advanced(&self, committed_only: bool) {
        for handle in &self.0 {
            let streams = if committed_only { &handle.eager_streams } else { &handle.streams };
            if streams.load(Ordering::Acquire) > 0 && !handle.feed_pending.swap(true, Ordering::AcqRel) {
                handle.send(Mail::FeedAdvanced);
            }
        }
    }

    /// Gives a stream the history it asked for.
    fn deliver_history(&self, request: HistoryRequest, answer: HistoryAnswer) {
        if let Some(handle) = self.0.get(request.reactor) {
            handle.send(Mail::History(request, answer));
        }
    }

    fn shutdown_all(&self) {
        for handle in &self.0 {
            handle.send(Mail::Shutdown);
        }
    }
}

/// A running server: its reactor threads and the pipeline behind them.
pub struct Server {
    local_addr: SocketAddr,
    reactors: Arc<ReactorHandles>,
    threads: Vec<JoinHandle<()>>,
    pipeline: Option<Pipeline>,
}

impl Server {
    /// Binds the listener and starts the reactors and the pipeline, which
    /// recovers the log from the store `open_store` opens.
    pub fn start(context: ServerContext, open_store: StoreOpener) -> std::io::Result<Server> {
        let context = Arc::new(context);
        let listener = TcpListener::bind(context.settings.listen)?;
        let local_addr = listener.local_addr()?;
        let reactor_count = context.settings.io_threads;
        let mut polls = Vec::with_capacity(reactor_count);
        let mut handles = Vec::with_capacity(reactor_count);
        let mut mailboxes = Vec::with_capacity(reactor_count);
        for _ in 0..reactor_count {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), reactor::WAKER)?;
            let (sender, receiver): (Sender<Mail>, Receiver<Mail>) = crossbeam_channel::unbounded();
            handles.push(ReactorHandle {
                sender,
                waker,
                wake_pending: AtomicBool::new(false),
                feed_pending: AtomicBool::new(false),
                streams: AtomicUsize::new(0),
                eager_streams: AtomicUsize::new(0),
            });
            polls.push(poll);
            mailboxes.push(receiver);
        }
        let reactors = Arc::new(ReactorHandles(handles));
        let listeners = reactors.clone();
        context.feed.set_listener(Box::new(move |committed_only| listeners.feed_advanced(committed_only)));
        let (history_sender, history_requests) = crossbeam_channel::bounded(crate::subscribe::history::QUEUE_DEPTH);
        let deliver_to = reactors.clone();
        let parts = PipelineParts {
            queue_depth: context.settings.config.pipeline.queue_depth,
            commit: context.settings.config.commit.clone(),
            persist: context.settings.config.persist.clone(),
            retention: context.settings.config.retention.clone(),
            open_store,
            published: context.published.clone(),
            metrics: context.metrics.clone(),
            feed: context.feed.clone(),
            subscribe_history: history_requests,
            deliver_history: Box::new(move |request, answer| deliver_to.deliver_history(request, answer)),
        };
        let pipeline = Pipeline::start(parts, reactors.clone())?;
        let mut listener = Some(listener);
        let mut threads = Vec::with_capacity(reactor_count);
        for (index, (poll, mailbox)) in polls.into_iter().zip(mailboxes).enumerate() {
            let reactor = reactor::Reactor::new(
                index,
                poll,
                listener.take(),
                mailbox,
                reactors.clone(),
                pipeline.sender(),
                pipeline.retention_sender(),
                history_sender.clone(),
                context.clone(),
            )?;
            let thread =
                std::thread::Builder::new().name(format!("stoat-reactor-{index}")).spawn(move || reactor.run())?;
            threads.push(thread);
        }
        Ok(Server { local_addr, reactors, threads, pipeline: Some(pipeline) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets in-flight requests finish (bounded by
    /// `server.shutdown_timeout_ms`), then stops the pipeline.
    pub fn shutdown(mut self) {
        self.reactors.shutdown_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(pipeline) = self.pipeline.take() {
            pipeline.stop();
        }
    }
}

/// Used by the pipeline's queue type in reactor code.
pub(crate) use crate::pipeline::PipelineSender;
