//! Configuration: `config.toml` and command-line flags, validated into typed
//! settings before anything starts.
//!
//! Invariant: a `Config` that exists is valid. Every problem is reported as
//! one [`ConfigError`] line naming the key, and the binary exits with code 2.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration problem: the key (or flag) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{origin}{key}: {problem}")]
pub struct ConfigError {
    /// Where the value came from, e.g. `config.toml:12: ` (may be empty).
    origin: String,
    key: String,
    problem: String,
}

impl ConfigError {
    fn new(key: &str, problem: impl Into<String>) -> Self {
        ConfigError { origin: String::new(), key: key.to_string(), problem: problem.into() }
    }
}

/// The whole configuration, as read from TOML. Every field has a default,
/// so an empty file (or none) gives the embedded defaults.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub pipeline: PipelineConfig,
    pub commit: CommitConfig,
    pub persist: PersistConfig,
    pub subscribe: SubscribeConfig,
    pub retention: RetentionConfig,
    pub storage: StorageConfig,
    pub s3: S3Config,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Reactor threads; 0 means one per core.
    pub io_threads: usize,
    pub max_connections: usize,
    pub header_bytes_max: usize,
    pub idle_timeout_ms: u64,
    pub header_read_timeout_ms: u64,
    pub request_read_timeout_ms: u64,
    pub shutdown_timeout_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7474".into(),
            io_threads: 0,
            max_connections: 10_000,
            header_bytes_max: 16 * 1024,
            idle_timeout_ms: 60_000,
            header_read_timeout_ms: 10_000,
            request_read_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub body_bytes_max: u64,
    pub key_bytes_max: usize,
    pub value_bytes_max: usize,
    pub preconditions_max: usize,
    pub operations_max: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            body_bytes_max: 10 * 1024 * 1024,
            key_bytes_max: 10 * 1024,
            value_bytes_max: 100 * 1024,
            preconditions_max: 10_000,
            operations_max: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Requests waiting for stage 1; a full queue answers 429.
    pub queue_depth: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { queue_depth: 4096 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommitConfig {
    /// Preconditions read within this long are checked (not `too_old`) ...
    pub conflict_window_ms: u64,
    /// ... and so are those of the last this-many versions, whichever keeps more.
    pub conflict_window_versions: u64,
    /// Request ids of recent commits kept in memory for duplicates and status.
    pub request_index_capacity: usize,
    /// Requests the sequencer decides in one batch at most.
    pub batch_transactions_max: usize,
}

impl Default for CommitConfig {
    fn default() -> Self {
        CommitConfig {
            conflict_window_ms: 5000,
            conflict_window_versions: 1_000_000,
            request_index_capacity: 100_000,
            batch_transactions_max: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PersistConfig {
    /// After the first request of a batch, wait this many microseconds for
    /// more before closing it (0: a batch is whatever is queued).
    pub batch_timeout_us: u64,
    /// A batch object is closed once it holds this many bytes.
    pub batch_bytes_max: usize,
    /// First retry delay of a failed write; doubles up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Threads doing local-disk IO.
    pub io_threads: usize,
    /// Batch writes kept in flight at once (1 to
    /// `log::chain::BATCH_WRITES_IN_FLIGHT_MAX`): what hides the storage's
    /// latency. Replies still wait until their batch and every one before
    /// it are durable. 0 picks by storage: `LOCAL_BATCH_WRITES_IN_FLIGHT`
    /// on local disk, `BATCH_WRITES_IN_FLIGHT_MAX` on S3 (each request pays
    /// its own latency, and requests run in parallel).
    pub batch_writes_in_flight: usize,
    /// While other batch writes are in flight, a batch is written only once
    /// it holds this many requests (or nothing is in flight any more): on
    /// local disk a write of one or two commits beside others costs the
    /// shared core nearly what a full one does. 0 picks by storage:
    /// `LOCAL_BATCH_MIN_ALONGSIDE` on local disk, 1 (never held) on S3, where
    /// holding a batch back would add a whole PUT's latency.
    pub batch_min_alongside: usize,
    /// A batch smaller than `batch_min_alongside` is written no sooner than
    /// this many microseconds after the previous batch (0: at once). Bounds
    /// how many batches a moderate load makes, each costing the shared core
    /// a round of thread wake-ups (and on local disk a file and a sync);
    /// under a light load, when the previous batch was long ago, nothing
    /// waits, nor when every client connection already waits in the
    /// pipeline, nor for 100 ms after a wait that gathered nothing
    /// (`pipeline::sequence`). See `BATCH_INTERVAL_US_DEFAULT`.
    pub batch_interval_us: u64,
}

/// `persist.batch_min_alongside` on local disk by default. Paced at 20,000
/// commits/s (docs/benchmarks.md): p99 3.87 / 3.88 ms with 1, 2.95 / 2.71
/// with 4, 2.57 / 2.71 with 8, 2.63 / 2.87 with 16; at 26,500/s (half of
/// `bench/run`'s saturated rate) median p99 3.81 ms with 8 and 2.89 with 16
/// over four rounds. Closed-loop throughput: 8 the same as 1 within the
/// noise (medians of six rounds 60,300 and 59,400), 16 against 8 a median
/// per-pair ratio of 0.98 over five rounds.
pub const LOCAL_BATCH_MIN_ALONGSIDE: usize = 16;

/// `persist.batch_interval_us` by default. Paced at 26,500 commits/s on
/// local disk (about half of `bench/run`'s saturated rate), three alternated
/// rounds each (docs/benchmarks.md): p99 3.22-3.54 ms without it, 2.48-2.92
/// with 250 µs, 1.81-1.99 with 500, the server's core 90-94%, 78-86% and
/// 57-71% busy; at 33,000/s p99 3.96-4.52, 2.69-4.18 and 1.47-1.98 ms. At
/// 5,000/s 500 halves the CPU (0.72-0.83 to 0.38-0.39) and moves p50 from
/// 0.19-0.35 to 0.48-0.51 ms; 250 there mostly skips its holds (they gather
/// nothing too often). Closed loop with 64 connections, no loss seen.
pub const BATCH_INTERVAL_US_DEFAULT: u64 = 500;

/// Batch writes in flight on local disk by default. One batch's CPU work
/// (encoding, the object's write and link) and the next batch's overlap
/// another's journal sync: with one at a time the core idles during each
/// sync (`bench/run --workloads writes`, docs/benchmarks.md: medians with
/// 2, 4 and 8 were 12-21% above 1, and 4 the highest; the local store's two
/// IO threads bound how many syncs run at once).
pub const LOCAL_BATCH_WRITES_IN_FLIGHT: usize = 4;

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            batch_timeout_us: 0,
            batch_bytes_max: 1024 * 1024,
            retry_initial_ms: 50,
            retry_max_ms: 5000,
            io_threads: 2,
            batch_writes_in_flight: 0,
            batch_min_alongside: 0,
            batch_interval_us: BATCH_INTERVAL_US_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscribeConfig {
    /// A checkpoint event goes to every stream at least this often.
    pub checkpoint_interval_ms: u64,
    /// Bytes of recent batches kept in memory for subscribers (the live
    /// tail); a subscriber further behind reads from storage.
    pub buffer_bytes: usize,
}

impl Default for SubscribeConfig {
    fn default() -> Self {
        SubscribeConfig { checkpoint_interval_ms: 1000, buffer_bytes: 64 * 1024 * 1024 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How often the truncation task looks for history no policy pins.
    pub truncate_interval_ms: u64,
    /// Batch objects deleted in one truncation round at most.
    pub objects_deleted_per_round_max: usize,
    /// Policies at most (also the bound on the per-policy metric's labels).
    pub policies_max: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig { truncate_interval_ms: 1000, objects_deleted_per_round_max: 100, policies_max: 1000 }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// `file:DIR` or `s3://BUCKET/PREFIX?...`; empty means `file:<data_dir>/log`.
    pub url: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig { data_dir: PathBuf::from("./stoat-data"), url: String::new() }
    }
}

/// The S3 client, used when `storage.url` is `s3://...`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// Connections (so requests) in flight at most.
    pub connections_max: usize,
    /// Idle keep-alive connections kept for reuse.
    pub target_pool_size: usize,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Longest wait for progress on a request (sending or receiving).
    pub read_timeout_ms: u64,
    /// Longest an operation may take with all its retries.
    pub operation_timeout_ms: u64,
    /// Attempts of one request before it fails as transient.
    pub attempts_max: u32,
    /// Largest response body accepted.
    pub response_bytes_max: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            connections_max: 64,
            target_pool_size: 16,
            idle_timeout_ms: 20_000,
            connect_timeout_ms: 3_000,
            read_timeout_ms: 15_000,
            operation_timeout_ms: 60_000,
            attempts_max: 10,
            response_bytes_max: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter, e.g. `info` or `stoat=debug`; `RUST_LOG` and
    /// `--log-level` override it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { level: "info".into() }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub storage: Option<String>,
    pub log_level: Option<String>,
}

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageUrl {
    File(PathBuf),
    S3 { bucket: String, prefix: String, endpoint: Option<String>, region: Option<String> },
}

/// Settings derived from a `Config`, in the types the server uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config: Config,
    pub listen: SocketAddr,
    pub io_threads: usize,
    pub storage: StorageUrl,
}

impl Config {
    /// Reads and parses a TOML file; errors name the file, line and key.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError {
            origin: String::new(),
            key: "--config".into(),
            problem: format!("cannot read {}: {error}", path.display()),
        })?;
        Config::from_toml(&text).map_err(|mut error| {
            error.origin = format!("{}:{}", path.display(), error.origin);
            error
        })
    }

    /// Parses TOML text. The error's origin is `LINE: ` when known.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let line = inner.span().map(|span| line_of(text, span.start));
            let problem = inner.message().replace('\n', " ");
            ConfigError {
                origin: line.map_or(String::new(), |line| format!("{line}: ")),
                key: if key == "." { "config".into() } else { key },
                problem,
            }
        })
    }

    /// Applies flag overrides, then validates everything.
    pub fn into_settings(mut self, overrides: Overrides) -> Result<Settings, ConfigError> {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(data_dir) = overrides.data_dir {
            self.storage.data_dir = data_dir;
        }
        if let Some(storage) = overrides.storage {
            self.storage.url = storage;
        }
        if let Some(level) = overrides.log_level {
            self.log.level = level;
        }
        self.validate()?;
        let listen = self.server.listen.parse().map_err(|_| {
            ConfigError::new("server.listen", format!("{:?} is not an IP:PORT address", self.server.listen))
        })?;
        let io_threads = match self.server.io_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let storage = parse_storage_url(&self.storage.url, &self.storage.data_dir)?;
        let mut config = self;
        if config.persist.batch_writes_in_flight == 0 {
            config.persist.batch_writes_in_flight = match storage {
                StorageUrl::File(_) => LOCAL_BATCH_WRITES_IN_FLIGHT,
                StorageUrl::S3 { .. } => crate::log::chain::BATCH_WRITES_IN_FLIGHT_MAX,
            };
        }
        if config.persist.batch_min_alongside == 0 {
            config.persist.batch_min_alongside = match storage {
                StorageUrl::File(_) => LOCAL_BATCH_MIN_ALONGSIDE,
                StorageUrl::S3 { .. } => 1,
            };
        }
        Ok(Settings { config, listen, io_threads, storage })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let server = &self.server;
        check_range("server.io_threads", server.io_threads as u64, 0, 256)?;
        check_range("server.max_connections", server.max_connections as u64, 1, 1_000_000)?;
        check_range("server.header_bytes_max", server.header_bytes_max as u64, 1024, 1 << 20)?;
        check_range("server.idle_timeout_ms", server.idle_timeout_ms, 1, 86_400_000)?;
        check_range("server.header_read_timeout_ms", server.header_read_timeout_ms, 1, 3_600_000)?;
        check_range("server.request_read_timeout_ms", server.request_read_timeout_ms, 1, 3_600_000)?;
        check_range("server.shutdown_timeout_ms", server.shutdown_timeout_ms, 1, 3_600_000)?;
        let limits = &self.limits;
        check_range("limits.body_bytes_max", limits.body_bytes_max, 1024, 1 << 30)?;
        check_range("limits.key_bytes_max", limits.key_bytes_max as u64, 1, 1 << 20)?;
        check_range("limits.value_bytes_max", limits.value_bytes_max as u64, 0, 1 << 30)?;
        check_range("limits.preconditions_max", limits.preconditions_max as u64, 0, 10_000_000)?;
        check_range("limits.operations_max", limits.operations_max as u64, 0, 10_000_000)?;
        check_range("pipeline.queue_depth", self.pipeline.queue_depth as u64, 1, 1_000_000)?;
        check_range(
            "persist.batch_writes_in_flight",
            self.persist.batch_writes_in_flight as u64,
            0,
            crate::log::chain::BATCH_WRITES_IN_FLIGHT_MAX as u64,
        )?;
        // The request index is allocated for twice this at start.
        check_range("commit.request_index_capacity", self.commit.request_index_capacity as u64, 0, 10_000_000)?;
        check_range("persist.batch_min_alongside", self.persist.batch_min_alongside as u64, 0, 1 << 20)?;
        check_range("persist.batch_interval_us", self.persist.batch_interval_us, 0, 1_000_000)?;
        check_range("subscribe.checkpoint_interval_ms", self.subscribe.checkpoint_interval_ms, 10, 3_600_000)?;
        check_range("subscribe.buffer_bytes", self.subscribe.buffer_bytes as u64, 0, 1 << 40)?;
        let s3 = &self.s3;
        check_range("s3.connections_max", s3.connections_max as u64, 1, 4096)?;
        check_range("s3.target_pool_size", s3.target_pool_size as u64, 0, 4096)?;
        check_range("s3.idle_timeout_ms", s3.idle_timeout_ms, 1, 3_600_000)?;
        check_range("s3.connect_timeout_ms", s3.connect_timeout_ms, 1, 600_000)?;
        check_range("s3.read_timeout_ms", s3.read_timeout_ms, 1, 3_600_000)?;
        check_range("s3.operation_timeout_ms", s3.operation_timeout_ms, 1, 86_400_000)?;
        check_range("s3.attempts_max", u64::from(s3.attempts_max), 1, 1000)?;
        check_range("s3.response_bytes_max", s3.response_bytes_max as u64, 1024, 1 << 34)?;
        let retention = &self.retention;
        check_range("retention.truncate_interval_ms", retention.truncate_interval_ms, 10, 86_400_000)?;
        check_range(
            "retention.objects_deleted_per_round_max",
            retention.objects_deleted_per_round_max as u64,
            1,
            1000,
        )?;
        check_range("retention.policies_max", retention.policies_max as u64, 1, 100_000)?;
        if self.storage.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("storage.data_dir", "must not be empty"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|error| ConfigError::new("log.level", format!("{:?}: {error}", self.log.level)))?;
        Ok(())
    }
}

/// The 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count()
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::new(key, format!("{value} is out of range {min}..={max}")));
    }
    Ok(())
}

/// Parses `file:DIR` or `s3://BUCKET/PREFIX?endpoint=URL&region=REGION`.
pub fn parse_storage_url(url: &str, data_dir: &Path) -> Result<StorageUrl, ConfigError> {
    let key = "storage.url";
    if url.is_empty() {
        return Ok(StorageUrl::File(data_dir.join("log")));
    }
    if let Some(dir) = url.strip_prefix("file:") {
        if dir.is_empty() {
            return Err(ConfigError::new(key, "file: needs a directory, as in file:/var/lib/stoat/log"));
        }
        return Ok(StorageUrl::File(PathBuf::from(dir)));
    }
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(ConfigError::new(key, format!("{url:?} must start with file: or s3://")));
    };
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if !is_valid_bucket_name(bucket) {
        return Err(ConfigError::new(key, format!("{bucket:?} is not a valid S3 bucket name")));
    }
    let (mut endpoint, mut region) = (None, None);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=') {
            Some(("endpoint", value)) if value.starts_with("http://") || value.starts_with("https://") => {
                endpoint = Some(value.to_string());
            }
            Some(("endpoint", value)) => {
                return Err(ConfigError::new(key, format!("endpoint {value:?} must start with http:// or https://")));
            }
            Some(("region", value)) if !value.is_empty() => region = Some(value.to_string()),
            _ => return Err(ConfigError::new(key, format!("unknown or empty parameter {pair:?}"))),
        }
    }
    Ok(StorageUrl::S3 { bucket: bucket.to_string(), prefix: prefix.to_string(), endpoint, region })
}

fn is_valid_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_the_embedded_defaults() {
        let settings = Config::from_toml("").unwrap().into_settings(Overrides::default()).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:7474".parse().unwrap());
        assert_eq!(settings.storage, StorageUrl::File(PathBuf::from("./stoat-data/log")));
        assert!(settings.io_threads >= 1);
    }

    #[test]
    fn the_repository_config_toml_is_complete_and_at_defaults() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).unwrap();
        let in_file: toml::Table = text.parse().unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(in_file, defaults, "config.toml must list every key at its default");
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key_and_line() {
        let error = Config::from_toml("[server]\nlisten = \"x\"\nbogus = 1\n").unwrap_err().to_string();
        assert!(error.starts_with("3: server.bogus: unknown field `bogus`"), "{error}");
        let error = Config::from_toml("[server]\nio_threads = \"four\"\n").unwrap_err().to_string();
        assert!(error.contains("server.io_threads: invalid type"), "{error}");
    }

    #[test]
    fn out_of_range_values_and_bad_addresses_are_refused() {
        let config = Config::from_toml("[server]\nmax_connections = 0\n").unwrap();
        let error = config.into_settings(Overrides::default()).unwrap_err().to_string();
        assert_eq!(error, "server.max_connections: 0 is out of range 1..=1000000");
        let config = Config::from_toml("[s3]\nattempts_max = 0\n").unwrap();
        let error = config.into_settings(Overrides::default()).unwrap_err().to_string();
        assert_eq!(error, "s3.attempts_max: 0 is out of range 1..=1000");
        let config = Config::from_toml("[commit]\nrequest_index_capacity = 1000000000000\n").unwrap();
        let error = config.into_settings(Overrides::default()).unwrap_err().to_string();
        assert_eq!(error, "commit.request_index_capacity: 1000000000000 is out of range 0..=10000000");
        let overrides = Overrides { listen: Some("nowhere".into()), ..Default::default() };
        let error = Config::default().into_settings(overrides).unwrap_err().to_string();
        assert_eq!(error, "server.listen: \"nowhere\" is not an IP:PORT address");
    }

    #[test]
    fn storage_urls_parse_or_explain() {
        let dir = Path::new("d");
        assert_eq!(parse_storage_url("file:/x/y", dir).unwrap(), StorageUrl::File("/x/y".into()));
        assert_eq!(
            parse_storage_url("s3://my-bucket/log/a?endpoint=http://127.0.0.1:9000&region=us-east-1", dir).unwrap(),
            StorageUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "log/a".into(),
                endpoint: Some("http://127.0.0.1:9000".into()),
                region: Some("us-east-1".into()),
            }
        );
        for bad in ["ftp://x", "file:", "s3://A/x", "s3://bucket?endpoint=ftp://x", "s3://bucket?color=red"] {
            assert!(parse_storage_url(bad, dir).is_err(), "{bad}");
        }
    }
}
