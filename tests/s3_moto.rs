//! Against a real S3 implementation (moto, installed from PyPI by
//! `scripts/test`): the `ObjectStore` contract on `S3Store`, and the binary
//! on `--storage s3://...` through kill -9 rounds, and retention. Nothing
//! is raced on moto: its conditional PUT is not atomic under concurrency
//! (see the contract test); racing puts are tested against fake_s3
//! (tests/s3_store.rs). Runs when `STOAT_S3_TEST_ENDPOINT` names the server
//! (`http://127.0.0.1:PORT`, any credentials accepted); otherwise each test
//! says it was skipped and passes.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::s3::fast_options;
use common::{check_chain, read_log_from, start_load, Client, On503, Stoat, DEADLINE};
use stoat::log::s3::{Credentials, S3Location, S3Store};
use stoat::log::store::{Blocking, StoreError};
use stoat::ops::metrics::S3Metrics;

const BUCKET: &str = "stoat-tests";

/// The endpoint, with the test bucket created; `None` skips the test.
fn endpoint() -> Option<String> {
    let Ok(endpoint) = std::env::var("STOAT_S3_TEST_ENDPOINT") else {
        eprintln!("skipped: STOAT_S3_TEST_ENDPOINT is not set (scripts/test starts moto and sets it)");
        return None;
    };
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_owned();
    let mut stream = TcpStream::connect(&host).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = format!("PUT /{BUCKET} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    // 200 created, or 409 BucketAlreadyOwnedByYou from an earlier test.
    assert!(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.1 409"), "create bucket: {reply}");
    Some(endpoint)
}

/// A prefix no other test or run uses.
fn unique_prefix(label: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{label}-{}-{nanos}", std::process::id())
}

fn store(endpoint: &str, prefix: &str) -> S3Store {
    let location = S3Location {
        endpoint: endpoint.into(),
        bucket: BUCKET.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        credentials: Some(Credentials {
            access_key_id: "testing".into(),
            secret_access_key: "testing".into(),
            session_token: None,
        }),
    };
    S3Store::open(location, fast_options(), S3Metrics::default()).unwrap()
}

#[test]
fn the_object_store_contract_holds_on_moto() {
    let Some(endpoint) = endpoint() else { return };
    let prefix = unique_prefix("contract");
    let stores: Vec<Arc<S3Store>> = (0..4).map(|_| Arc::new(store(&endpoint, &prefix))).collect();
    // Put-if-absent: the first writer of a name wins, every later one is
    // told AlreadyExists. Sequential here: moto's conditional PUT is not
    // atomic under concurrency (2 of 8 racing writers won a round when this
    // test raced them), so exclusivity under races is tested against fake_s3
    // (tests/s3_store.rs); two leaders are not raced on moto either.
    for round in 0..5 {
        let name = format!("race/{round}");
        let results: Vec<_> = (0..8)
            .map(|writer| Blocking::new(stores[writer % 4].as_ref()).put_if_absent(&name, vec![writer as u8; 10]))
            .collect();
        assert_eq!(results[0], Ok(()));
        assert!(results[1..].iter().all(|r| matches!(r, Err(StoreError::AlreadyExists { .. }))), "{results:?}");
        assert_eq!(Blocking::new(stores[1].as_ref()).get(&name, None).unwrap(), vec![0u8; 10], "the first write stays");
    }
    let blocking = Blocking::new(stores[0].as_ref());
    blocking.put_if_absent("object", b"0123456789".to_vec()).unwrap();
    assert_eq!(blocking.get("object", Some(2..5)).unwrap(), b"234");
    assert_eq!(blocking.get("object", Some(8..50)).unwrap(), b"89");
    assert_eq!(blocking.get("object", Some(10..20)).unwrap(), b"");
    assert_eq!(blocking.get("missing", None), Err(StoreError::NotFound { name: "missing".into() }));
    blocking.put("meta", b"one".to_vec()).unwrap();
    blocking.put("meta", b"three".to_vec()).unwrap();
    assert_eq!(blocking.get("meta", None).unwrap(), b"three");
    assert_eq!(blocking.list_all_sized("meta", None, 10).unwrap(), [("meta".to_string(), 5)]);

    let names: Vec<String> = (0..1105).map(|index| format!("log/{index:05}")).collect();
    let (reply, completions) = crossbeam_channel::unbounded();
    for (index, name) in names.iter().enumerate() {
        let op = stoat::log::store::ObjectOp::PutIfAbsent { name: name.clone(), bytes: Arc::new(b"x".to_vec()) };
        stoat::log::store::ObjectStore::submit(stores[0].as_ref(), index as u64, op, &reply);
    }
    for _ in 0..names.len() {
        let completion = completions.recv_timeout(Duration::from_secs(120)).unwrap();
        assert!(completion.result.is_ok(), "{completion:?}");
    }
    assert_eq!(blocking.list_all("log/", None, 1000).unwrap(), names);
    assert_eq!(blocking.list_all("log/", Some("log/00999"), 7).unwrap(), names[1000..]);
    blocking.delete(names[..1050].to_vec()).unwrap();
    assert_eq!(blocking.list_all("log/", None, 1000).unwrap(), names[1050..]);
}

fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + DEADLINE * 3;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn check_acknowledged(logged: &HashMap<String, u64>, acknowledged: &[(String, u64)]) {
    for (request_id, version) in acknowledged {
        assert_eq!(logged.get(request_id), Some(version), "acknowledged {request_id} at {version}");
    }
}

#[test]
fn kill_9_rounds_keep_one_chain_on_moto() {
    let Some(endpoint) = endpoint() else { return };
    let prefix = unique_prefix("server");
    let config = format!("[storage]\nurl = \"s3://{BUCKET}/{prefix}?endpoint={endpoint}\"\n");
    let env = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];
    let mut acknowledged = Vec::new();
    for round in 0..3 {
        // A PUT the killed server had in flight can land after this server
        // read the log (S3 completes a request it has fully received): this
        // server's first batch then loses its name and it takes over again
        // (pipeline/persist.rs), so commits go on.
        let mut stoat = Stoat::start_with_env(&config, &env);
        let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let threads = start_load(stoat.addr, &format!("r{round}"), 4, On503::Retry, &stop, &count);
        let deadline = Instant::now() + DEADLINE * 3;
        while count.load(Ordering::Relaxed) < 100 {
            if Instant::now() > deadline {
                let finished = threads.iter().filter(|thread| thread.is_finished()).count();
                panic!(
                    "round {round}: {} commits acknowledged, {finished} of 4 clients stopped; server log: {:#?}",
                    count.load(Ordering::Relaxed),
                    stoat.log_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        stoat.crash();
        stop.store(true, Ordering::Relaxed);
        acknowledged.extend(threads.into_iter().flat_map(|thread| thread.join().unwrap()));
    }
    let reader = store(&endpoint, &prefix);
    check_acknowledged(&check_chain(&read_log_from(&reader)), &acknowledged);
}

/// The versions of the first `count` transaction events of a subscribe stream.
fn stream_versions(addr: SocketAddr, after: u64, count: usize) -> Vec<u64> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(format!("GET /v1/subscribe?after={after} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    let mut chunk = [0u8; 65536];
    while text.matches("event: transaction").count() < count {
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "the stream ended early: {text}");
        text.push_str(std::str::from_utf8(&chunk[..read]).unwrap());
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.lines().filter_map(|line| line.strip_prefix("id: ")).map(|id| id.parse().unwrap()).take(count).collect()
}

#[test]
fn retention_truncates_and_policies_survive_a_restart_on_moto() {
    let Some(endpoint) = endpoint() else { return };
    let prefix = unique_prefix("retention");
    let config = format!(
        "[storage]\nurl = \"s3://{BUCKET}/{prefix}?endpoint={endpoint}\"\n[retention]\ntruncate_interval_ms = 20\n"
    );
    let env = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];
    let mut stoat = Stoat::start_with_env(&config, &env);
    let mut client = stoat.connect();
    // One commit at a time: each is its own batch object.
    let versions: Vec<u64> = (0..12)
        .map(|i| {
            let body =
                format!(r#"{{"operations":[{{"type":"write","key":"a2V5","value":"{}"}}]}}"#, ["MA==", "MQ=="][i % 2]);
            let response = client.post("/v1/commit", &body);
            assert_eq!(response.status, 200, "{}", response.text());
            response.json()["version"].as_u64().unwrap()
        })
        .collect();
    let put = |client: &mut Client, version: u64| {
        let body = format!(r#"{{"version":{version}}}"#);
        client.send(
            format!("PUT /v1/retention/keep HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes(),
        );
        client.read_response()
    };
    let policy = put(&mut client, versions[8]);
    assert_eq!(policy.status, 200, "{}", policy.text());
    // Every batch before the one holding versions[8] goes.
    let oldest = versions[7];
    wait_until(|| Client::connect(stoat.addr).get("/v1/retention/").json()["oldest_version"] == oldest, "truncation");
    let reader = store(&endpoint, &prefix);
    let batches = read_log_from(&reader);
    assert_eq!(batches[0].prev_version, oldest, "the log in S3 starts where the policy pins it");
    for pair in batches.windows(2) {
        assert_eq!(pair[1].prev_version, pair[0].last_version, "{} continues {}", pair[1].name, pair[0].name);
    }
    assert_eq!(batches.last().unwrap().last_version, versions[11]);
    let refused = client.get("/v1/subscribe?after=0");
    assert_eq!((refused.status, refused.json()["oldest_version"].as_u64()), (410, Some(oldest)));
    assert_eq!(client.get("/v1/status?request_id=x&min_version=0").status, 410);

    let kept = client.get("/v1/retention/keep").json();
    drop(client);
    stoat.signal("TERM");
    assert!(stoat.wait_exit().success());
    let stoat = Stoat::start_with_env(&config, &env);
    let mut client = stoat.connect();
    assert_eq!(client.get("/v1/retention/keep").json(), kept, "the policy is read back from S3");
    assert_eq!(client.get("/v1/retention/").json()["oldest_version"], oldest);
    assert_eq!(stream_versions(stoat.addr, oldest, 4), versions[8..]);
}
