//! Tests of the sequencer core: decisions and versions for given requests
//! and a given clock.

use super::*;
use crate::commit::parse::parse_commit;
use crate::config::LimitsConfig;

const CONFIG: SequencerConfig =
    SequencerConfig { conflict_window_ms: 5000, conflict_window_versions: 1_000_000, request_index_capacity: 1000 };

fn commit(json: &str) -> CommitRequest {
    let mut request = CommitRequest::default();
    let arena = bumpalo::Bump::new();
    let mut buffers = crate::commit::parse::JsonScratch::default();
    parse_commit(json.as_bytes(), &arena, &mut buffers, &LimitsConfig::default(), &mut request).unwrap();
    request
}

/// A commit with id `id` that reads `reads` (base64 keys) at `read_version`
/// and writes `writes`.
fn rmw(id: &str, read_version: u64, reads: &[&str], writes: &[&str]) -> CommitRequest {
    let preconditions: Vec<String> =
        reads.iter().map(|key| format!(r#"{{"type":"point_read","key":"{key}"}}"#)).collect();
    let operations: Vec<String> =
        writes.iter().map(|key| format!(r#"{{"type":"write","key":"{key}","value":"dg=="}}"#)).collect();
    commit(&format!(
        r#"{{"request_id":"{id}","read_version":{read_version},"preconditions":[{}],"operations":[{}]}}"#,
        preconditions.join(","),
        operations.join(",")
    ))
}

fn sequencer(config: SequencerConfig) -> Sequencer {
    Sequencer::new(config, "leader-a".into(), Recovered::default())
}

fn decide_commits(sequencer: &mut Sequencer, now_ms: u64, requests: &[&CommitRequest]) -> Vec<Decision> {
    let inputs: Vec<Input<'_>> = requests.iter().map(|request| Input::Commit(request)).collect();
    sequencer.decide(now_ms, 0, &inputs)
}

const K: &str = "aw=="; // "k"
const J: &str = "ag=="; // "j"

#[test]
fn blind_writes_commit_at_increasing_versions() {
    let mut sequencer = sequencer(CONFIG);
    let (a, b) = (rmw("a", 0, &[], &[K]), rmw("b", 0, &[], &[K]));
    assert_eq!(
        decide_commits(&mut sequencer, 0, &[&a, &b]),
        vec![Decision::Committed { version: 1 }, Decision::Committed { version: 2 }]
    );
    let c = rmw("c", 0, &[], &[J]);
    assert_eq!(decide_commits(&mut sequencer, 0, &[&c]), vec![Decision::Committed { version: 3 }]);
    assert_eq!(sequencer.committed_version(), 3);
}

#[test]
fn a_commit_conflicts_with_an_earlier_commit_of_the_same_batch() {
    let mut sequencer = sequencer(CONFIG);
    let writer = rmw("w", 0, &[], &[K]);
    let reader = rmw("r", 0, &[J, K], &[J]);
    assert_eq!(
        decide_commits(&mut sequencer, 0, &[&writer, &reader]),
        vec![
            Decision::Committed { version: 1 },
            Decision::NotCommitted { reason: NotCommittedReason::Conflict, conflicts: vec![1], version: 1 },
        ]
    );
    // The conflicting commit's write was not added: a read of j at 0 holds.
    let later = rmw("l", 0, &[J], &[]);
    assert_eq!(decide_commits(&mut sequencer, 0, &[&later]), vec![Decision::Committed { version: 3 }]);
}

#[test]
fn a_read_conflicts_only_with_writes_after_its_version() {
    let mut sequencer = sequencer(CONFIG);
    decide_commits(&mut sequencer, 0, &[&rmw("w", 0, &[], &[K])]);
    let stale = rmw("stale", 0, &[K], &[K]);
    let fresh = rmw("fresh", 1, &[K], &[K]);
    assert_eq!(
        decide_commits(&mut sequencer, 0, &[&stale, &fresh]),
        vec![
            Decision::NotCommitted { reason: NotCommittedReason::Conflict, conflicts: vec![0], version: 3 },
            Decision::Committed { version: 3 },
        ]
    );
}

#[test]
fn reads_older_than_both_windows_are_too_old() {
    let config = SequencerConfig { conflict_window_ms: 1000, conflict_window_versions: 2, ..CONFIG };
    let mut sequencer = sequencer(config);
    for (index, now_ms) in [0u64, 10, 20, 30].iter().enumerate() {
        decide_commits(&mut sequencer, *now_ms, &[&rmw(&format!("w{index}"), 0, &[], &[J])]);
    }
    // Within 1 s every version is still checked.
    let early = rmw("early", 0, &[K], &[]);
    assert_eq!(decide_commits(&mut sequencer, 900, &[&early]), vec![Decision::Committed { version: 5 }]);
    // Two seconds later only the last two versions (4 and 5) are checked.
    let old = rmw("old", 2, &[K], &[]);
    let recent = rmw("recent", 4, &[K], &[]);
    assert_eq!(
        decide_commits(&mut sequencer, 3000, &[&old, &recent]),
        vec![
            Decision::NotCommitted { reason: NotCommittedReason::TooOld, conflicts: vec![], version: 7 },
            Decision::Committed { version: 7 },
        ]
    );
}

#[test]
fn a_wrong_leader_id_is_leader_changed() {
    let mut sequencer = sequencer(CONFIG);
    let wrong = commit(r#"{"leader_id":"leader-b","operations":[{"type":"write","key":"aw==","value":"dg=="}]}"#);
    let right = commit(r#"{"leader_id":"leader-a","operations":[{"type":"write","key":"aw==","value":"dg=="}]}"#);
    assert_eq!(
        decide_commits(&mut sequencer, 0, &[&wrong, &right]),
        vec![
            Decision::NotCommitted { reason: NotCommittedReason::LeaderChanged, conflicts: vec![], version: 0 },
            Decision::Committed { version: 1 },
        ]
    );
}

#[test]
fn duplicates_get_the_original_version_in_later_and_in_the_same_batch() {
    let mut sequencer = sequencer(CONFIG);
    let first = rmw("same", 0, &[], &[K]);
    let again = rmw("same", 0, &[], &[K]);
    assert_eq!(
        decide_commits(&mut sequencer, 0, &[&first, &again]),
        vec![Decision::Committed { version: 1 }, Decision::Duplicate { version: 1 }]
    );
    assert_eq!(decide_commits(&mut sequencer, 0, &[&again]), vec![Decision::Duplicate { version: 1 }]);
}

#[test]
fn an_id_whose_first_attempt_conflicted_can_commit_later() {
    let mut sequencer = sequencer(CONFIG);
    decide_commits(&mut sequencer, 0, &[&rmw("w", 0, &[], &[K])]);
    let attempt = rmw("retry", 0, &[K], &[K]);
    let retry = rmw("retry", 1, &[K], &[K]);
    let decisions = decide_commits(&mut sequencer, 0, &[&attempt, &retry]);
    assert!(matches!(decisions[0], Decision::NotCommitted { reason: NotCommittedReason::Conflict, .. }));
    assert_eq!(decisions[1], Decision::Committed { version: 3 });
}

#[test]
fn versions_from_the_future_are_bad_requests() {
    let mut sequencer = sequencer(CONFIG);
    let future = commit(r#"{"read_version":1}"#);
    let precondition = commit(r#"{"read_version":0,"preconditions":[{"type":"point_read","key":"aw==","version":9}]}"#);
    let decisions = decide_commits(&mut sequencer, 0, &[&future, &precondition]);
    assert_eq!(
        decisions,
        vec![
            Decision::BadRequest("read_version: 1 is newer than the newest committed version 0".into()),
            Decision::BadRequest("preconditions[0].version: 9 is newer than the newest committed version 0".into()),
        ]
    );
}

#[test]
fn status_is_ordered_after_earlier_commits_of_the_same_batch() {
    let mut sequencer = sequencer(CONFIG);
    let write = rmw("id-1", 0, &[], &[K]);
    let inputs = [
        Input::Status { request_id: "id-1", min_version: None },
        Input::Commit(&write),
        Input::Status { request_id: "id-1", min_version: None },
        Input::Status { request_id: "id-1", min_version: Some(1) },
        Input::Status { request_id: "other", min_version: None },
    ];
    assert_eq!(
        sequencer.decide(0, 0, &inputs),
        vec![
            Decision::StatusNotCommitted { version: 0 },
            Decision::Committed { version: 1 },
            Decision::StatusCommitted { version: 1 },
            Decision::StatusCommitted { version: 1 },
            Decision::StatusNotCommitted { version: 1 },
        ]
    );
}

#[test]
fn status_checks_min_version_against_the_retained_log() {
    let mut sequencer = sequencer(CONFIG);
    decide_commits(&mut sequencer, 0, &[&rmw("a", 0, &[], &[K]), &rmw("b", 0, &[], &[K])]);
    let ask = |min_version| [Input::Status { request_id: "a", min_version }];
    assert_eq!(sequencer.decide(0, 2, &ask(Some(1))), vec![Decision::VersionTooOld { oldest_version: 2 }]);
    // Version `oldest` itself is deleted: it may hold the id.
    assert_eq!(sequencer.decide(0, 1, &ask(Some(1))), vec![Decision::VersionTooOld { oldest_version: 1 }]);
    assert_eq!(sequencer.decide(0, 1, &ask(Some(2))), vec![Decision::StatusNotCommitted { version: 2 }]);
    assert_eq!(
        sequencer.decide(0, 1, &ask(None)),
        vec![Decision::StatusNotCommitted { version: 2 }],
        "defaults after it"
    );
    assert_eq!(sequencer.decide(0, 0, &ask(Some(2))), vec![Decision::StatusNotCommitted { version: 2 }]);
    assert!(matches!(sequencer.decide(0, 0, &ask(Some(3)))[0], Decision::BadRequest(_)));
}

#[test]
fn forgotten_request_ids_send_status_to_the_log() {
    let config = SequencerConfig { request_index_capacity: 2, ..CONFIG };
    let mut sequencer = sequencer(config);
    for id in ["a", "b", "c"] {
        decide_commits(&mut sequencer, 0, &[&rmw(id, 0, &[], &[K])]);
    }
    let status = |id| [Input::Status { request_id: id, min_version: None }];
    // "a" (version 1) was forgotten: versions before 2 must be searched.
    assert_eq!(
        sequencer.decide(0, 0, &status("a")),
        vec![Decision::StatusSearchLog { min_version: 0, below: 2, version: 3 }]
    );
    assert_eq!(sequencer.decide(0, 0, &status("c")), vec![Decision::StatusCommitted { version: 3 }]);
    // A forgotten id can no longer be recognised as a duplicate here; the
    // index says so through the status answer above.
}

#[test]
fn recovery_restores_versions_ids_and_the_conflict_horizon() {
    // A new leader skips ahead of anything an old one may still write.
    let first = crate::log::chain::first_version_after(100);
    let recovered = Recovered {
        committed_version: 100,
        recent_request_ids: vec![("old".into(), 99), ("last".into(), 100)],
        request_ids_from_version: 90,
        last_timestamp_ms: 5,
        first_version: first,
    };
    let mut sequencer = Sequencer::new(CONFIG, "leader-b".into(), recovered);
    let duplicate = rmw("last", 100, &[], &[K]);
    let unknown_past = rmw("new", 99, &[K], &[K]);
    let current = rmw("new2", 100, &[K], &[K]);
    assert_eq!(
        decide_commits(&mut sequencer, 1, &[&duplicate, &unknown_past, &current]),
        vec![
            Decision::Duplicate { version: 100 },
            Decision::NotCommitted { reason: NotCommittedReason::TooOld, conflicts: vec![], version: first + 1 },
            Decision::Committed { version: first + 1 },
        ]
    );
    assert_eq!(sequencer.last_timestamp_ms(), 5, "timestamps never go backwards");
    // The skipped versions do not push the version side of the conflict
    // window past the recovered version: a read at 100 is still checked.
    let stale = rmw("stale", 100, &[K], &[K]);
    let fresh = rmw("fresh", 100, &["b3RoZXI="], &["b3RoZXI="]);
    assert_eq!(
        decide_commits(&mut sequencer, 1_000_000, &[&stale, &fresh]),
        vec![
            Decision::NotCommitted { reason: NotCommittedReason::Conflict, conflicts: vec![0], version: first + 3 },
            Decision::Committed { version: first + 3 },
        ]
    );
}

#[test]
fn the_request_index_keeps_exactly_the_newest_ids_through_long_churn() {
    // Ten times the capacity: the table clears out its tombstones along the
    // way, moving entries by their stored hashes.
    let mut index = RequestIndex::new(1000, 0);
    for version in 1..=10_000u64 {
        index.insert(&format!("id-{version}"), version);
    }
    assert_eq!(index.covers_from_version(), 9_001);
    for version in 1..=10_000u64 {
        let expected = (version > 9_000).then_some(version);
        assert_eq!(index.get(&format!("id-{version}")), expected, "id-{version}");
    }
    assert_eq!(index.versions.len(), 1000);
}

#[test]
fn forgetting_an_id_leaves_a_newer_entry_for_the_same_id() {
    let mut index = RequestIndex::new(2, 0);
    index.insert("a", 1);
    index.insert("a", 2);
    // The queue's first "a" (version 1) goes; the entry it names was
    // replaced by version 2, which stays.
    index.insert("b", 3);
    assert_eq!((index.get("a"), index.get("b")), (Some(2), Some(3)));
    assert_eq!(index.covers_from_version(), 2);
    index.insert("c", 4);
    assert_eq!((index.get("a"), index.get("b"), index.get("c")), (None, Some(3), Some(4)));
}

#[test]
fn the_request_index_keeps_short_and_long_ids_apart() {
    // In place up to INLINE_ID_BYTES, boxed beyond; ids that share a prefix
    // or differ only in length are different ids.
    let lengths = [1, INLINE_ID_BYTES - 1, INLINE_ID_BYTES, INLINE_ID_BYTES + 1, 128];
    let mut index = RequestIndex::new(100, 0);
    for (version, &length) in (1..).zip(&lengths) {
        index.insert(&"x".repeat(length), version);
    }
    for (version, &length) in (1..).zip(&lengths) {
        assert_eq!(index.get(&"x".repeat(length)), Some(version), "length {length}");
    }
    assert_eq!(index.get(&"x".repeat(2)), None);
    assert_eq!(index.get(&format!("{}y", "x".repeat(INLINE_ID_BYTES))), None);
    // Given again, an id answers its newest version.
    index.insert(&"x".repeat(128), 10);
    assert_eq!(index.get(&"x".repeat(128)), Some(10));
}

#[test]
fn a_remembered_id_takes_64_bytes() {
    // What config.toml's request_index_capacity comment counts on: 64 bytes
    // per remembered id, plus two table slots of 17 bytes (rounded up to a
    // power of two: 100,000 ids take 6.4 MB and 262,144 slots 4.5 MB).
    assert_eq!(std::mem::size_of::<Remembered>(), 64);
}
