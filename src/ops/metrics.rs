//! Prometheus metrics: one registry for the process, encoded on `GET /metrics`.
//!
//! Request counters are looked up through a per-reactor cache so that the
//! hot path touches only atomics, never the families' locks.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3RequestLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3OperationLabels {
    pub operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct S3CodeLabels {
    pub code: String,
}

/// The S3 client's metrics (cheap to clone: handles on shared families).
#[derive(Clone, Debug)]
pub struct S3Metrics {
    /// Attempts by S3 operation and outcome (`ok`, `retried`, `failed`).
    pub requests: Family<S3RequestLabels, Counter>,
    request_seconds: Family<S3OperationLabels, Histogram, fn() -> Histogram>,
    pub retries: Family<S3OperationLabels, Counter>,
    /// Failed attempts by S3 error code (or `HTTP<status>`, `Connection`,
    /// `Timeout`); codes outside a known set are counted as `Other`.
    pub errors: Family<S3CodeLabels, Counter>,
    /// Store operations submitted and not yet completed.
    pub in_flight: Gauge,
}

fn s3_latency_histogram() -> Histogram {
    // 100 us .. ~100 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 21))
}

impl Default for S3Metrics {
    fn default() -> Self {
        S3Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(s3_latency_histogram),
            retries: Family::default(),
            errors: Family::default(),
            in_flight: Gauge::default(),
        }
    }
}

impl S3Metrics {
    fn register(&self, registry: &mut Registry) {
        registry.register("s3_requests", "S3 request attempts by operation and outcome", self.requests.clone());
        registry.register(
            "s3_request_duration_seconds",
            "S3 request attempts' latency, from sending to the complete response, by operation",
            self.request_seconds.clone(),
        );
        registry.register("s3_retries", "S3 request attempts retried, by operation", self.retries.clone());
        registry.register("s3_errors", "Failed S3 request attempts by error code", self.errors.clone());
        registry.register(
            "s3_operations_in_flight",
            "Store operations on S3 not yet completed",
            self.in_flight.clone(),
        );
    }

    pub fn observe(&self, operation: &'static str, seconds: f64) {
        self.request_seconds.get_or_create(&S3OperationLabels { operation }).observe(seconds);
    }

    pub fn error(&self, code: &str) {
        const KNOWN: [&str; 16] = [
            "InternalError",
            "SlowDown",
            "ServiceUnavailable",
            "RequestTimeout",
            "AccessDenied",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "NoSuchBucket",
            "NoSuchKey",
            "PreconditionFailed",
            "ConditionalRequestConflict",
            "Connection",
            "Timeout",
            "BadResponse",
            "BadXml",
            "Redirect",
        ];
        let known = KNOWN.contains(&code) || (code.starts_with("HTTP") && code.len() == 7);
        let code = if known { code.to_owned() } else { "Other".to_owned() };
        self.errors.get_or_create(&S3CodeLabels { code }).inc();
    }
}

/// Every metric the process exports.
pub struct Metrics {
    pub s3: S3Metrics,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabels, Histogram>,
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub connections_timed_out: Counter,
    pub pipeline_queue_depth: Gauge,
    commits: Family<OutcomeLabels, Counter>,
    pub batch_transactions: Histogram,
    stage_seconds: Family<StageLabels, Histogram>,
    subscribers: Family<StateLabels, Gauge>,
    pub subscribe_events: Counter,
    pub subscribe_bytes: Counter,
    subscriber_lag: Family<ClassLabels, Histogram>,
    /// The published oldest version: history after it is retained.
    pub retention_oldest_version: Gauge,
    /// Batch objects of the log in storage, and their bytes.
    pub history_objects: Gauge,
    pub history_bytes: Gauge,
    pub retention_objects_deleted: Counter,
    pub retention_policies: Gauge,
    /// One label per policy: at most `retention.policies_max` of them, and
    /// a policy's label is removed with it.
    retention_policy_lag: Family<PolicyLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stoat");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by route and status", requests.clone());
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 10 us .. ~5 s.
            Histogram::new(exponential_buckets(0.00001, 2.0, 20))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's complete arrival to its response being queued for writing",
            request_duration.clone(),
        );
        let connections_open = Gauge::default();
        registry.register("http_connections_open", "Open client connections", connections_open.clone());
        let connections_accepted = Counter::default();
        registry.register("http_connections_accepted", "Connections accepted", connections_accepted.clone());
        let connections_refused = Counter::default();
        registry.register(
            "http_connections_refused",
            "Connections answered 503 and closed because server.max_connections were open",
            connections_refused.clone(),
        );
        let connections_timed_out = Counter::default();
        registry.register(
            "http_connections_timed_out",
            "Connections closed by the idle, header-read or request-read timeout",
            connections_timed_out.clone(),
        );
        let pipeline_queue_depth = Gauge::default();
        registry.register(
            "pipeline_queue_depth",
            "Requests waiting in the queue to the commit pipeline",
            pipeline_queue_depth.clone(),
        );
        let commits = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "commits",
            "Commits decided, by outcome (committed, duplicate, conflict, too_old, leader_changed, bad_request)",
            commits.clone(),
        );
        let batch_transactions = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register(
            "batch_transactions",
            "Transactions committed per sequencer batch",
            batch_transactions.clone(),
        );
        let stage_seconds = Family::<StageLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000001, 2.0, 24))
        });
        registry.register(
            "pipeline_stage_seconds",
            "Pipeline latency by stage: parse (a commit body, on a reactor), queue (until the sequencer takes \
             it), batch_wait (a batch, from its first request taken until decided), decide (a batch), \
             durable_wait (a batch, until durable), reply (one response)",
            stage_seconds.clone(),
        );
        let subscribers = Family::<StateLabels, Gauge>::default();
        registry.register(
            "subscribers",
            "Open subscribe streams: live (reading the in-memory tail) or catching_up (reading storage)",
            subscribers.clone(),
        );
        let subscribe_events = Counter::default();
        registry.register("subscribe_events", "Transaction events sent to subscribers", subscribe_events.clone());
        let subscribe_bytes = Counter::default();
        registry.register(
            "subscribe_bytes",
            "Bytes written to subscribe streams after their response head (events, checkpoints, errors)",
            subscribe_bytes.clone(),
        );
        let subscriber_lag = Family::<ClassLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 4.0, 14))
        });
        registry.register(
            "subscriber_lag_versions",
            "How far behind a stream is at each checkpoint, in versions: the newest durable version (class \
             durable) or committed version (class committed) minus the stream's position",
            subscriber_lag.clone(),
        );
        let retention_oldest_version = Gauge::default();
        registry.register(
            "retention_oldest_version",
            "The oldest retained version: history after it can be streamed; older history was deleted",
            retention_oldest_version.clone(),
        );
        let history_objects = Gauge::default();
        registry.register("history_objects", "Batch objects of the log in storage", history_objects.clone());
        let history_bytes = Gauge::default();
        registry.register("history_bytes", "Bytes of the log's batch objects in storage", history_bytes.clone());
        let retention_objects_deleted = Counter::default();
        registry.register(
            "retention_objects_deleted",
            "Batch objects deleted by truncation because no retention policy pinned them",
            retention_objects_deleted.clone(),
        );
        let retention_policies = Gauge::default();
        registry.register("retention_policies", "Retention policies defined", retention_policies.clone());
        let retention_policy_lag = Family::<PolicyLabels, Gauge>::default();
        registry.register(
            "retention_policy_lag_versions",
            "How far each retention policy is behind the committed version, in versions (the smallest pins \
             history); one series per policy, at most retention.policies_max",
            retention_policy_lag.clone(),
        );
        let s3 = S3Metrics::default();
        s3.register(&mut registry);
        Metrics {
            s3,
            retention_oldest_version,
            history_objects,
            history_bytes,
            retention_objects_deleted,
            retention_policies,
            retention_policy_lag,
            subscribers,
            subscribe_events,
            subscribe_bytes,
            subscriber_lag,
            commits,
            batch_transactions,
            stage_seconds,
            registry,
            requests,
            request_duration,
            connections_open,
            connections_accepted,
            connections_refused,
            connections_timed_out,
            pipeline_queue_depth,
        }
    }

    /// Counts `count` commits decided with `outcome`.
    pub fn record_commit_outcomes(&self, outcome: &'static str, count: u64) {
        self.commits.get_or_create(&OutcomeLabels { outcome }).inc_by(count);
    }

    /// The latency histogram of one pipeline stage.
    pub fn stage_seconds(&self, stage: &'static str) -> Histogram {
        self.stage_seconds.get_or_create(&StageLabels { stage }).clone()
    }

    /// The gauge of streams in `state` (`live` or `catching_up`).
    pub fn subscribers(&self, state: &'static str) -> Gauge {
        self.subscribers.get_or_create(&StateLabels { state }).clone()
    }

    /// The lag histogram of streams of `class` (`durable` or `committed`).
    pub fn subscriber_lag(&self, class: &'static str) -> Histogram {
        self.subscriber_lag.get_or_create(&ClassLabels { class }).clone()
    }

    /// Sets the lag of one retention policy behind the committed version.
    pub fn set_policy_lag(&self, policy_id: &str, lag_versions: u64) {
        let labels = PolicyLabels { policy_id: policy_id.to_owned() };
        self.retention_policy_lag.get_or_create(&labels).set(i64::try_from(lag_versions).unwrap_or(i64::MAX));
    }

    /// Removes a deleted policy's series.
    pub fn remove_policy_lag(&self, policy_id: &str) {
        self.retention_policy_lag.remove(&PolicyLabels { policy_id: policy_id.to_owned() });
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// A reactor's handle on the request metrics, caching the per-label metrics
/// so that recording a request is two atomic updates.
/// The labels are the server's own routes and statuses, a few dozen pairs
/// at most, so the caches are lists searched from the most recent use
/// (cheaper than hashing the route name for every request).
pub struct RequestRecorder {
    metrics: std::sync::Arc<Metrics>,
    counters: Vec<((&'static str, u16), Counter)>,
    durations: Vec<(&'static str, Histogram)>,
}

impl RequestRecorder {
    pub fn new(metrics: std::sync::Arc<Metrics>) -> Self {
        RequestRecorder { metrics, counters: Vec::new(), durations: Vec::new() }
    }

    pub fn record(&mut self, route: &'static str, status: u16, elapsed: Duration) {
        let metrics = &self.metrics;
        let counter = cached(&mut self.counters, (route, status), || {
            metrics.requests.get_or_create(&RequestLabels { route, status }).clone()
        });
        counter.inc();
        let duration = cached(&mut self.durations, route, || {
            metrics.request_duration.get_or_create(&RouteLabels { route }).clone()
        });
        duration.observe(elapsed.as_secs_f64());
    }
}

/// The entry for `key`, made by `make` the first time; moved to the front
/// when found further back, so the busiest labels are found first.
fn cached<K: PartialEq, V>(entries: &mut Vec<(K, V)>, key: K, make: impl FnOnce() -> V) -> &V {
    match entries.iter().position(|(found, _)| *found == key) {
        Some(0) => {}
        Some(at) => entries[..=at].rotate_right(1),
        None => entries.insert(0, (key, make())),
    }
    &entries[0].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_requests_appear_in_the_text() {
        let metrics = std::sync::Arc::new(Metrics::new());
        let mut recorder = RequestRecorder::new(metrics.clone());
        for (route, status) in [("version", 200), ("commit", 200), ("version", 404), ("commit", 409), ("version", 200)]
        {
            recorder.record(route, status, Duration::from_micros(30));
        }
        let text = metrics.encode();
        assert!(text.contains("stoat_http_requests_total{route=\"version\",status=\"200\"} 2"), "{text}");
        assert!(text.contains("stoat_http_requests_total{route=\"version\",status=\"404\"} 1"), "{text}");
        assert!(text.contains("stoat_http_requests_total{route=\"commit\",status=\"200\"} 1"), "{text}");
        assert!(text.contains("stoat_http_requests_total{route=\"commit\",status=\"409\"} 1"), "{text}");
        assert!(text.contains("stoat_http_request_duration_seconds_count{route=\"version\"} 3"), "{text}");
        assert!(text.contains("stoat_http_request_duration_seconds_count{route=\"commit\"} 2"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
