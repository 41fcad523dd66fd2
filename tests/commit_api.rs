//! `/v1/commit`, `/v1/version` and `/v1/status` through the real binary:
//! every answer of the API contract, and no lost update under concurrency.

mod common;

use std::time::Instant;

use common::{Client, Stoat, DEADLINE};
use serde_json::{json, Value};

const KEY: &str = "Y291bnRlcg=="; // "counter"

fn commit(client: &mut Client, body: Value) -> common::Response {
    client.post("/v1/commit", &body.to_string())
}

fn write(key: &str) -> Value {
    json!({"type": "write", "key": key, "value": "dg=="})
}

#[test]
fn a_commit_is_answered_committed_with_its_version_ids_and_leader() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let leader_id = client.get("/v1/version").json()["leader_id"].as_str().unwrap().to_string();
    let response = commit(&mut client, json!({"request_id": "first", "operations": [write(KEY)]}));
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"status": "committed", "version": 1, "request_id": "first", "leader_id": leader_id})
    );
    let version = client.get("/v1/version").json();
    assert_eq!(version, json!({"version": 1, "leader_id": leader_id}));
    // A commit without a request_id gets a generated one.
    let response = commit(&mut client, json!({}));
    assert_eq!(response.json()["version"], 2);
    assert_eq!(response.json()["request_id"].as_str().unwrap().len(), 36);
}

#[test]
fn a_repeated_request_id_is_not_applied_again() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let body = json!({"request_id": "once", "operations": [write(KEY)]});
    assert_eq!(commit(&mut client, body.clone()).json()["version"], 1);
    commit(&mut client, json!({"operations": [write(KEY)]}));
    let again = commit(&mut client, body);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["version"], 1);
    assert_eq!(again.json()["duplicate"], true);
}

#[test]
fn a_conflict_is_409_with_the_failed_preconditions_and_a_version_to_retry_from() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    commit(&mut client, json!({"operations": [write(KEY)]}));
    let response = commit(
        &mut client,
        json!({"request_id": "late", "read_version": 0, "preconditions": [
            {"type": "range_read", "begin": "YQ==", "end": "Yg=="},
            {"type": "point_read", "key": KEY},
        ], "operations": [write("eA==")]}),
    );
    assert_eq!(response.status, 409, "{}", response.text());
    let body = response.json();
    assert_eq!(body["status"], "not_committed");
    assert_eq!(body["reason"], "conflict");
    assert_eq!(body["conflicts"], json!([1]));
    assert_eq!(body["version"], 1);
    assert_eq!(body["request_id"], "late");
    // Retrying from the version given succeeds.
    let retry = commit(
        &mut client,
        json!({"request_id": "late", "read_version": 1, "preconditions": [{"type": "point_read", "key": KEY}]}),
    );
    assert_eq!(retry.status, 200, "{}", retry.text());
}

#[test]
fn a_wrong_leader_id_is_409_leader_changed() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let response = commit(&mut client, json!({"leader_id": "someone-else", "operations": [write(KEY)]}));
    assert_eq!(response.status, 409);
    assert_eq!(response.json()["reason"], "leader_changed");
    assert_eq!(client.get("/v1/version").json()["version"], 0, "nothing was applied");
}

#[test]
fn the_pipeline_is_measured_by_outcome_batch_size_and_stage() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let first = json!({"request_id": "measured", "operations": [write(KEY)]});
    assert_eq!(commit(&mut client, first.clone()).status, 200);
    assert_eq!(commit(&mut client, first).json()["duplicate"], true);
    let stale = json!({"read_version": 0, "preconditions": [{"type": "point_read", "key": KEY}]});
    assert_eq!(commit(&mut client, stale).json()["reason"], "conflict");
    let metrics = client.get("/metrics").text();
    let value = |series: &str| -> f64 {
        let line = metrics.lines().find(|line| line.strip_prefix(series).is_some_and(|rest| rest.starts_with(' ')));
        line.unwrap_or_else(|| panic!("no {series} in {metrics}")).rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value(r#"stoat_commits_total{outcome="committed"}"#), 1.0);
    assert_eq!(value(r#"stoat_commits_total{outcome="duplicate"}"#), 1.0);
    assert_eq!(value(r#"stoat_commits_total{outcome="conflict"}"#), 1.0);
    // One batch written, holding the one transaction committed.
    assert_eq!(value("stoat_batch_transactions_count"), 1.0);
    assert_eq!(value("stoat_batch_transactions_sum"), 1.0);
    // Each request (sent one after the other) is a batch of its own; only
    // the batch written waits for storage.
    for stage in ["parse", "queue", "batch_wait", "decide", "reply"] {
        assert_eq!(value(&format!(r#"stoat_pipeline_stage_seconds_count{{stage="{stage}"}}"#)), 3.0, "{stage}");
    }
    assert_eq!(value(r#"stoat_pipeline_stage_seconds_count{stage="durable_wait"}"#), 1.0);
}

#[test]
fn a_precondition_older_than_the_conflict_window_is_409_too_old() {
    let stoat = Stoat::start("[commit]\nconflict_window_ms = 0\nconflict_window_versions = 1\n");
    let mut client = stoat.connect();
    // With a zero-length time window only the last version is kept once the
    // clock moves past the commits; commit until that is so.
    let deadline = Instant::now() + DEADLINE;
    loop {
        commit(&mut client, json!({"operations": [write("eQ==")]}));
        let response =
            commit(&mut client, json!({"read_version": 0, "preconditions": [{"type": "point_read", "key": KEY}]}));
        if response.status == 409 {
            assert_eq!(response.json()["reason"], "too_old", "{}", response.text());
            break;
        }
        assert_eq!(response.status, 200, "{}", response.text());
        assert!(Instant::now() < deadline, "never too_old");
    }
}

#[test]
fn malformed_commits_are_400_with_a_message_that_names_the_problem() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let cases = [
        ("{not json", "invalid JSON"),
        (r#"{"operations":[{"type":"write","key":"YQ","value":"dg=="}]}"#, "operations[0].key: invalid base64"),
        (
            r#"{"read_version":0,"preconditions":[{"type":"range_read","begin":"Yg==","end":"YQ=="}]}"#,
            "preconditions[0]: begin is after end",
        ),
        (r#"{"read_version":3}"#, "read_version: 3 is newer than the newest committed version 0"),
        (r#"{"preconditions":[{"type":"point_read","key":"YQ=="}]}"#, "preconditions[0].version: required"),
        (r#"{"extra":true}"#, "unknown field \"extra\""),
        (r#"{"request_id":"no spaces allowed"}"#, "request_id: must be"),
    ];
    for (body, expected) in cases {
        let response = client.post("/v1/commit", body);
        assert_eq!(response.status, 400, "{body}: {}", response.text());
        assert_eq!(response.error_code(), "bad_request");
        let message = response.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains(expected), "{body}: {message}");
    }
    // None of them was applied, and the connection still works.
    assert_eq!(client.get("/v1/version").json()["version"], 0);
}

#[test]
fn status_says_whether_a_request_id_committed() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    commit(&mut client, json!({"request_id": "known", "operations": [write(KEY)]}));
    commit(&mut client, json!({"operations": [write(KEY)]}));
    let known = client.get("/v1/status?request_id=known");
    assert_eq!(known.status, 200);
    assert_eq!(known.json(), json!({"request_id": "known", "status": "committed", "version": 1}));
    let unknown = client.get("/v1/status?request_id=unknown&min_version=1");
    assert_eq!(unknown.json(), json!({"request_id": "unknown", "status": "not_committed", "version": 2}));
    // Committed before min_version: not in the range asked about.
    let later = client.get("/v1/status?request_id=known&min_version=2");
    assert_eq!(later.json()["status"], "not_committed");
    let missing = client.get("/v1/status");
    assert_eq!((missing.status, missing.error_code().as_str()), (400, "bad_request"));
    let future = client.get("/v1/status?request_id=x&min_version=99");
    assert_eq!(future.status, 400);
}

#[test]
fn status_finds_ids_older_than_the_in_memory_index_in_the_log() {
    let stoat = Stoat::start("[commit]\nrequest_index_capacity = 2\n");
    let mut client = stoat.connect();
    for id in ["a", "b", "c", "d"] {
        commit(&mut client, json!({"request_id": id, "operations": [write(KEY)]}));
    }
    let old = client.get("/v1/status?request_id=a");
    assert_eq!(old.json(), json!({"request_id": "a", "status": "committed", "version": 1}));
    let never = client.get("/v1/status?request_id=never");
    assert_eq!(never.json(), json!({"request_id": "never", "status": "not_committed", "version": 4}));
}

/// Many clients increment one counter with read-modify-write commits. Every
/// acknowledged increment must have read the counter after the previous
/// acknowledged one wrote it: otherwise an update was lost.
#[test]
fn concurrent_read_modify_write_loses_no_update() {
    let stoat = Stoat::start("");
    let addr = stoat.addr;
    let clients = 8;
    let increments_each = 40;
    let threads: Vec<_> = (0..clients)
        .map(|client_index| {
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut acknowledged = Vec::new();
                let mut read_version = client.get("/v1/version").json()["version"].as_u64().unwrap();
                let mut conflicts = 0;
                while acknowledged.len() < increments_each {
                    let response = commit(
                        &mut client,
                        json!({
                            "request_id": format!("c{client_index}-{}", acknowledged.len()),
                            "read_version": read_version,
                            "preconditions": [{"type": "point_read", "key": KEY}],
                            "operations": [write(KEY)],
                        }),
                    );
                    let body = response.json();
                    let version = body["version"].as_u64().unwrap();
                    match response.status {
                        200 => acknowledged.push((version, read_version)),
                        409 => {
                            assert_eq!(body["reason"], "conflict", "{body}");
                            conflicts += 1;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                    read_version = version;
                }
                (acknowledged, conflicts)
            })
        })
        .collect();
    let mut acknowledged = Vec::new();
    let mut conflicts = 0;
    for thread in threads {
        let (acks, client_conflicts) = thread.join().unwrap();
        acknowledged.extend(acks);
        conflicts += client_conflicts;
    }
    acknowledged.sort_unstable();
    assert_eq!(acknowledged.len(), clients * increments_each);
    for pair in acknowledged.windows(2) {
        let ((previous_version, _), (version, read_version)) = (pair[0], pair[1]);
        assert!(
            read_version >= previous_version,
            "lost update: commit at {version} read at {read_version}, before the commit at {previous_version}"
        );
    }
    assert!(conflicts > 0, "the clients never contended; the test proves nothing");
}

#[test]
fn a_full_pipeline_queue_is_429_with_retry_after_and_nothing_applied() {
    // One request may wait for the sequencer; batch writes take 300 ms.
    let stoat = common::Stoat::start_with_env("[pipeline]\nqueue_depth = 1\n", &[("STOAT_TEST_PUT_DELAY_MS", "300")]);
    let mut clients: Vec<Client> = (0..24).map(|_| stoat.connect()).collect();
    for (index, client) in clients.iter_mut().enumerate() {
        let body = json!({"request_id": format!("flood-{index}"), "operations": [write(KEY)]}).to_string();
        client.send(format!("POST /v1/commit HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    }
    let responses: Vec<common::Response> = clients.iter_mut().map(Client::read_response).collect();
    let refused: Vec<usize> = (0..responses.len()).filter(|&i| responses[i].status == 429).collect();
    assert!(!refused.is_empty(), "a queue of 1 cannot hold 24 commits while a write takes 300 ms");
    for (index, response) in responses.iter().enumerate() {
        match response.status {
            200 => {}
            429 => {
                assert_eq!(response.error_code(), "too_many_requests");
                assert_eq!(response.header("retry-after"), Some("1"), "{index}");
            }
            other => panic!("commit {index}: unexpected {other}: {}", response.text()),
        }
    }
    // A refused commit was not applied.
    let mut client = stoat.connect();
    for index in refused {
        let status = client.get(&format!("/v1/status?request_id=flood-{index}"));
        assert_eq!(status.json()["status"], "not_committed", "flood-{index}");
    }
}
