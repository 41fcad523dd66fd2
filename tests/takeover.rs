//! A second leader taking over the log of a live one that keeps several
//! batch writes in flight: the first leader's writes that land after it
//! lost are orphans inside the new leader's first batch, never part of the
//! log; nothing acknowledged is lost; subscribers, status lookups and
//! recovery skip the orphans (see `stoat::log::chain`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sse::Stream;
use common::{check_chain, read_log_and_orphans_from, start_load, take_over, On503, Stoat, DEADLINE};
use stoat::log::local::{LocalStore, LocalStoreOptions};

/// Few request ids in memory, so status lookups read the log; several batch
/// writes in flight on local disk too, each written as soon as it has a
/// request (none held back for more).
const CONFIG: &str =
    "[commit]\nrequest_index_capacity = 10\n[persist]\nbatch_writes_in_flight = 8\nbatch_min_alongside = 1\n";

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_fenced_leaders_late_batches_stay_out_of_the_log() {
    let data = tempfile::tempdir().unwrap();
    // Slow puts: the first leader has several batches in flight at any time.
    let mut first = Stoat::start_at_with_env(CONFIG, data.path(), &[("STOAT_TEST_PUT_DELAY_MS", "300")]);
    let stop = Arc::new(AtomicBool::new(false));
    let (first_count, second_count) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut threads = start_load(first.addr, "a", 24, On503::Stop, &stop, &first_count);
    wait_for("commits on the first leader", || first_count.load(Ordering::Relaxed) >= 100);

    // The new leader's first batch races the old leader's writes in flight.
    let mut second =
        take_over(&first, 4, 10, || Stoat::start_at(CONFIG, data.path()), &stop, &second_count, &mut threads);
    wait_for("commits on the second leader", || second_count.load(Ordering::Relaxed) >= 200);
    // The first leader's delayed writes land by now.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<(String, u64)> = threads.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    first.crash();

    let store = LocalStore::open(data.path().join("log"), LocalStoreOptions::default()).unwrap();
    let (log, orphans) = read_log_and_orphans_from(&store);
    assert!(!orphans.is_empty(), "the first leader had batches in flight when it lost: some must have landed");
    let logged = check_chain(&log);
    for (request_id, version) in &acknowledged {
        assert_eq!(logged.get(request_id), Some(version), "acknowledged {request_id} at {version}");
    }
    // Each orphan lies strictly inside the second leader's first batch.
    let container = log.iter().rev().find(|batch| batch.prev_version < orphans[0].prev_version).unwrap();
    assert_ne!(container.leader_id, orphans[0].leader_id, "the winner's batch holds the loser's orphans");
    for orphan in &orphans {
        assert!(container.prev_version < orphan.prev_version && orphan.last_version < container.last_version);
        for (version, request_id) in &orphan.transactions {
            assert!(!logged.contains_key(request_id), "{request_id} at {version} is in an orphan and in the log");
        }
    }

    // The second leader reads around the orphans, which are still there.
    let orphaned_id = &orphans[0].transactions[0].1;
    let (acknowledged_id, acknowledged_version) = &acknowledged[0];
    let mut client = second.connect();
    let status = client.get(&format!("/v1/status?request_id={orphaned_id}&min_version=1")).json();
    assert_eq!(status["status"], "not_committed", "{status}");
    let status = client.get(&format!("/v1/status?request_id={acknowledged_id}&min_version=1")).json();
    assert_eq!(
        (status["status"].as_str(), status["version"].as_u64()),
        (Some("committed"), Some(*acknowledged_version))
    );
    let every_version: Vec<u64> = log.iter().flat_map(|batch| batch.transactions.iter().map(|t| t.0)).collect();
    let mut stream = Stream::subscribe(second.addr, "after=0");
    for expected in &every_version {
        assert_eq!(stream.next_transaction()["version"].as_u64(), Some(*expected));
    }
    // From a version inside the new leader's first batch (where the orphans
    // are named): the rest of that batch, never an orphan's transaction.
    let mut stream = Stream::subscribe(second.addr, &format!("after={}", orphans[0].prev_version));
    let first_of_container = container.transactions[0].0;
    assert_eq!(stream.next_transaction()["version"].as_u64(), Some(first_of_container));
    second.crash();

    // A third leader recovers the same log around them.
    let mut third = Stoat::start_at(CONFIG, data.path());
    let recovered = third.wait_for_log("log recovered; serving");
    assert!(recovered.contains(&format!("last_version={}", log.last().unwrap().last_version)), "{recovered}");
    third.crash();
    let (log_after, _) = read_log_and_orphans_from(&store);
    assert_eq!(log_after.len(), log.len());
}

/// A leader killed with a write in flight can have it land after the next
/// leader read the log (S3 completes a request it has fully received). The
/// new leader's first batch then loses its name to the leader it took over
/// from; it takes over again instead of staying fenced with no leader left
/// (twice here), and nothing of a lost attempt reaches a client as
/// committed: not the commit, not a status answer or a duplicate's answer
/// decided meanwhile, not an event on a stream.
#[test]
fn a_first_batch_lost_to_the_previous_leaders_late_write_takes_over_again() {
    use stoat::commit::transaction::OperationRef;
    use stoat::log::format::BatchEncoder;
    use stoat::log::names::batch_name;
    use stoat::log::store::Blocking;

    let commit_request = |id: &str| {
        let body = format!(r#"{{"request_id":"{id}","operations":[{{"type":"write","key":"aw==","value":"dg=="}}]}}"#);
        format!("POST /v1/commit HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
    };
    let data = tempfile::tempdir().unwrap();
    let mut previous = Stoat::start_at("", data.path());
    let mut client = previous.connect();
    for id in ["p-1", "p-2"] {
        client.send(commit_request(id).as_bytes());
        assert_eq!(client.read_response().status, 200);
    }
    let version = client.get("/v1/version").json();
    let (tail, previous_leader) =
        (version["version"].as_u64().unwrap(), version["leader_id"].as_str().unwrap().to_owned());
    drop(client);
    previous.crash();

    // Batch writes take 300 ms, and a batch of one is written beside them:
    // lookups are decided while the first is in flight.
    let config = "[persist]\nbatch_min_alongside = 1\n";
    let mut leader = Stoat::start_at_with_env(config, data.path(), &[("STOAT_TEST_PUT_DELAY_MS", "300")]);
    let store = LocalStore::open(data.path().join("log"), LocalStoreOptions::default()).unwrap();
    // The previous leader's write of the batch after `prev`, landing only now.
    let land_late = |prev: u64, id: &str| {
        let mut late = BatchEncoder::new(&previous_leader, prev);
        late.push(prev + 1, id, 0, [OperationRef::Write { key: b"k", value: b"late" }]);
        Blocking::new(&store).put_if_absent(&batch_name(prev + 1), late.finish().bytes.to_vec()).unwrap();
    };
    land_late(tail, "late-1");
    let mut eager = Stream::subscribe(leader.addr, &format!("after={tail}&durable=false"));
    let mut patient = Stream::subscribe(leader.addr, &format!("after={tail}"));

    let mut client = leader.connect();
    client.send(commit_request("lost-1").as_bytes());
    std::thread::sleep(Duration::from_millis(100));
    let mut lookup = leader.connect();
    lookup.send(b"GET /v1/status?request_id=lost-1 HTTP/1.1\r\n\r\n");
    let mut duplicate = leader.connect();
    duplicate.send(commit_request("lost-1").as_bytes());
    for (what, connection) in [("commit", &mut client), ("status", &mut lookup), ("duplicate", &mut duplicate)] {
        let response = connection.read_response();
        assert_eq!(
            (response.status, response.error_code().as_str()),
            (503, "unavailable"),
            "{what}: {}",
            response.text()
        );
        // Decided in the lost term (not refused as "recovering" after it).
        assert!(response.text().contains("taking over the log again"), "{what}: {}", response.text());
    }
    leader.wait_for_log("taking over again");
    leader.wait_for_log("term=1");
    wait_for("the second takeover", || leader.is_ready());

    // Another late write lands after the second reading of the log.
    land_late(tail + 1, "late-2");
    client.send(commit_request("lost-2").as_bytes());
    assert_eq!(client.read_response().status, 503);
    leader.wait_for_log("term=2");
    wait_for("the third takeover", || leader.is_ready());
    client.send(commit_request("new-1").as_bytes());
    let committed = client.read_response();
    assert_eq!(committed.status, 200, "{}", committed.text());
    let new_version = committed.json()["version"].as_u64().unwrap();
    assert!(new_version > tail + 2 + stoat::log::chain::VERSION_WINDOW, "{new_version}");

    // The log continues the previous leader's late batches; the lost
    // attempts are nowhere.
    let (log, orphans) = read_log_and_orphans_from(&store);
    assert!(orphans.is_empty(), "{:?}", orphans.iter().map(|batch| &batch.name).collect::<Vec<_>>());
    let logged = check_chain(&log);
    assert_eq!((logged.get("late-1"), logged.get("late-2")), (Some(&(tail + 1)), Some(&(tail + 2))));
    assert_eq!(logged.get("new-1"), Some(&new_version));
    assert!(!logged.contains_key("lost-1") && !logged.contains_key("lost-2"));
    for id in ["lost-1", "lost-2"] {
        let status = client.get(&format!("/v1/status?request_id={id}")).json();
        assert_eq!(status["status"], "not_committed", "{status}");
    }
    let status = client.get("/v1/status?request_id=late-2").json();
    assert_eq!((status["status"].as_str(), status["version"].as_u64()), (Some("committed"), Some(tail + 2)));
    // Both streams, the one that sees commits before they are durable too,
    // go from the late batches to the new commit: the lost ones never showed.
    for stream in [&mut eager, &mut patient] {
        let mut previous_version = tail;
        for id in ["late-1", "late-2", "new-1"] {
            let event = stream.next_transaction();
            assert_eq!(
                (event["request_id"].as_str(), event["prev_version"].as_u64()),
                (Some(id), Some(previous_version))
            );
            previous_version = event["version"].as_u64().unwrap();
        }
    }
    leader.crash();
}
