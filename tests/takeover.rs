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
/// writes in flight on local disk too.
const CONFIG: &str = "[commit]\nrequest_index_capacity = 10\n[persist]\nbatch_writes_in_flight = 8\n";

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
/// from; it takes over again instead of staying fenced with no leader left,
/// and nothing of the lost attempt reaches a client as committed.
#[test]
fn a_first_batch_lost_to_the_previous_leaders_late_write_takes_over_again() {
    use stoat::commit::transaction::OperationRef;
    use stoat::log::format::BatchEncoder;
    use stoat::log::names::batch_name;
    use stoat::log::store::Blocking;

    let data = tempfile::tempdir().unwrap();
    let mut previous = Stoat::start_at("", data.path());
    let mut client = previous.connect();
    for id in ["p-1", "p-2"] {
        let body = format!(r#"{{"request_id":"{id}","operations":[{{"type":"write","key":"aw==","value":"dg=="}}]}}"#);
        assert_eq!(client.post("/v1/commit", &body).status, 200);
    }
    let version = client.get("/v1/version").json();
    let (tail, previous_leader) =
        (version["version"].as_u64().unwrap(), version["leader_id"].as_str().unwrap().to_owned());
    drop(client);
    previous.crash();

    let mut leader = Stoat::start_at("", data.path());
    // The previous leader's write of the batch after `tail`, landing only now.
    let mut late = BatchEncoder::new(&previous_leader, tail);
    late.push(tail + 1, "late-1", 0, [OperationRef::Write { key: b"k", value: b"late" }]);
    let store = LocalStore::open(data.path().join("log"), LocalStoreOptions::default()).unwrap();
    Blocking::new(&store).put_if_absent(&batch_name(tail + 1), late.finish().bytes.to_vec()).unwrap();

    let mut eager = Stream::subscribe(leader.addr, &format!("after={tail}&durable=false"));
    let mut patient = Stream::subscribe(leader.addr, &format!("after={tail}"));
    let mut client = leader.connect();
    let commit = |client: &mut common::Client, id: &str| {
        let body = format!(r#"{{"request_id":"{id}","operations":[{{"type":"write","key":"aw==","value":"bmV3"}}]}}"#);
        client.post("/v1/commit", &body)
    };
    let lost = commit(&mut client, "lost-1");
    assert_eq!((lost.status, lost.error_code().as_str()), (503, "unavailable"), "{}", lost.text());
    leader.wait_for_log("taking over again");
    wait_for("the new takeover", || leader.is_ready());
    let committed = commit(&mut client, "new-1");
    assert_eq!(committed.status, 200, "{}", committed.text());
    let new_version = committed.json()["version"].as_u64().unwrap();
    assert!(new_version > tail + 1 + stoat::log::chain::VERSION_WINDOW, "{new_version}");

    // The log continues the previous leader's late batch; the lost attempt
    // is nowhere.
    let (log, orphans) = read_log_and_orphans_from(&store);
    assert!(orphans.is_empty(), "{:?}", orphans.iter().map(|batch| &batch.name).collect::<Vec<_>>());
    let logged = check_chain(&log);
    assert_eq!(logged.get("late-1"), Some(&(tail + 1)));
    assert_eq!(logged.get("new-1"), Some(&new_version));
    assert!(!logged.contains_key("lost-1"));
    let status = client.get("/v1/status?request_id=lost-1").json();
    assert_eq!(status["status"], "not_committed", "{status}");
    let status = client.get("/v1/status?request_id=late-1").json();
    assert_eq!((status["status"].as_str(), status["version"].as_u64()), (Some("committed"), Some(tail + 1)));
    // Both streams, the one that sees commits before they are durable too,
    // go from the late batch to the new commit: the lost one never showed.
    for stream in [&mut eager, &mut patient] {
        let first = stream.next_transaction();
        assert_eq!((first["request_id"].as_str(), first["prev_version"].as_u64()), (Some("late-1"), Some(tail)));
        let second = stream.next_transaction();
        assert_eq!((second["request_id"].as_str(), second["prev_version"].as_u64()), (Some("new-1"), Some(tail + 1)));
    }
    leader.crash();
}
