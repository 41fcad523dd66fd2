//! Nothing acknowledged is lost and the log never forks: crashes under load
//! (SIGKILL, restart on the same storage) and two leaders on one storage.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{check_chain, read_log, read_log_and_orphans_from, start_load, Client, On503, Stoat, DEADLINE};
use stoat::log::local::{LocalStore, LocalStoreOptions};

fn wait_until(condition: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Several batch writes in flight on local disk, each written as soon as it
/// has a request (none held back for more).
const PIPELINED: &str = "[persist]\nbatch_writes_in_flight = 8\nbatch_min_alongside = 1\n";

#[test]
fn acknowledged_commits_survive_repeated_kill_9_under_load() {
    let data = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<(String, u64)> = Vec::new();
    for round in 0..4 {
        // Every other round with several batch writes in flight, so that a
        // crash leaves batches behind a hole for the next leader to cover.
        let mut stoat = Stoat::start_at(if round % 2 == 0 { PIPELINED } else { "" }, data.path());
        // The restarted server continues where the durable log ends.
        let expected_start = acknowledged.iter().map(|(_, version)| *version).max().unwrap_or(0);
        let version = stoat.connect().get("/v1/version").json()["version"].as_u64().unwrap();
        assert!(
            version >= expected_start,
            "round {round}: log ends at {version}, before acknowledged {expected_start}"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let threads = start_load(stoat.addr, &format!("r{round}"), 6, On503::Stop, &stop, &count);
        wait_until(|| count.load(Ordering::Relaxed) >= 150, "commits to be acknowledged");
        // Crash with commits in flight.
        stoat.crash();
        stop.store(true, Ordering::Relaxed);
        for thread in threads {
            acknowledged.extend(thread.join().unwrap());
        }
    }
    // One more leader, one commit: its first batch covers whatever the last
    // crash left behind a hole.
    let mut stoat = Stoat::start_at("", data.path());
    assert_eq!(stoat.connect().post("/v1/commit", r#"{"operations":[]}"#).status, 200);
    stoat.crash();
    let store = LocalStore::open(data.path().join("log"), LocalStoreOptions::default()).unwrap();
    let (log, _orphans) = read_log_and_orphans_from(&store);
    let logged = check_chain(&log);
    for (request_id, version) in &acknowledged {
        assert_eq!(
            logged.get(request_id),
            Some(version),
            "acknowledged {request_id} at {version} is not in the log there"
        );
    }
    assert!(acknowledged.len() >= 600);
}

#[test]
fn two_leaders_on_one_storage_never_fork_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut first = Stoat::start_at("", data.path());
    let mut second = Stoat::start_at("", data.path());
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut threads = start_load(first.addr, "a", 3, On503::Stop, &stop, &count);
    threads.extend(start_load(second.addr, "b", 3, On503::Stop, &stop, &count));
    // Both are sent commits until one of them has lost leadership.
    let ready = |stoat: &Stoat| stoat.is_ready();
    wait_until(|| !ready(&first) || !ready(&second), "one server to be fenced");
    wait_until(|| count.load(Ordering::Relaxed) >= 200, "commits to be acknowledged by the leader");
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for thread in threads {
        acknowledged.extend(thread.join().unwrap());
    }
    assert!(ready(&first) != ready(&second), "exactly one server must still lead");
    first.crash();
    second.crash();
    let logged = check_chain(&read_log(data.path()));
    let mut acknowledged_at: HashMap<u64, String> = HashMap::new();
    for (request_id, version) in &acknowledged {
        assert_eq!(
            logged.get(request_id),
            Some(version),
            "acknowledged {request_id} at {version} is not in the log there"
        );
        let other = acknowledged_at.insert(*version, request_id.clone());
        assert!(other.is_none(), "version {version} was acknowledged twice: {other:?} and {request_id}");
    }
}

#[test]
fn unreachable_storage_at_start_is_retried_and_not_ready_until_it_works() {
    let data = tempfile::tempdir().unwrap();
    // The log directory cannot be created: a file stands in its place.
    let log_path = data.path().join("log");
    std::fs::write(&log_path, b"not a directory").unwrap();
    let mut stoat = Stoat::start_listening_at("", data.path());
    stoat.wait_for_log("log recovery failed");
    let mut client = stoat.connect();
    assert_eq!(client.get("/healthz").status, 200);
    let ready = client.get("/readyz");
    assert_eq!((ready.status, ready.error_code().as_str()), (503, "unavailable"));
    let commit = client.post("/v1/commit", "{}");
    assert_eq!(commit.status, 503, "{}", commit.text());
    assert!(commit.text().contains("recovering"), "{}", commit.text());
    assert!(commit.header("retry-after").is_some());
    // Once storage works, the server recovers on its own and serves.
    std::fs::remove_file(&log_path).unwrap();
    stoat.wait_for_log("log recovered; serving");
    wait_until(|| Client::connect(stoat.addr).get("/readyz").status == 200, "readiness");
    assert_eq!(client.post("/v1/commit", "{}").status, 200);
}

/// While a batch write is in flight, later requests are held back until
/// `persist.batch_min_alongside` of them are waiting, then written together
/// beside it; a smaller group goes once nothing is in flight any more.
#[test]
fn small_batches_wait_beside_a_write_in_flight_until_enough_gather() {
    let data = tempfile::tempdir().unwrap();
    let config = "[persist]\nbatch_min_alongside = 3\n";
    let stoat = Stoat::start_at_with_env(config, data.path(), &[("STOAT_TEST_PUT_DELAY_MS", "400")]);
    let commit = |id: &str| {
        let body = format!(r#"{{"request_id":"{id}","operations":[{{"type":"write","key":"aw==","value":"dg=="}}]}}"#);
        format!("POST /v1/commit HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    // The leader's first batch is written alone; after it, batches may be
    // written beside others.
    let mut first = stoat.connect();
    first.send(commit("first").as_bytes());
    assert_eq!(first.read_response().status, 200);

    let mut clients: Vec<Client> = (0..5).map(|_| stoat.connect()).collect();
    let started = Instant::now();
    clients[0].send(commit("alone").as_bytes());
    for (index, id) in ["c", "d", "e"].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(50));
        clients[index + 1].send(commit(id).as_bytes());
    }
    // "f" comes once the group of three went out: it is held until every
    // write in flight has landed, then written alone.
    std::thread::sleep(Duration::from_millis(50));
    clients[4].send(commit("f").as_bytes());
    for client in &mut clients {
        assert_eq!(client.read_response().status, 200);
    }
    let elapsed = started.elapsed();
    let log = read_log(data.path());
    let batch_of = |id: &str| {
        log.iter().position(|batch| batch.transactions.iter().any(|(_, request_id)| request_id == id)).unwrap()
    };
    let (alone, c, d, e, f) = (batch_of("alone"), batch_of("c"), batch_of("d"), batch_of("e"), batch_of("f"));
    assert_eq!((c, d), (e, e), "c, d and e share a batch: {log:?}");
    assert!(alone < e && e < f, "{log:?}");
    assert_eq!(log[f].transactions.len(), 1, "{log:?}");
    // alone: 0-400 ms; c, d, e: from about 150 ms (beside it); f: after
    // both landed, about 550-950 ms. Had f waited for more requests, it
    // would still be waiting.
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
}
