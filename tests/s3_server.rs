//! The real `stoat` binary on `--storage s3://...` against an in-process
//! fake_s3 that verifies SigV4: commits are durable in S3, a crash and
//! restart recover from S3, subscribers read history back from it; and bad
//! S3 settings are refused at start with exit code 2.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::s3::{create_bucket, location};
use common::{check_chain, read_log_and_orphans_from, read_log_from, start_load, take_over, On503, Stoat, DEADLINE};
use fake_s3::{Config, FakeS3, FaultConfig, FaultRule, Latency};
use stoat::log::names::LOG_PREFIX;
use stoat::log::s3::S3Store;
use stoat::log::store::Blocking;
use stoat::ops::metrics::S3Metrics;

const ACCESS_KEY: &str = "AKIDSTOAT";
const SECRET_KEY: &str = "secret key+/%é";

fn config(s3: &FakeS3) -> String {
    format!("[storage]\nurl = \"s3://stoat-bucket/cluster/one?endpoint={}&region=us-east-1\"\n", s3.url())
}

fn start(s3: &FakeS3) -> Stoat {
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    Stoat::start_with_env(&config(s3), &env)
}

/// A store of our own on the bucket and prefix the servers use.
fn reader(s3: &FakeS3) -> S3Store {
    let location = location(s3, "stoat-bucket", "cluster/one", Some((ACCESS_KEY, SECRET_KEY)));
    S3Store::open(location, common::s3::fast_options(), S3Metrics::default()).unwrap()
}

fn commit(stoat: &Stoat, request_id: &str) -> u64 {
    let body =
        format!(r#"{{"request_id":"{request_id}","operations":[{{"type":"write","key":"aw==","value":"dmFsdWU="}}]}}"#);
    let response = stoat.connect().post("/v1/commit", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["version"].as_u64().unwrap()
}

/// Reads `/v1/subscribe?after=0` until every id in `ids` has been seen.
fn subscribe_sees(addr: SocketAddr, ids: &[String]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET /v1/subscribe?after=0 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut text = String::new();
    let mut chunk = [0u8; 65536];
    while !ids.iter().all(|id| text.contains(&format!("\"{id}\""))) {
        assert!(Instant::now() < deadline, "subscribe did not deliver every id: {text}");
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "stream closed: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn commits_are_durable_in_s3_and_survive_a_crash() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials(ACCESS_KEY, SECRET_KEY)).unwrap();
    create_bucket(&s3, "stoat-bucket", Some((ACCESS_KEY, SECRET_KEY)));
    let mut stoat = start(&s3);
    let ids: Vec<String> = (0..30).map(|index| format!("s3-e2e-{index}")).collect();
    let mut versions = Vec::new();
    for id in &ids[..20] {
        versions.push(commit(&stoat, id));
    }
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{versions:?}");
    subscribe_sees(stoat.addr, &ids[..20]);

    // The batches are in the bucket under the prefix, readable by a store
    // of our own.
    let reader = reader(&s3);
    let batches = Blocking::new(&reader).list_all(LOG_PREFIX, None, 1000).unwrap();
    assert!(!batches.is_empty());

    let metrics = stoat.connect().get("/metrics").text();
    for needle in [
        "stoat_s3_requests_total{operation=\"PutObject\",outcome=\"ok\"}",
        "stoat_s3_request_duration_seconds_count{operation=\"PutObject\"}",
        "stoat_s3_operations_in_flight",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }

    stoat.crash();
    let stoat = start(&s3);
    let status = stoat.connect().get("/v1/status?request_id=s3-e2e-19");
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["status"], "committed", "{}", status.text());
    assert_eq!(status.json()["version"].as_u64(), Some(versions[19]));
    for id in &ids[20..] {
        versions.push(commit(&stoat, id));
    }
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{versions:?}");
    subscribe_sees(stoat.addr, &ids);
}

fn wait_for_more(acknowledged: &AtomicUsize, more: usize, what: &str) {
    let started = Instant::now();
    let target = acknowledged.load(Ordering::Relaxed) + more;
    let deadline = Instant::now() + DEADLINE;
    while acknowledged.load(Ordering::Relaxed) < target {
        assert!(Instant::now() < deadline, "{what}: commits did not progress");
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!("{what}: {more} more commits in {:?}", started.elapsed());
}

#[test]
fn s3_faults_and_an_outage_lose_and_duplicate_nothing() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials(ACCESS_KEY, SECRET_KEY)).unwrap();
    create_bucket(&s3, "stoat-bucket", Some((ACCESS_KEY, SECRET_KEY)));
    let mut stoat = start(&s3);
    let (stop, acknowledged) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let clients = start_load(stoat.addr, "load", 4, On503::Fail, &stop, &acknowledged);
    wait_for_more(&acknowledged, 50, "before faults");

    // 5xx, throttling, dropped connections before and after acting, stalls
    // and slow responses, on every operation.
    let rule = FaultRule::for_operations(["*"])
        .error_rate(0.1)
        .slowdown_rate(0.05)
        .drop_rate(0.05)
        .drop_after_rate(0.05)
        .stall(0.01, 1_000)
        .latency(Latency::UniformMs(0, 20));
    s3.set_faults(FaultConfig::new(9).rule(rule));
    wait_for_more(&acknowledged, 60, "under faults");
    let stats = s3.fault_stats();
    assert!(stats.internal_errors + stats.slowdowns > 0 && stats.drops + stats.drops_after > 0, "{stats:?}");

    // A total outage, then recovery: commits wait, then resume.
    s3.set_faults(FaultConfig::new(10).rule(FaultRule::for_operations(["*"]).error_rate(1.0)));
    std::thread::sleep(Duration::from_millis(1500));
    s3.set_faults(FaultConfig::default());
    wait_for_more(&acknowledged, 100, "after the outage");

    stop.store(true, Ordering::Relaxed);
    let acked: Vec<(String, u64)> = clients.into_iter().flat_map(|client| client.join().unwrap()).collect();
    stoat.crash();
    let reader = reader(&s3);
    let logged = check_chain(&read_log_from(&reader));
    for (request_id, version) in &acked {
        assert_eq!(logged.get(request_id), Some(version), "acknowledged {request_id} at {version}");
    }

    let stoat = start(&s3);
    let last = acked.iter().map(|(_, version)| *version).max().unwrap();
    assert!(commit(&stoat, "after-restart") > last);
}

#[test]
fn bad_s3_settings_exit_with_code_2_and_one_line() {
    for (url, env, needle) in [
        ("s3://stoat-bucket/p?endpoint=http://127.0.0.1:99999", vec![], "port"),
        ("s3://stoat-bucket/p?endpoint=http://127.0.0.1:1/path", vec![], "no path"),
        ("s3://stoat-bucket/p?endpoint=http://127.0.0.1:1", vec![("AWS_ACCESS_KEY_ID", "only-one")], "together"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_stoat"))
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", url])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{url}: {stderr}");
        assert!(stderr.contains("storage.url") || stderr.contains("AWS_"), "{url}: {stderr}");
        assert!(stderr.contains(needle), "{url}: {stderr}");
    }
}

#[test]
fn two_servers_on_one_s3_prefix_keep_one_chain() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials(ACCESS_KEY, SECRET_KEY)).unwrap();
    create_bucket(&s3, "stoat-bucket", Some((ACCESS_KEY, SECRET_KEY)));
    let mut first = start(&s3);
    let mut second = start(&s3);
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let mut threads = start_load(first.addr, "a", 3, On503::Stop, &stop, &count);
    threads.extend(start_load(second.addr, "b", 3, On503::Stop, &stop, &count));
    let ready = |stoat: &Stoat| stoat.is_ready();
    let deadline = Instant::now() + DEADLINE;
    while ready(&first) && ready(&second) {
        assert!(Instant::now() < deadline, "both servers still lead: the second's first batch must collide");
        std::thread::sleep(Duration::from_millis(10));
    }
    wait_for_more(&count, 100, "commits acknowledged by the remaining leader");
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<(String, u64)> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    assert!(ready(&first) != ready(&second), "exactly one server must still lead");
    first.crash();
    second.crash();
    let reader = reader(&s3);
    let logged = check_chain(&read_log_from(&reader));
    for (request_id, version) in &acknowledged {
        assert_eq!(logged.get(request_id), Some(version), "acknowledged {request_id} at {version}");
    }
}

#[test]
fn a_leader_taking_over_a_live_one_on_s3_keeps_its_late_batches_out_of_the_log() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials(ACCESS_KEY, SECRET_KEY)).unwrap();
    create_bucket(&s3, "stoat-bucket", Some((ACCESS_KEY, SECRET_KEY)));
    // Slow answers to puts: the first leader keeps many batch writes in
    // flight (16 on S3 by default), and its clients, waiting for those
    // answers, leave gaps between its bursts of writes in which a new
    // leader's first batch can land first (wide enough on a loaded machine).
    s3.set_faults(FaultConfig::put_latency_ms(3, 250));
    // Few request ids to read at start, so that a new leader's recovery is
    // short and its first batch has a chance against the old leader's.
    let config = format!("{}[commit]\nrequest_index_capacity = 10\n", config(&s3));
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    let start = |_: &FakeS3| Stoat::start_with_env(&config, &env);
    let mut first = start(&s3);
    let stop = Arc::new(AtomicBool::new(false));
    let (first_count, second_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = start_load(first.addr, "a", 6, On503::Stop, &stop, &first_count);
    wait_for_more(&first_count, 50, "commits on the first leader");
    // The new leader's first batch races the old leader's writes (fake-s3
    // applies a put at once and delays only its answer, so the old leader's
    // writes land early).
    let mut second = take_over(&first, 4, 60, || start(&s3), &stop, &second_count, &mut threads);
    wait_for_more(&second_count, 100, "commits on the new leader");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<(String, u64)> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    first.crash();
    let (log, orphans) = read_log_and_orphans_from(&reader(&s3));
    let logged = check_chain(&log);
    for (request_id, version) in &acknowledged {
        assert_eq!(logged.get(request_id), Some(version), "acknowledged {request_id} at {version}");
    }
    for orphan in &orphans {
        let container = log.iter().rev().find(|batch| batch.prev_version < orphan.prev_version).unwrap();
        assert!(orphan.last_version < container.last_version, "{} lies inside {}", orphan.name, container.name);
        assert!(orphan.transactions.iter().all(|(_, request_id)| !logged.contains_key(request_id)));
    }
    // The new leader serves the log's chain, and only it, from storage.
    let every_id: Vec<String> = log.iter().flat_map(|batch| batch.transactions.iter().map(|t| t.1.clone())).collect();
    subscribe_sees(second.addr, &every_id);
    second.crash();
    eprintln!("{} batches in the log, {} orphans", log.len(), orphans.len());
}
