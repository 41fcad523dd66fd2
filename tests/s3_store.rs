//! The `ObjectStore` contract on `S3Store` against an in-process fake_s3
//! over loopback TCP: exclusive put-if-absent, ranges, paged listings,
//! deletes, retries of injected faults, no retry of a decided conditional
//! put, and SigV4 against a server that verifies it.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::s3::{create_bucket, fast_options, location, open};
use fake_s3::{Config, FakeS3, FaultConfig, FaultRule};
use stoat::log::s3::{S3Options, S3Store};
use stoat::log::store::{Blocking, Completion, ObjectOp, ObjectStore, OpOutput, StoreError};
use stoat::ops::metrics::{S3Metrics, S3OperationLabels};

fn started() -> FakeS3 {
    let s3 = FakeS3::start(Config::ephemeral()).unwrap();
    create_bucket(&s3, "bucket", None);
    s3
}

/// Submits every op at once (all in flight together) and waits for all.
fn run_all(store: &dyn ObjectStore, ops: Vec<ObjectOp>) -> Vec<Result<OpOutput, StoreError>> {
    let (reply, completions) = crossbeam_channel::unbounded::<Completion>();
    let count = ops.len();
    for (index, op) in ops.into_iter().enumerate() {
        store.submit(index as u64, op, &reply);
    }
    let mut results: Vec<Option<Result<OpOutput, StoreError>>> = vec![None; count];
    for _ in 0..count {
        let completion = completions.recv_timeout(Duration::from_secs(60)).expect("a completion");
        let slot = &mut results[completion.op_id as usize];
        assert!(slot.is_none(), "two completions for op {}", completion.op_id);
        *slot = Some(completion.result);
    }
    assert!(completions.recv_timeout(Duration::from_millis(50)).is_err(), "an extra completion");
    results.into_iter().map(Option::unwrap).collect()
}

fn put(name: &str, bytes: &[u8]) -> ObjectOp {
    ObjectOp::PutIfAbsent { name: name.into(), bytes: Arc::new(bytes.to_vec()) }
}

#[test]
fn put_if_absent_is_exclusive_under_racing_puts() {
    let s3 = started();
    let stores: Vec<Arc<S3Store>> = (0..4).map(|_| Arc::new(open(&s3, "bucket", "race"))).collect();
    for round in 0..10 {
        let name = format!("log/{round:020}.batch");
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|writer| {
                let (store, barrier, name) = (stores[writer % 4].clone(), barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let bytes = format!("writer {writer}").into_bytes();
                    (bytes.clone(), Blocking::new(store.as_ref()).put_if_absent(&name, bytes))
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|thread| thread.join().unwrap()).collect();
        let winners: Vec<_> = outcomes.iter().filter(|(_, result)| result.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        for (_, result) in &outcomes {
            assert!(matches!(result, Ok(()) | Err(StoreError::AlreadyExists { .. })), "{result:?}");
        }
        assert_eq!(Blocking::new(stores[0].as_ref()).get(&name, None).unwrap(), winners[0].0);
    }
}

#[test]
fn gets_read_ranges_and_report_missing_objects() {
    let s3 = started();
    let store = open(&s3, "bucket", "p/q");
    let blocking = Blocking::new(&store);
    blocking.put_if_absent("log/a", b"0123456789".to_vec()).unwrap();
    assert_eq!(blocking.get("log/a", None).unwrap(), b"0123456789");
    for (range, expected) in
        [(0..3, &b"012"[..]), (4..10, b"456789"), (8..100, b"89"), (10..20, b""), (50..60, b""), (3..3, b"")]
    {
        assert_eq!(blocking.get("log/a", Some(range.clone())).unwrap(), expected, "{range:?}");
    }
    assert_eq!(blocking.get("log/b", None), Err(StoreError::NotFound { name: "log/b".into() }));
    assert_eq!(blocking.get("log/b", Some(0..4)), Err(StoreError::NotFound { name: "log/b".into() }));
    assert!(matches!(blocking.get("../x", None), Err(StoreError::Permanent { .. })));
    // Put replaces; put-if-absent still refuses a taken name.
    blocking.put("meta/policy", b"first".to_vec()).unwrap();
    blocking.put("meta/policy", b"second, longer".to_vec()).unwrap();
    assert_eq!(blocking.get("meta/policy", None).unwrap(), b"second, longer");
    assert!(matches!(blocking.put_if_absent("meta/policy", b"x".to_vec()), Err(StoreError::AlreadyExists { .. })));
    let sized = blocking.list_all_sized("", None, 1).unwrap();
    assert_eq!(sized, [("log/a".to_string(), 10), ("meta/policy".to_string(), 14)]);
    let empty = open(&s3, "bucket", "empty");
    Blocking::new(&empty).put_if_absent("e", Vec::new()).unwrap();
    assert_eq!(Blocking::new(&empty).get("e", Some(0..5)).unwrap(), b"");
}

#[test]
fn listings_page_in_byte_order_and_deletes_go_in_batches() {
    let s3 = started();
    let store = open(&s3, "bucket", "log-test");
    let neighbour = open(&s3, "bucket", "log-test-other");
    Blocking::new(&neighbour).put_if_absent("log/x", b"n".to_vec()).unwrap();
    let mut names: Vec<String> = (0..1205).map(|index| format!("log/{index:06}")).collect();
    names.extend(["log/é", "log/a b", "log/+%", "other/1"].map(String::from));
    let results = run_all(&store, names.iter().map(|name| put(name, name.as_bytes())).collect());
    assert!(results.iter().all(|result| result == &Ok(OpOutput::Created)), "{results:?}");
    names.sort();
    let blocking = Blocking::new(&store);
    let log_names: Vec<String> = names.iter().filter(|name| name.starts_with("log/")).cloned().collect();
    for page_size in [1000, 999, 7] {
        assert_eq!(blocking.list_all("log/", None, page_size).unwrap(), log_names, "page size {page_size}");
    }
    let page = blocking.list("log/", Some("log/000999"), 3).unwrap();
    assert_eq!(page.names, ["log/001000", "log/001001", "log/001002"]);
    assert!(page.truncated);
    let tail = blocking.list("log/", Some("log/001204"), 1000).unwrap();
    assert_eq!(tail.names, ["log/a b", "log/é"]);
    assert!(!tail.truncated);
    assert_eq!(blocking.list_all("", None, 1000).unwrap(), names);

    blocking.delete(names[..1100].to_vec()).unwrap();
    blocking.delete(vec!["log/never-written".into()]).unwrap();
    blocking.delete(Vec::new()).unwrap();
    assert_eq!(blocking.list_all("", None, 1000).unwrap(), names[1100..]);
    assert_eq!(Blocking::new(&neighbour).list_all("", None, 10).unwrap(), ["log/x"]);
}

#[test]
fn injected_errors_slowdowns_and_dropped_connections_are_retried() {
    let s3 = started();
    let store = open(&s3, "bucket", "faults");
    let faults = FaultConfig::new(42).rule(
        FaultRule::for_operations(["*"]).error_rate(0.2).slowdown_rate(0.15).drop_rate(0.15).drop_after_rate(0.1),
    );
    s3.set_faults(faults);
    let names: Vec<String> = (0..60).map(|index| format!("log/{index:03}")).collect();
    let puts = run_all(&store, names.iter().map(|name| put(name, name.as_bytes())).collect());
    for (name, result) in names.iter().zip(&puts) {
        // A put whose reply was lost is retried and meets its own object:
        // AlreadyExists, which the persister resolves by reading back.
        assert!(matches!(result, Ok(OpOutput::Created) | Err(StoreError::AlreadyExists { .. })), "{name}: {result:?}");
    }
    let gets = run_all(&store, names.iter().map(|name| ObjectOp::Get { name: name.clone(), range: None }).collect());
    for (name, result) in names.iter().zip(gets) {
        assert_eq!(result, Ok(OpOutput::Bytes(name.as_bytes().to_vec())));
    }
    assert_eq!(Blocking::new(&store).list_all("log/", None, 7).unwrap(), names);
    let stats = s3.fault_stats();
    assert!(stats.internal_errors > 0 && stats.slowdowns > 0 && stats.drops > 0 && stats.drops_after > 0, "{stats:?}");
}

#[test]
fn stalled_responses_time_out_and_are_retried() {
    let s3 = started();
    let options = S3Options { read_timeout: Duration::from_millis(200), ..fast_options() };
    let store = S3Store::open(location(&s3, "bucket", "stall", None), options, S3Metrics::default()).unwrap();
    s3.set_faults(FaultConfig::new(3).rule(FaultRule::for_operations(["PutObject", "GetObject"]).stall(0.3, 5_000)));
    let names: Vec<String> = (0..20).map(|index| format!("s/{index}")).collect();
    let puts = run_all(&store, names.iter().map(|name| put(name, b"x")).collect());
    assert!(puts.iter().all(|result| result == &Ok(OpOutput::Created)), "{puts:?}");
    assert!(s3.fault_stats().stalls > 0);
}

#[test]
fn a_decided_conditional_put_is_not_retried() {
    let s3 = started();
    let metrics = S3Metrics::default();
    let store = S3Store::open(location(&s3, "bucket", "fence", None), fast_options(), metrics.clone()).unwrap();
    let blocking = Blocking::new(&store);
    blocking.put_if_absent("log/a", b"first".to_vec()).unwrap();
    let requests_before = s3.fault_stats().requests.get("PutObject").copied().unwrap_or(0);
    assert_eq!(
        blocking.put_if_absent("log/a", b"second".to_vec()),
        Err(StoreError::AlreadyExists { name: "log/a".into() })
    );
    assert_eq!(s3.fault_stats().requests.get("PutObject").copied().unwrap_or(0), requests_before + 1);
    assert_eq!(metrics.retries.get_or_create(&S3OperationLabels { operation: "PutObject" }).get(), 0);
    assert_eq!(blocking.get("log/a", None).unwrap(), b"first");
}

#[test]
fn signatures_verify_and_wrong_keys_are_permanent_errors() {
    let secret = "s3cr3t with spaces+plus%percent/ünïcødé";
    let s3 = FakeS3::start(Config::ephemeral().with_credentials("AKIDTEST", secret)).unwrap();
    create_bucket(&s3, "signed", Some(("AKIDTEST", secret)));
    let good = location(&s3, "signed", "pre fix+%", Some(("AKIDTEST", secret)));
    let store = S3Store::open(good, fast_options(), S3Metrics::default()).unwrap();
    let blocking = Blocking::new(&store);
    for name in ["log/a", "log/with space", "log/plus+percent%", "log/ünïcødé~"] {
        blocking.put_if_absent(name, name.as_bytes().to_vec()).unwrap();
        assert_eq!(blocking.get(name, Some(0..3)).unwrap(), &name.as_bytes()[..3]);
    }
    assert_eq!(blocking.list_all("log/", Some("log/a"), 2).unwrap().len(), 3);
    blocking.delete(vec!["log/a".into()]).unwrap();

    for (access_key, secret_key) in [("AKIDTEST", "wrong"), ("NOSUCHKEY", secret)] {
        let bad = location(&s3, "signed", "p", Some((access_key, secret_key)));
        let store = S3Store::open(bad, fast_options(), S3Metrics::default()).unwrap();
        let result = Blocking::new(&store).put_if_absent("log/a", b"x".to_vec());
        assert!(matches!(&result, Err(StoreError::Permanent { message }) if message.contains("403")), "{result:?}");
        assert!(matches!(Blocking::new(&store).list("", None, 5), Err(StoreError::Permanent { .. })));
    }
    let missing_bucket =
        S3Store::open(location(&s3, "nobucket", "", Some(("AKIDTEST", secret))), fast_options(), S3Metrics::default())
            .unwrap();
    assert!(matches!(Blocking::new(&missing_bucket).list("", None, 5), Err(StoreError::Permanent { .. })));
}

#[test]
fn an_unreachable_endpoint_fails_as_transient_and_dropping_the_store_answers_everything() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut unreachable = common::s3::location(&started(), "bucket", "", None);
    unreachable.endpoint = format!("http://127.0.0.1:{port}");
    let options = S3Options { attempts_max: 3, ..fast_options() };
    let store = S3Store::open(unreachable.clone(), options, S3Metrics::default()).unwrap();
    assert!(matches!(Blocking::new(&store).get("a", None), Err(StoreError::Transient { .. })));

    // Many operations in flight against a slow server, then the store is
    // dropped: each still gets exactly one completion.
    let s3 = started();
    s3.set_faults(FaultConfig::put_latency_ms(1, 2_000));
    let store = open(&s3, "bucket", "drop");
    let (reply, completions) = crossbeam_channel::unbounded();
    for index in 0..50u64 {
        store.submit(index, put(&format!("d/{index}"), b"x"), &reply);
    }
    // Wait until the server has seen some of them, so that they are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s3.fault_stats().requests.get("PutObject").copied().unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < deadline, "no PutObject reached the server");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(store);
    let ids: HashSet<u64> = completions.try_iter().map(|completion| completion.op_id).collect();
    assert_eq!(ids.len(), 50);
}

#[test]
fn an_answer_before_the_whole_request_was_sent_does_not_poison_the_connection() {
    let config = Config { max_object_bytes: 1024, ..Config::ephemeral() };
    let s3 = FakeS3::start(config).unwrap();
    create_bucket(&s3, "bucket", None);
    let options = S3Options { connections_max: 1, ..fast_options() };
    let store = S3Store::open(location(&s3, "bucket", "early", None), options, S3Metrics::default()).unwrap();
    let blocking = Blocking::new(&store);
    for round in 0..3 {
        let result = blocking.put_if_absent(&format!("big/{round}"), vec![7; 4 * 1024 * 1024]);
        assert!(
            matches!(&result, Err(StoreError::Permanent { message }) if message.contains("EntityTooLarge")),
            "{result:?}"
        );
        blocking.put_if_absent(&format!("small/{round}"), b"ok".to_vec()).unwrap();
        assert_eq!(blocking.get(&format!("small/{round}"), None).unwrap(), b"ok");
    }
}
