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
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`, path-style.
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
    /// Certificate authorities trusted for https endpoints; `None` trusts
    /// the Mozilla roots (`webpki-roots`).
    pub tls_roots: Option<rustls::RootCertStore>,
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
            tls_roots: None,
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

/// An endpoint URL, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The `Host` header: the host, with the port unless it is the scheme's
    /// default.
    pub host_header: String,
    /// `HOST:PORT` to connect to.
    pub address: String,
    /// The host name (no port, no brackets), checked against the server's
    /// certificate for https.
    pub server_name: String,
    pub tls: bool,
}

/// Parses `http://HOST[:PORT]` or `https://HOST[:PORT]` (no path, query or
/// user).
pub fn parse_endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let (rest, tls, default_port) = if let Some(rest) = endpoint.strip_prefix("https://") {
        (rest, true, 443)
    } else if let Some(rest) = endpoint.strip_prefix("http://") {
        (rest, false, 80)
    } else {
        return Err(format!("endpoint {endpoint:?} must start with http:// or https://"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(format!("endpoint {endpoint:?} must be http(s)://HOST[:PORT] with no path"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => {
            let port: u16 = port.parse().map_err(|_| format!("endpoint {endpoint:?}: bad port {port:?}"))?;
            (host, port)
        }
        _ => (authority, default_port),
    };
    if host.is_empty() {
        return Err(format!("endpoint {endpoint:?} has no host"));
    }
    let host_header = if port == default_port { host.to_owned() } else { format!("{host}:{port}") };
    let server_name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok(Endpoint { host_header, address: format!("{host}:{port}"), server_name, tls })
}

impl S3Store {
    /// Starts the client thread. Fails only on a bad endpoint or when the
    /// thread cannot start; the store is not contacted here.
    pub fn open(location: S3Location, options: S3Options, metrics: S3Metrics) -> std::io::Result<S3Store> {
        let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
        let endpoint = parse_endpoint(&location.endpoint).map_err(invalid)?;
        let tls = if endpoint.tls {
            let config = tls_config(options.tls_roots.clone()).map_err(invalid)?;
            let name = rustls::pki_types::ServerName::try_from(endpoint.server_name.clone())
                .map_err(|error| invalid(format!("endpoint {:?}: {error}", location.endpoint)))?;
            Some((config, name))
        } else {
            None
        };
        let target = Target {
            host: endpoint.host_header.clone(),
            bucket: location.bucket.clone(),
            key_prefix: Target::key_prefix_from(&location.prefix),
            region: location.region.clone(),
            credentials: location.credentials.clone(),
        };
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (messages, inbox) = crossbeam_channel::bounded(options.queue_depth.max(1));
        let client = Client::new(poll, inbox, target, endpoint.address, tls, options, metrics);
        let thread = std::thread::Builder::new().name("stoat-s3".into()).spawn(move || client.run())?;
        Ok(S3Store { messages: Some(messages), waker, thread: Some(thread), location })
    }

    pub fn location(&self) -> &S3Location {
        &self.location
    }
}

/// TLS settings for https endpoints: the `ring` provider (built
/// explicitly, so another provider enabled elsewhere cannot make the
/// default panic), the given roots or else the Mozilla roots of
/// `webpki-roots`.
fn tls_config(roots: Option<rustls::RootCertStore>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = roots.unwrap_or_else(|| rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
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
    fn endpoints_parse_into_host_address_and_scheme() {
        let plain = parse_endpoint("http://127.0.0.1:9000").unwrap();
        assert_eq!(
            (plain.host_header.as_str(), plain.address.as_str(), plain.tls),
            ("127.0.0.1:9000", "127.0.0.1:9000", false)
        );
        let aws = parse_endpoint("https://s3.eu-west-1.amazonaws.com/").unwrap();
        assert_eq!(aws.host_header, "s3.eu-west-1.amazonaws.com");
        assert_eq!(aws.address, "s3.eu-west-1.amazonaws.com:443");
        assert!(aws.tls);
        let default_port = parse_endpoint("http://minio:80").unwrap();
        assert_eq!((default_port.host_header.as_str(), default_port.address.as_str()), ("minio", "minio:80"));
        let v6 = parse_endpoint("https://[::1]:8443").unwrap();
        assert_eq!((v6.host_header.as_str(), v6.server_name.as_str()), ("[::1]:8443", "::1"));
        for bad in ["ftp://x", "http://", "http://h:1/path", "http://u@h:1", "http://h:99999", "https://:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }
}
