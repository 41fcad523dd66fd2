//! Test harness: starts the real `stoat` binary on a loopback port and talks
//! raw HTTP/1.1 to it over TCP.
#![allow(dead_code)]

pub mod s3;
pub mod sse;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any wait in a test may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running `stoat serve` and the lines it has logged.
pub struct Stoat {
    pub child: Child,
    pub addr: SocketAddr,
    log: Receiver<String>,
    pub log_seen: Vec<String>,
    _data: Option<tempfile::TempDir>,
    _config: tempfile::NamedTempFile,
}

impl Stoat {
    /// Starts `stoat serve` on an ephemeral port with a fresh data dir and
    /// `config` (TOML text) as its configuration file.
    pub fn start(config: &str) -> Stoat {
        Stoat::start_with_env(config, &[])
    }

    /// Like `start`, with extra environment variables (test hooks).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Stoat {
        let data = tempfile::tempdir().unwrap();
        let path = data.path().to_path_buf();
        let mut stoat = Stoat::spawn(config, &path, Some(data), env);
        stoat.wait_for_log("log recovered; serving");
        stoat
    }

    /// Starts `stoat serve` on an existing data directory (kept afterwards).
    pub fn start_at(config: &str, data_dir: &std::path::Path) -> Stoat {
        let mut stoat = Stoat::spawn(config, data_dir, None, &[]);
        stoat.wait_for_log("log recovered; serving");
        stoat
    }

    /// Like `start_at`, with extra environment variables (test hooks).
    pub fn start_at_with_env(config: &str, data_dir: &std::path::Path, env: &[(&str, &str)]) -> Stoat {
        let mut stoat = Stoat::spawn(config, data_dir, None, env);
        stoat.wait_for_log("log recovered; serving");
        stoat
    }

    /// Starts `stoat serve` and returns once it listens, recovered or not.
    pub fn start_listening_at(config: &str, data_dir: &std::path::Path) -> Stoat {
        Stoat::spawn(config, data_dir, None, &[])
    }

    fn spawn(
        config: &str,
        data_dir: &std::path::Path,
        owned: Option<tempfile::TempDir>,
        env: &[(&str, &str)],
    ) -> Stoat {
        let config_file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(config_file.path(), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_stoat"))
            .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "info", "--config"])
            .arg(config_file.path())
            .arg("--data-dir")
            .arg(data_dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (sender, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut stoat = Stoat {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            log_seen: Vec::new(),
            _data: owned,
            _config: config_file,
        };
        let line = stoat.wait_for_log("listening on http://");
        let addr = line.split("listening on http://").nth(1).unwrap().split_whitespace().next().unwrap();
        stoat.addr = addr.parse().unwrap();
        stoat
    }

    /// Waits for a log line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        if let Some(line) = self.log_seen.iter().find(|line| line.contains(needle)) {
            return line.clone();
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.log_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?}; saw {:?}", self.log_seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("stoat exited before logging {needle:?}; saw {:?}", self.log_seen)
                }
            }
        }
    }

    /// Every log line the server has printed so far (for failure messages).
    pub fn log_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.log.try_recv() {
            self.log_seen.push(line);
        }
        self.log_seen.clone()
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Whether `/readyz` answers 200: recovered and leading.
    pub fn is_ready(&self) -> bool {
        Client::connect(self.addr).get("/readyz").status == 200
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, failing after the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "stoat did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Stoat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| panic!("{error}: {}", self.text()))
    }

    /// The `error` code of a JSON error body.
    pub fn error_code(&self) -> String {
        let text = self.text();
        let start = text.find("\"error\":\"").map(|i| i + 9).unwrap_or_else(|| panic!("no error code in {text}"));
        text[start..].split('"').next().unwrap().to_string()
    }
}

/// One client connection with a receive buffer.
pub struct Client {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl Client {
    /// Connects, or `None` if nothing accepts (e.g. the server was killed).
    pub fn try_connect(addr: SocketAddr) -> Option<Client> {
        let stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(DEADLINE)).ok()?;
        stream.set_nodelay(true).ok()?;
        Some(Client { stream, buffer: Vec::new() })
    }

    /// Sends a request and reads its response; `None` if the connection
    /// fails on the way (the outcome is then unknown).
    pub fn try_post(&mut self, path: &str, body: &str) -> Option<Response> {
        let request = format!("POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        self.stream.write_all(request.as_bytes()).ok()?;
        loop {
            if let Some((response, used)) = parse_response(&self.buffer) {
                self.buffer.drain(..used);
                return Some(response);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.buffer.extend_from_slice(&chunk[..read]),
            }
        }
    }

    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buffer: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    pub fn get(&mut self, path: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        self.read_response()
    }

    pub fn post(&mut self, path: &str, body: &str) -> Response {
        self.send(format!("POST {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
        self.read_response()
    }

    /// Reads exactly one response (Content-Length framed).
    pub fn read_response(&mut self) -> Response {
        loop {
            if let Some((response, used)) = parse_response(&self.buffer) {
                self.buffer.drain(..used);
                return response;
            }
            let mut chunk = [0u8; 65536];
            let read = self.stream.read(&mut chunk).expect("read a response");
            assert!(
                read > 0,
                "connection closed before a full response; have {:?}",
                String::from_utf8_lossy(&self.buffer)
            );
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// True when the server closes the connection (EOF or reset) before the
    /// deadline, with no further bytes.
    pub fn closed_by_server(&mut self) -> bool {
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.buffer.is_empty(),
            Ok(_) => false,
            Err(error) => error.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

fn parse_response(buffer: &[u8]) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer).expect("a valid response head") {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return None,
    };
    let headers: Vec<(String, String)> =
        response.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
    let status = response.code.unwrap();
    let length: usize =
        headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap());
    if buffer.len() < head_len + length {
        return None;
    }
    let body = buffer[head_len..head_len + length].to_vec();
    Some((Response { status, headers, body }, head_len + length))
}

/// One batch object of the log, as read back from a data directory.
#[derive(Debug)]
pub struct LoggedBatch {
    pub name: String,
    pub prev_version: u64,
    pub last_version: u64,
    pub leader_id: String,
    pub transactions: Vec<(u64, String)>,
}

/// Every batch in a data directory's log, in log order, decoded and verified.
pub fn read_log(data_dir: &std::path::Path) -> Vec<LoggedBatch> {
    use stoat::log::local::{LocalStore, LocalStoreOptions};
    let store = LocalStore::open(data_dir.join("log"), LocalStoreOptions::default()).unwrap();
    read_log_from(&store)
}

/// Every batch in a store's log, in log order, decoded and verified.
pub fn read_log_from(store: &dyn stoat::log::store::ObjectStore) -> Vec<LoggedBatch> {
    use stoat::log::format::decode_batch;
    use stoat::log::names::LOG_PREFIX;
    use stoat::log::store::Blocking;
    let blocking = Blocking::new(store);
    let names = blocking.list_all(LOG_PREFIX, None, 1000).unwrap();
    names
        .into_iter()
        .map(|name| {
            let bytes = blocking.get(&name, None).unwrap();
            let batch = decode_batch(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
            LoggedBatch {
                name,
                prev_version: batch.prev_version,
                last_version: batch.last_version,
                leader_id: batch.leader_id,
                transactions: batch.transactions.into_iter().map(|t| (t.version, t.request_id)).collect(),
            }
        })
        .collect()
}

/// The log's batches in order, and apart from them the orphans: batches
/// named inside an earlier batch (a fenced leader's late writes, see
/// `stoat::log::chain`). Every batch is decoded and verified.
pub fn read_log_and_orphans_from(store: &dyn stoat::log::store::ObjectStore) -> (Vec<LoggedBatch>, Vec<LoggedBatch>) {
    let mut log: Vec<LoggedBatch> = Vec::new();
    let mut orphans = Vec::new();
    for batch in read_log_from(store) {
        match log.last() {
            Some(before) if batch.prev_version < before.last_version => orphans.push(batch),
            _ => log.push(batch),
        }
    }
    (log, orphans)
}

/// Checks that the batches form one gapless chain and returns every
/// transaction's (version, request id), asserting request ids are unique.
pub fn check_chain(batches: &[LoggedBatch]) -> std::collections::HashMap<String, u64> {
    let mut previous_last = 0;
    let mut by_request_id = std::collections::HashMap::new();
    for batch in batches {
        assert_eq!(batch.prev_version, previous_last, "{} does not continue the chain", batch.name);
        let mut version = batch.prev_version;
        for (transaction_version, request_id) in &batch.transactions {
            assert!(*transaction_version > version, "{}: versions must increase", batch.name);
            version = *transaction_version;
            let earlier = by_request_id.insert(request_id.clone(), *transaction_version);
            assert!(earlier.is_none(), "request id {request_id} is in the log twice");
        }
        assert_eq!(version, batch.last_version);
        previous_last = batch.last_version;
    }
    by_request_id
}

/// Load threads started by [`start_load`]: each returns its acknowledged
/// (request id, version) pairs.
pub type LoadThreads = Vec<std::thread::JoinHandle<Vec<(String, u64)>>>;

/// Starts new leaders with `start` while `old` leads, each with `clients`
/// load threads (ids `b{attempt}-...`, counted in `count`, ended by `stop`
/// or by being fenced), until one of them fences `old`: a new leader's
/// first batch races the old leader's writes in flight, and whichever lands
/// first wins. A candidate that loses is crashed. Every load thread started
/// is added to `threads`; returns the winner.
pub fn take_over(
    old: &Stoat,
    clients: usize,
    attempts: usize,
    mut start: impl FnMut() -> Stoat,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
    threads: &mut LoadThreads,
) -> Stoat {
    for attempt in 0..attempts {
        let mut candidate = start();
        let load = start_load(candidate.addr, &format!("b{attempt}"), clients, On503::Stop, stop, count);
        let deadline = Instant::now() + DEADLINE;
        while old.is_ready() && candidate.is_ready() {
            assert!(Instant::now() < deadline, "one of the two leaders must be fenced");
            std::thread::sleep(Duration::from_millis(10));
        }
        threads.extend(load);
        if !old.is_ready() {
            return candidate;
        }
        candidate.crash();
    }
    panic!("no new leader won within {attempts} attempts");
}

/// What a load thread does with a 503.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum On503 {
    /// Ends the thread (the server stopped leading, or is stopping).
    Stop,
    /// Goes on with the next commit after a pause (the server is taking
    /// over the log again); the commit is not counted as acknowledged.
    Retry,
    /// Fails the test: every answer must be 200.
    Fail,
}

/// Starts `clients` threads committing blind writes (ids `{label}-{client}-{n}`)
/// to `addr` until `stop` is set or the connection fails; each returns its
/// acknowledged (request id, version) pairs and counts them in `count`.
/// Every answer must be 200 or a 503 handled as `on_503` says.
pub fn start_load(
    addr: SocketAddr,
    label: &str,
    clients: usize,
    on_503: On503,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
    count: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> LoadThreads {
    use std::sync::atomic::Ordering;
    (0..clients)
        .map(|client| {
            let (stop, count, label) = (stop.clone(), count.clone(), label.to_owned());
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                let Some(mut connection) = Client::try_connect(addr) else { return acknowledged };
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let request_id = format!("{label}-{client}-{n}");
                    let body = format!(
                        r#"{{"request_id":"{request_id}","operations":[{{"type":"write","key":"aw==","value":"dg=="}}]}}"#
                    );
                    let Some(response) = connection.try_post("/v1/commit", &body) else { break };
                    match (on_503, response.status) {
                        (On503::Stop, 503) => break,
                        (On503::Retry, 503) => {
                            std::thread::sleep(std::time::Duration::from_millis(20));
                            continue;
                        }
                        _ => {}
                    }
                    assert_eq!(response.status, 200, "{}", response.text());
                    acknowledged.push((request_id, response.json()["version"].as_u64().unwrap()));
                    count.fetch_add(1, Ordering::Relaxed);
                }
                acknowledged
            })
        })
        .collect()
}
