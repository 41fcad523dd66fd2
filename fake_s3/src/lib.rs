//! fake_s3: an S3-compatible server for tests and local use, with seeded
//! fault injection. Runs in-process ([`FakeS3::start`]: an ephemeral port,
//! background threads, stopped on drop) or as the `fake-s3` binary.
//!
//! ```no_run
//! use fake_s3::{Config, FakeS3, FaultConfig};
//! let s3 = FakeS3::start(Config::ephemeral()).unwrap();
//! // http://127.0.0.1:PORT, path-style; any credentials are accepted.
//! println!("{}", s3.url());
//! // Every PUT of an object takes 50 ms more from now on.
//! s3.set_faults(FaultConfig::put_latency_ms(1, 50));
//! ```

pub mod admin;
pub mod api;
pub mod aws_chunked;
pub mod checksum;
pub mod error;
pub mod faults;
pub mod multipart;
pub mod range;
pub mod service;
pub mod sigv2;
pub mod sigv4;
pub mod store;
pub mod time;
pub mod url;
pub mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use error::S3Error;
pub use faults::{FaultConfig, FaultRule, FaultStats, Latency};
use service::{Service, ServiceSettings};
pub use sigv4::Credentials;
use stoat_http::server::{Server, ServerConfig};
use stoat_http::Limits;
use store::Store;

/// How a fake-s3 runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Objects on disk here (kept across restarts); `None` keeps them in memory.
    pub data_dir: Option<PathBuf>,
    /// When not empty, every request must be signed (SigV4) with one of these.
    pub credentials: Vec<Credentials>,
    pub region: String,
    pub faults: FaultConfig,
    /// Larger request bodies are refused (400 EntityTooLarge) before they
    /// are read; bodies are held in memory, so keep this modest.
    pub max_object_bytes: u64,
    /// Every part of a multipart upload but the last must be this large
    /// (S3: 5 MiB).
    pub min_part_bytes: u64,
    /// Threads that run requests.
    pub workers: usize,
    /// Host suffixes for virtual-host style requests (`bucket.localhost`).
    pub virtual_host_domains: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            data_dir: None,
            credentials: Vec::new(),
            region: "us-east-1".into(),
            faults: FaultConfig::default(),
            max_object_bytes: 1024 * 1024 * 1024,
            min_part_bytes: 5 * 1024 * 1024,
            workers: 8,
            virtual_host_domains: vec!["localhost".into()],
        }
    }
}

impl Config {
    /// In memory, on `127.0.0.1:0` (a free port), no credentials.
    pub fn ephemeral() -> Config {
        Config { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..Config::default() }
    }

    pub fn with_credentials(mut self, access_key: &str, secret_key: &str) -> Config {
        self.credentials.push(Credentials { access_key: access_key.into(), secret_key: secret_key.into() });
        self
    }

    pub fn with_data_dir(mut self, dir: impl Into<PathBuf>) -> Config {
        self.data_dir = Some(dir.into());
        self
    }

    pub fn with_faults(mut self, faults: FaultConfig) -> Config {
        self.faults = faults;
        self
    }
}

/// A running fake-s3. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeS3 {
    server: Server,
    service: Arc<Service>,
}

impl FakeS3 {
    pub fn start(config: Config) -> std::io::Result<FakeS3> {
        let store = match &config.data_dir {
            Some(dir) => Store::on_disk(dir, config.min_part_bytes)?,
            None => Store::in_memory(config.min_part_bytes),
        };
        config.faults.validate().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let settings = ServiceSettings {
            credentials: config.credentials.clone(),
            region: config.region.clone(),
            virtual_host_domains: config.virtual_host_domains.clone(),
        };
        let service = Arc::new(Service::new(store, faults::Faults::new(config.faults.clone()), settings));
        let listener = std::net::TcpListener::bind(config.listen)?;
        let server_config = ServerConfig {
            limits: Limits { head_bytes_max: 64 * 1024, body_bytes_max: config.max_object_bytes },
            workers: config.workers.max(1),
            max_connections: 4096,
            idle_timeout: Duration::from_secs(120),
        };
        let server = Server::start(listener, server_config, service.clone())?;
        Ok(FakeS3 { server, service })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// `http://127.0.0.1:PORT`: the endpoint URL for path-style clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Replaces the fault configuration (counters restart from the seed).
    pub fn set_faults(&self, faults: FaultConfig) {
        self.service.faults.set(faults);
    }

    pub fn fault_stats(&self) -> FaultStats {
        self.service.faults.stats()
    }

    /// Stops serving and joins the threads (also done on drop).
    pub fn stop(mut self) {
        self.server.stop();
    }
}
