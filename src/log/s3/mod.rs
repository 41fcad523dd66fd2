//! The S3 object store: an [`ObjectStore`] over any S3-compatible service,
//! path-style, with SigV4 signing.
//!
//! - `request`: object names to keys under the URL's prefix, S3 URL
//!   encoding, signing with `aws-sigv4` (pure).
//! - `response`: an incremental HTTP/1.1 response parser (pure).
//! - `xml`: error bodies, ListObjectsV2 pages, DeleteObjects results (pure).
//! - `operation`: one store operation as S3 requests, and what each
//!   response means: complete, continue, or retry (pure).
//! - `client`: the event loop on one thread: connection pool, timeouts,
//!   backoff.
//!
//! Invariants: `submit` never blocks (a full queue is a transient error
//! completion); every operation gets exactly one completion; a conditional
//! put's 412 is never retried; nothing a server sends can panic the client
//! thread, and responses are bounded by `response_bytes_max`.

mod client;
pub mod operation;
pub mod request;
pub mod response;
pub mod xml;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use mio::{Poll, Waker};

pub use self::client::backoff_delay;
use self::client::{Client, Submission, WAKER};
use self::operation::Operation;
pub use self::request::Credentials;
use self::request::Target;
use super::store::{Completion, ObjectOp, ObjectStore, OpId, StoreError};
use crate::ops::metrics::S3Metrics;

/// Where the store is: from `s3://BUCKET/PREFIX?endpoint=...&region=...`.
#[derive(Clone, Debug)]
pub struct S3Location {
    /// `http://HOST:PORT`; https is refused in this build.
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub credentials: Option<Credentials>,
}

/// How the client behaves; the defaults suit a commit path that keeps a few
/// writes in flight and recovery that reads a few batches.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Connections (so requests) in flight at most.
    pub connections_max: usize,
    /// Idle keep-alive connections kept for reuse; more are closed.
    pub target_pool_size: usize,
    pub idle_timeout: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the next byte of a response (or for sending).
    pub read_timeout: Duration,
    /// Longest an operation may take, all its attempts included.
    pub operation_timeout: Duration,
    /// Attempts per request before the operation fails as transient.
    pub attempts_max: u32,
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// Operations waiting or in flight before `submit` refuses more.
    pub queue_depth: usize,
    /// Largest response body accepted (a larger object is a permanent error).
    pub response_bytes_max: usize,
    /// Seeds the retry jitter.
    pub seed: u64,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            connections_max: 64,
            target_pool_size: 16,
            idle_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(15),
            operation_timeout: Duration::from_secs(60),
            attempts_max: 10,
            backoff_first: Duration::from_millis(50),
            backoff_max: Duration::from_secs(3),
            queue_depth: 4096,
            response_bytes_max: 256 * 1024 * 1024,
            seed: 0x5354_4f41_5433,
        }
    }
}

/// An [`ObjectStore`] on S3. Dropping it fails what is still in flight
/// (as transient) and stops its thread.
pub struct S3Store {
    /// `None` once dropping: the thread stops when the sender is gone.
    messages: Option<Sender<Submission>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    location: S3Location,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("S3Store")
            .field("endpoint", &self.location.endpoint)
            .field("bucket", &self.location.bucket)
            .field("prefix", &self.location.prefix)
            .finish()
    }
}

/// The `HOST:PORT` of an `http://` endpoint; https and paths are refused.
pub fn endpoint_host(endpoint: &str) -> Result<String, String> {
    if endpoint.starts_with("https://") {
        return Err(format!("endpoint {endpoint:?}: https is not supported yet in this build; use http://"));
    }
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return Err(format!("endpoint {endpoint:?} must start with http://"));
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("endpoint {endpoint:?} must be http://HOST[:PORT] with no path"));
    }
    Ok(if host.rsplit_once(':').is_some_and(|(_, port)| port.parse::<u16>().is_ok()) && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:80")
    })
}

impl S3Store {
    /// Starts the client thread. Fails only on a bad endpoint or when the
    /// thread cannot start; the store is not contacted here.
    pub fn open(location: S3Location, options: S3Options, metrics: S3Metrics) -> std::io::Result<S3Store> {
        let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        let host = endpoint_host(&location.endpoint).map_err(invalid)?;
        let target = Target {
            host,
            bucket: location.bucket.clone(),
            key_prefix: Target::key_prefix_from(&location.prefix),
            region: location.region.clone(),
            credentials: location.credentials.clone(),
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (messages, inbox) = crossbeam_channel::bounded(options.queue_depth.max(1));
        let client = Client::new(poll, inbox, target, options, metrics);
        let thread = std::thread::Builder::new().name("stoat-s3".into()).spawn(move || client.run())?;
        Ok(S3Store { messages: Some(messages), waker, thread: Some(thread), location })
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }
}

impl ObjectStore for S3Store {
    fn submit(&self, op_id: OpId, op: ObjectOp, reply: &Sender<Completion>) {
        let operation = match Operation::new(op) {
            Ok(operation) => operation,
            Err(error) => {
                let _ = reply.send(Completion { op_id, result: Err(error) });
                return;
            }
        };
        let Some(messages) = &self.messages else { return };
        let refused = match messages.try_send(Submission { op_id, operation, reply: reply.clone() }) {
            Ok(()) => {
                let _ = self.waker.wake();
                return;
            }
            Err(TrySendError::Full(_)) => StoreError::transient("the S3 client's queue is full"),
            Err(TrySendError::Disconnected(_)) => StoreError::transient("the S3 client is stopped"),
        };
        let _ = reply.send(Completion { op_id, result: Err(refused) });
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // The thread sees the channel disconnect (after taking what is
        // queued), fails what is in flight and stops.
        self.messages = None;
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_plain_http() {
        assert_eq!(endpoint_host("http://127.0.0.1:9000").unwrap(), "127.0.0.1:9000");
        assert_eq!(endpoint_host("http://s3.local/").unwrap(), "s3.local:80");
        for bad in ["https://s3.amazonaws.com", "ftp://x", "http://", "http://h:1/path", "http://u@h:1"] {
            assert!(endpoint_host(bad).is_err(), "{bad}");
        }
    }
}
