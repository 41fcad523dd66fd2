//! Tests of recovery on a local store: the tail state of a long log, holes,
//! crash leftovers and damage; and a persister driven through a failing
//! store, then recovered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::commit::transaction::OperationRef;
use crate::log::chain;
use crate::log::failing::{FailingStore, FaultPlan};
use crate::log::format::{BatchEncoder, EncodedBatch};
use crate::log::local::{LocalStore, LocalStoreOptions};
use crate::log::persister::{Action, Persister, PersisterConfig};

fn unsynced_store(directory: &std::path::Path) -> LocalStore {
    LocalStore::open(directory, LocalStoreOptions { sync: false, ..LocalStoreOptions::default() }).unwrap()
}

/// Versions `first..first + count`, request ids `r{version}`.
fn batch(prev_version: u64, first: u64, count: u64) -> EncodedBatch {
    let mut encoder = BatchEncoder::new("old-leader", prev_version);
    for version in first..first + count {
        let key = version.to_be_bytes();
        encoder.push(
            version,
            &format!("r{version}"),
            1_700_000_000_000,
            [OperationRef::Write { key: &key, value: b"v" }],
        );
    }
    encoder.finish()
}

/// Writes `batches` batches of `per_batch` consecutive versions from 1.
fn write_log(store: &dyn ObjectStore, batches: u64, per_batch: u64) {
    let blocking = Blocking::new(store);
    for index in 0..batches {
        let first = 1 + index * per_batch;
        let encoded = batch(first - 1, first, per_batch);
        blocking.put_if_absent(&batch_name(first), encoded.bytes.to_vec()).unwrap();
    }
}

#[test]
fn an_empty_log_recovers_to_zero() {
    let directory = tempfile::tempdir().unwrap();
    let recovered = recover(&unsynced_store(directory.path()), &RecoveryConfig::default()).unwrap();
    assert_eq!(recovered, RecoveredLog::default());
}

#[test]
fn a_long_log_recovers_its_tail_state_with_any_page_size_and_hint() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    write_log(&store, 120, 5);
    for (page_size, hint) in [(1000, None), (7, None), (1, None), (10, Some(300)), (10, Some(100_000))] {
        let config = RecoveryConfig {
            recent_transactions: 12,
            list_page_size: page_size,
            chain_check_objects: 4,
            start_after_version: hint,
        };
        let recovered = recover(&store, &config).unwrap();
        assert_eq!((recovered.oldest_version, recovered.last_version), (1, 600), "page size {page_size}");
        let tail = recovered.tail.unwrap();
        assert_eq!((tail.first_version, tail.prev_version, tail.leader_id.as_str()), (596, 595, "old-leader"));
        let versions: Vec<u64> = recovered.recent_transactions.iter().map(|t| t.version).collect();
        assert_eq!(versions, (589..=600).collect::<Vec<_>>());
        assert!(recovered.recent_transactions.iter().all(|t| t.request_id == format!("r{}", t.version)));
        assert!(recovered.orphaned_objects.is_empty());
        let listed = if hint == Some(300) { 60 } else { 120 };
        assert_eq!(recovered.objects_listed, listed);
    }
}

#[test]
fn crash_leftovers_and_foreign_names_are_ignored() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    write_log(&store, 3, 2);
    std::fs::write(directory.path().join(".tmp/torn-batch"), b"STOATLOG\x01 torn").unwrap();
    std::fs::write(directory.path().join("log/.00000000000000000099.batch.tmp"), b"torn").unwrap();
    Blocking::new(&store).put_if_absent("log/zz-notes", b"not a batch".to_vec()).unwrap();
    let recovered = recover(&store, &RecoveryConfig::default()).unwrap();
    assert_eq!((recovered.last_version, recovered.objects_listed), (6, 3));
}

#[test]
fn a_corrupt_final_object_is_a_typed_error() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    write_log(&store, 3, 2);
    let path = directory.path().join(batch_name(5));
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let error = recover(&store, &RecoveryConfig::default()).unwrap_err();
    assert!(
        matches!(&error, RecoveryError::Corrupt { name, source: FormatError::ChecksumMismatch { .. } } if *name == batch_name(5)),
        "{error}"
    );
    assert!(!error.is_transient());
    std::fs::write(&path, &bytes[..middle]).unwrap();
    assert!(matches!(recover(&store, &RecoveryConfig::default()), Err(RecoveryError::Corrupt { .. })));
    // A batch that continues from version 6 stored under the name of the
    // batch that continues from 4.
    std::fs::write(&path, batch(6, 7, 1).bytes.to_vec()).unwrap();
    assert!(matches!(
        recover(&store, &RecoveryConfig::default()),
        Err(RecoveryError::Misnamed { prev_version: 6, .. })
    ));
}

#[test]
fn batches_behind_a_hole_or_inside_another_are_orphans() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    let blocking = Blocking::new(&store);
    write_log(&store, 4, 10); // versions 1..=40
                              // A crashed leader's batch 41..=50 never landed; 51..=60 and 61..=70 did.
    blocking.put_if_absent(&batch_name(51), batch(50, 51, 10).bytes.to_vec()).unwrap();
    blocking.put_if_absent(&batch_name(61), batch(60, 61, 10).bytes.to_vec()).unwrap();
    let config = RecoveryConfig { recent_transactions: 3, ..RecoveryConfig::default() };
    let recovered = recover(&store, &config).unwrap();
    assert_eq!(recovered.last_version, 40);
    assert_eq!(recovered.orphaned_objects, [batch_name(51), batch_name(61)]);
    let versions: Vec<u64> = recovered.recent_transactions.iter().map(|t| t.version).collect();
    assert_eq!(versions, [38, 39, 40]);

    // A batch named inside another (continuing from 65, inside 61..=70) is
    // an orphan too, whatever it holds.
    blocking.put_if_absent(&batch_name(66), batch(65, 71, 1).bytes.to_vec()).unwrap();
    let recovered = recover(&store, &config).unwrap();
    assert_eq!(recovered.last_version, 40);
    assert_eq!(recovered.orphaned_objects, [batch_name(51), batch_name(61), batch_name(66)]);
}

/// A log where a new leader (first batch named 41, its versions starting
/// `VERSION_WINDOW` later) beat a fenced leader, whose batches 46..=50 and
/// 51..=60 landed inside it; then the new leader wrote on.
fn log_with_a_fenced_leader(store: &dyn ObjectStore, batches_after: u64) -> u64 {
    let blocking = Blocking::new(store);
    write_log(store, 4, 10); // 1..=40
    let first = chain::first_version_after(40);
    blocking.put_if_absent(&batch_name(41), batch(40, first, 3).bytes.to_vec()).unwrap();
    for (prev, first, count) in [(45, 46, 5), (50, 51, 10)] {
        blocking.put_if_absent(&batch_name(prev + 1), batch(prev, first, count).bytes.to_vec()).unwrap();
    }
    let mut last = first + 2;
    for _ in 0..batches_after {
        blocking.put_if_absent(&batch_name(last + 1), batch(last, last + 1, 2).bytes.to_vec()).unwrap();
        last += 2;
    }
    last
}

#[test]
fn a_fenced_leaders_batches_inside_the_winners_are_orphans() {
    for batches_after in [0, 1, 3, 40] {
        let directory = tempfile::tempdir().unwrap();
        let store = unsynced_store(directory.path());
        let last = log_with_a_fenced_leader(&store, batches_after);
        // Enough request ids to need every batch: none from the orphans.
        let config = RecoveryConfig { recent_transactions: 1000, ..RecoveryConfig::default() };
        let recovered = recover(&store, &config).unwrap();
        assert_eq!(recovered.last_version, last, "{batches_after} batches after");
        let first = chain::first_version_after(40);
        let expected: Vec<u64> = (1..=40).chain(first..=last).collect();
        let versions: Vec<u64> = recovered.recent_transactions.iter().map(|t| t.version).collect();
        assert_eq!(versions, expected, "{batches_after} batches after");
        if batches_after <= 3 {
            // Within the window of headers read: found and reported.
            assert_eq!(recovered.orphaned_objects, [batch_name(46), batch_name(51)]);
        }
        assert_eq!(recovered.objects_listed as u64, 4 + 3 + batches_after);
    }
}

#[test]
fn a_crashed_leaders_batches_behind_a_hole_after_a_fenced_leaders_orphans() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    let last = log_with_a_fenced_leader(&store, 2);
    // The new leader crashed: its batch after `last` never landed, two later
    // ones did.
    let blocking = Blocking::new(&store);
    blocking.put_if_absent(&batch_name(last + 11), batch(last + 10, last + 11, 5).bytes.to_vec()).unwrap();
    blocking.put_if_absent(&batch_name(last + 16), batch(last + 15, last + 16, 5).bytes.to_vec()).unwrap();
    let recovered = recover(&store, &RecoveryConfig::default()).unwrap();
    assert_eq!(recovered.last_version, last);
    assert_eq!(
        recovered.orphaned_objects,
        [batch_name(46), batch_name(51), batch_name(last + 11), batch_name(last + 16)]
    );
}

#[test]
fn storage_failures_during_recovery_are_transient_errors() {
    let directory = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(unsynced_store(directory.path()));
    write_log(local.as_ref(), 5, 3);
    let failing = FailingStore::new(local, FaultPlan { fail_after_ops: Some(2), ..FaultPlan::default() });
    let error = recover(&failing, &RecoveryConfig::default()).unwrap_err();
    assert!(error.is_transient(), "{error}");
    failing.set_plan(FaultPlan::default());
    assert_eq!(recover(&failing, &RecoveryConfig::default()).unwrap().last_version, 15);
}

/// A stage-2 loop as the pipeline will run it: batches in, store
/// completions back, durable versions out; then recovery must find at least
/// every version reported durable.
#[test]
fn a_persister_driven_through_a_failing_store_then_recovered() {
    let directory = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(unsynced_store(directory.path()));
    let plan = FaultPlan { seed: 11, fail_before_ppm: 200_000, lose_reply_ppm: 200_000, ..FaultPlan::default() };
    let store = FailingStore::new(Arc::clone(&local), plan);
    let config = PersisterConfig {
        max_in_flight: 4,
        backoff_initial_ms: 1,
        backoff_max_ms: 4,
        jitter_seed: 3,
        ..PersisterConfig::default()
    };
    let mut persister = Persister::new(config, 0);
    let (reply, completions) = crossbeam_channel::unbounded();
    let started = Instant::now();
    let now_ms = || started.elapsed().as_millis() as u64;
    let (mut next_version, mut durable_version) = (1u64, 0u64);
    while durable_version < 200 {
        assert!(started.elapsed() < Duration::from_secs(20), "no progress");
        while persister.can_accept() && next_version <= 200 {
            persister.batch_ready(batch(next_version - 1, next_version, 10)).unwrap();
            next_version += 10;
        }
        while let Some(action) = persister.next_action() {
            match action {
                Action::Submit { op_id, op } => store.submit(op_id, op, &reply),
                Action::DurableAdvanced { durable_version: version, .. } => durable_version = version,
                Action::RetryAt { .. } => {}
                other => panic!("{other:?}"),
            }
        }
        let wait = persister
            .next_retry_at_ms()
            .map_or(Duration::from_millis(100), |at_ms| Duration::from_millis(at_ms.saturating_sub(now_ms())));
        if let Ok(completion) = completions.recv_timeout(wait) {
            persister.completed(completion, now_ms());
        }
        persister.tick(now_ms());
    }
    let recovered =
        recover(local.as_ref(), &RecoveryConfig { recent_transactions: 5, ..RecoveryConfig::default() }).unwrap();
    assert_eq!(recovered.last_version, 200);
    assert_eq!(recovered.recent_transactions.last().map(|t| t.request_id.as_str()), Some("r200"));
    assert!(recovered.orphaned_objects.is_empty());
}

#[test]
fn a_batch_is_named_by_the_version_it_continues_from_even_after_a_gap() {
    let directory = tempfile::tempdir().unwrap();
    let store = unsynced_store(directory.path());
    let blocking = Blocking::new(&store);
    write_log(&store, 1, 10); // versions 1..=10
                              // Versions 11 and 12 went to transactions that did not commit: the next
                              // batch continues from 10 and is named 11, though it starts at 13.
    blocking.put_if_absent(&batch_name(11), batch(10, 13, 2).bytes.to_vec()).unwrap();
    let recovered = recover(&store, &RecoveryConfig::default()).unwrap();
    assert_eq!(recovered.last_version, 14);
    assert!(recovered.orphaned_objects.is_empty());
    let tail = recovered.tail.unwrap();
    assert_eq!((tail.name.as_str(), tail.first_version, tail.prev_version), (batch_name(11).as_str(), 13, 10));
}
