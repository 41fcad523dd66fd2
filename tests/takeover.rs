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
use common::{check_chain, read_log_and_orphans_from, start_load, take_over, Stoat, DEADLINE};
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
    let mut threads = start_load(first.addr, "a", 24, true, &stop, &first_count);
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
