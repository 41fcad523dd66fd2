//! The `stoat` binary: `stoat serve`. Wiring only: configuration, logging,
//! the server, and signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use stoat::config::{Config, Overrides, S3Config, Settings, StorageUrl};
use stoat::log::failing::{FailingStore, FaultPlan};
use stoat::log::local::{LocalStore, LocalStoreOptions};
use stoat::log::s3::{parse_endpoint, Credentials, S3Location, S3Options, S3Store};
use stoat::log::store::ObjectStore;
use stoat::ops::logging::LogHandle;
use stoat::ops::metrics::Metrics;
use stoat::pipeline::published::Published;
use stoat::pipeline::StoreOpener;
use stoat::server::{Server, ServerContext};

#[derive(Parser)]
#[command(name = "stoat", version, about = "A single-leader, optimistic-concurrency transaction log service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no flags: 127.0.0.1:7474, storage in ./stoat-data).
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// A TOML configuration file (see config.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, IP:PORT (server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory for local data (storage.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// file:DIR or s3://BUCKET/PREFIX?endpoint=URL&region=REGION (storage.url).
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// A tracing filter such as info or stoat=debug (log.level; overrides RUST_LOG).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

/// Exit code for a bad configuration or flag.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let settings = match load_settings(&args) {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("stoat: config error: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let level_from_file = args.log_level.is_none() && std::env::var_os("RUST_LOG").is_none();
    let filter = match (&args.log_level, std::env::var("RUST_LOG")) {
        (Some(level), _) => level.clone(),
        (None, Ok(level)) => level,
        (None, Err(_)) => settings.config.log.level.clone(),
    };
    let log = LogHandle::install(&filter);
    check_open_files_limit(settings.config.server.max_connections);

    let published = Arc::new(Published::new(uuid::Uuid::new_v4().to_string()));
    let metrics = Arc::new(Metrics::new());
    let open_store = match store_opener(&settings, &metrics) {
        Ok(open_store) => open_store,
        Err(message) => {
            eprintln!("stoat: config error: {message}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Installed before the server starts, so that a signal that arrives
    // during start-up is handled like any other.
    let signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("stoat: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(ServerContext::new(settings, metrics, published.clone()), open_store) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("stoat: cannot start the server: {error}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(leader_id = %published.leader_id, "listening on http://{}", server.local_addr());
    wait_for_stop_signal(signals, &args, &log, level_from_file);
    tracing::info!("stopping: finishing in-flight requests");
    server.shutdown();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// How stage 2 opens the configured storage (retried until it works).
fn store_opener(settings: &Settings, metrics: &Metrics) -> Result<StoreOpener, String> {
    match &settings.storage {
        StorageUrl::File(directory) => {
            let directory = directory.clone();
            let options = LocalStoreOptions { io_threads: settings.config.persist.io_threads, ..Default::default() };
            let put_delay_ms = test_put_delay_ms()?;
            Ok(Box::new(move || {
                let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::open(directory.clone(), options.clone())?);
                if put_delay_ms > 0 {
                    let plan = FaultPlan { put_delay_ms, ..FaultPlan::default() };
                    return Ok(Arc::new(FailingStore::new(store, plan)));
                }
                Ok(store)
            }))
        }
        StorageUrl::S3 { bucket, prefix, endpoint, region } => {
            let region = region.clone().unwrap_or_else(|| "us-east-1".into());
            // Without an endpoint: AWS S3 in the region, path-style.
            let endpoint = endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
            parse_endpoint(&endpoint).map_err(|message| format!("storage.url: {message}"))?;
            let credentials = Credentials::from_env()?;
            if credentials.is_none() {
                tracing::warn!("AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY are not set: S3 requests are not signed");
            }
            let location = S3Location { endpoint, bucket: bucket.clone(), prefix: prefix.clone(), region, credentials };
            let s3_metrics = metrics.s3.clone();
            let options = s3_options(&settings.config.s3);
            Ok(Box::new(move || {
                let store = S3Store::open(location.clone(), options.clone(), s3_metrics.clone())?;
                Ok(Arc::new(store) as Arc<dyn ObjectStore>)
            }))
        }
    }
}

fn s3_options(config: &S3Config) -> S3Options {
    S3Options {
        connections_max: config.connections_max,
        target_pool_size: config.target_pool_size,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        read_timeout: Duration::from_millis(config.read_timeout_ms),
        operation_timeout: Duration::from_millis(config.operation_timeout_ms),
        attempts_max: config.attempts_max,
        response_bytes_max: config.response_bytes_max,
        ..S3Options::default()
    }
}

/// `STOAT_TEST_PUT_DELAY_MS`: slows every batch write by this much, so that
/// tests can see what happens while a batch is not yet durable. Not for
/// production; unset means 0.
fn test_put_delay_ms() -> Result<u64, String> {
    match std::env::var("STOAT_TEST_PUT_DELAY_MS") {
        Err(_) => Ok(0),
        Ok(text) => text.parse().map_err(|_| format!("STOAT_TEST_PUT_DELAY_MS: {text:?} is not a number")),
    }
}

fn load_settings(args: &ServeArgs) -> Result<Settings, String> {
    let config = match &args.config {
        Some(path) => Config::from_file(path).map_err(|error| error.to_string())?,
        None => Config::default(),
    };
    let overrides = Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        storage: args.storage.clone(),
        log_level: args.log_level.clone(),
    };
    config.into_settings(overrides).map_err(|error| error.to_string())
}

fn check_open_files_limit(max_connections: usize) {
    match stoat::ops::sys::raise_open_files_limit() {
        Ok(limit) if limit < max_connections as u64 + 64 => tracing::warn!(
            open_files_limit = limit,
            max_connections,
            "the open-files limit is below server.max_connections; connections past it will be refused by accept"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read the open-files limit"),
    }
}

/// Blocks until SIGTERM or SIGINT; SIGHUP re-reads the log level from
/// `--config` (when neither `--log-level` nor `RUST_LOG` set it).
fn wait_for_stop_signal(mut signals: Signals, args: &ServeArgs, log: &LogHandle, level_from_file: bool) {
    for signal in signals.forever() {
        if signal != SIGHUP {
            return;
        }
        reload(args, log, level_from_file);
    }
}

fn reload(args: &ServeArgs, log: &LogHandle, level_from_file: bool) {
    let Some(path) = &args.config else {
        tracing::info!("SIGHUP: no --config file; nothing to reload");
        return;
    };
    if !level_from_file {
        tracing::info!("SIGHUP: the log level is set by --log-level or RUST_LOG; nothing to reload");
        return;
    }
    match Config::from_file(path) {
        Ok(config) => match log.set_filter(&config.log.level) {
            Ok(()) => {
                tracing::info!(level = %config.log.level, "SIGHUP: log level reloaded (other settings need a restart)")
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: log.level is invalid; keeping the current level")
            }
        },
        Err(error) => {
            tracing::error!(%error, "SIGHUP: cannot re-read the config; keeping the current settings")
        }
    }
}
