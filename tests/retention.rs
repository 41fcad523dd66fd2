//! Retention policies and truncation through the real binary: the
//! `/v1/retention/` API and its errors; truncation keeping history from the
//! smallest policy on and answering 410 before it (subscribe and status);
//! deleting the policy that pinned old history; policies and a truncated
//! (also partially truncated) log across restarts; a live subscriber
//! overtaken by truncation.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::sse::Stream;
use common::{Client, Response, Stoat, DEADLINE};
use serde_json::{json, Value};

/// Truncation rounds often, so tests wait little.
const FAST: &str = "[retention]\ntruncate_interval_ms = 20\n";

fn request(client: &mut Client, method: &str, path: &str, body: Option<&str>) -> Response {
    let body = body.unwrap_or("");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    client.send(request.as_bytes());
    client.read_response()
}

fn put_policy(client: &mut Client, policy_id: &str, version: u64) -> Response {
    request(client, "PUT", &format!("/v1/retention/{policy_id}"), Some(&json!({ "version": version }).to_string()))
}

fn commit_write(client: &mut Client, key: &str, value: &[u8]) -> u64 {
    let operations: Vec<Value> =
        vec![json!({"type": "write", "key": STANDARD.encode(key), "value": STANDARD.encode(value)})];
    let response = client.post("/v1/commit", &json!({ "operations": operations }).to_string());
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["version"].as_u64().unwrap()
}

/// Commits `count` transactions one at a time (so each is its own batch).
fn commit_many(client: &mut Client, count: usize) -> Vec<u64> {
    (0..count).map(|i| commit_write(client, &format!("k{i}"), b"v")).collect()
}

fn oldest_version(client: &mut Client) -> u64 {
    let response = client.get("/v1/retention/");
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["oldest_version"].as_u64().unwrap()
}

/// Waits until the published oldest version is `expected`; fails if it
/// passes it or the deadline does.
fn wait_for_oldest(client: &mut Client, expected: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let oldest = oldest_version(client);
        assert!(oldest <= expected, "truncation went past {expected} to {oldest}");
        if oldest == expected {
            return;
        }
        assert!(Instant::now() < deadline, "oldest version stayed at {oldest}, expected {expected}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A metric's value from `/metrics` (the first sample line starting with `name`).
fn metric(client: &mut Client, name: &str) -> f64 {
    let text = client.get("/metrics").text();
    let line = text
        .lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// The batches left in a data directory, checked to chain from the first.
fn remaining_log(data_dir: &Path) -> Vec<common::LoggedBatch> {
    let batches = common::read_log(data_dir);
    for pair in batches.windows(2) {
        assert_eq!(pair[1].prev_version, pair[0].last_version, "{} leaves a hole", pair[1].name);
    }
    batches
}

/// Transactions until the stream ends, checked to chain from `after`, and
/// the error event that ended it, if any.
fn read_to_end(stream: &mut Stream, after: u64) -> (Vec<u64>, Option<Value>) {
    let (mut versions, mut previous) = (Vec::new(), after);
    while let Some(event) = stream.next() {
        match event.kind.as_str() {
            "transaction" => {
                assert_eq!(event.data["prev_version"].as_u64(), Some(previous), "a gap in the stream");
                previous = event.data["version"].as_u64().unwrap();
                versions.push(previous);
            }
            "checkpoint" => {}
            "error" => {
                assert!(stream.next().is_none(), "the stream ends after an error event");
                return (versions, Some(event.data));
            }
            other => panic!("unexpected event {other}"),
        }
    }
    (versions, None)
}

/// The next `count` transactions of a new stream after `after`, checked to
/// chain from it.
fn read_chain(addr: SocketAddr, after: u64, count: usize) -> Vec<u64> {
    let mut stream = Stream::subscribe(addr, &format!("after={after}"));
    let (mut versions, mut previous) = (Vec::new(), after);
    while versions.len() < count {
        let event = stream.next().expect("a transaction before the stream ends");
        if event.kind == "transaction" {
            assert_eq!(event.data["prev_version"].as_u64(), Some(previous), "a gap in the stream");
            previous = event.data["version"].as_u64().unwrap();
            versions.push(previous);
        } else {
            assert_eq!(event.kind, "checkpoint", "{}", event.data);
        }
    }
    versions
}

#[test]
fn policies_are_created_read_listed_moved_and_deleted() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let versions = commit_many(&mut client, 3);
    let empty = client.get("/v1/retention/").json();
    assert_eq!(empty, json!({"policies": [], "oldest_version": 0}));

    // A policy at 0 pins all history, so no truncation round interferes.
    assert_eq!(put_policy(&mut client, "a:b.c_d-0", 0).status, 200, "every id character; 0 pins all history");
    let created = put_policy(&mut client, "backup", versions[0]);
    assert_eq!(created.status, 200, "{}", created.text());
    let body = created.json();
    assert_eq!((body["policy_id"].as_str(), body["version"].as_u64()), (Some("backup"), Some(versions[0])));
    let updated_at = body["updated_at"].as_str().unwrap();
    assert!(updated_at.len() == 24 && updated_at.ends_with('Z') && &updated_at[10..11] == "T", "{updated_at}");
    assert_eq!(client.get("/v1/retention/backup").json(), body);

    let moved = put_policy(&mut client, "backup", versions[2]).json();
    assert_eq!(moved["version"].as_u64(), Some(versions[2]));
    let colon = request(&mut client, "GET", "/v1/retention/a%3Ab.c_d-0", None);
    assert_eq!(colon.json()["policy_id"], "a:b.c_d-0", "ids are percent-decoded");
    let listing = client.get("/v1/retention/").json();
    let ids: Vec<&str> =
        listing["policies"].as_array().unwrap().iter().map(|p| p["policy_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a:b.c_d-0", "backup"]);
    assert_eq!(listing["oldest_version"], 0);

    let deleted = request(&mut client, "DELETE", "/v1/retention/backup", None);
    assert_eq!((deleted.status, deleted.body.len()), (204, 0));
    for method in ["GET", "DELETE"] {
        let missing = request(&mut client, method, "/v1/retention/backup", None);
        assert_eq!((missing.status, missing.error_code()), (404, "not_found".to_string()), "{method}");
    }
    let metrics = client.get("/metrics").text();
    assert!(metrics.contains("stoat_retention_policies 1"), "{metrics}");
    assert!(metrics.contains("stoat_retention_policy_lag_versions{policy_id=\"a:b.c_d-0\"}"), "{metrics}");
    assert!(!metrics.contains("policy_id=\"backup\""), "a deleted policy's series is removed: {metrics}");
}

#[test]
fn bad_policy_requests_are_refused_precisely() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let committed = commit_many(&mut client, 1)[0];
    let long = "x".repeat(129);
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        ("PUT", long.clone(), Some(r#"{"version":1}"#), 400, "policy_id: must be 1 to 128 characters"),
        ("GET", "a%2Fb".into(), None, 400, "policy_id: '/' is not allowed"),
        ("DELETE", "a%20b".into(), None, 400, "policy_id: byte 0x20 is not allowed"),
        ("PUT", "p".into(), Some(""), 400, "body: expected a JSON object"),
        ("PUT", "p".into(), Some("{"), 400, "body: invalid JSON"),
        ("PUT", "p".into(), Some("{}"), 400, "version: required"),
        (
            "PUT",
            "p".into(),
            Some(r#"{"version":"1"}"#),
            400,
            "version: expected an unsigned 64-bit integer, got a string",
        ),
        (
            "PUT",
            "p".into(),
            Some(r#"{"version":-3}"#),
            400,
            "version: expected an unsigned 64-bit integer, got the number -3",
        ),
        ("PUT", "p".into(), Some(r#"{"version":1,"ttl":5}"#), 400, "\"ttl\": unknown field"),
        ("POST", "p".into(), Some("{}"), 405, "/v1/retention/<policy_id> does not take POST"),
    ];
    for (method, id, body, status, message) in cases {
        // A refused head closes its connection: one connection per case.
        let mut client = stoat.connect();
        let response = request(&mut client, method, &format!("/v1/retention/{id}"), body);
        assert_eq!(response.status, status, "{method} {id} {body:?}: {}", response.text());
        let text = response.json()["message"].as_str().unwrap().to_string();
        assert!(text.starts_with(message), "{method} {id} {body:?}: {text}");
    }
    let future = put_policy(&mut client, "p", committed + 1);
    assert_eq!(future.status, 400);
    assert!(future.text().contains("newer than the newest committed version"), "{}", future.text());
    let list_put = request(&mut client, "PUT", "/v1/retention/", Some("{}"));
    assert_eq!((list_put.status, list_put.header("Allow")), (405, Some("GET")));
    let mut client = stoat.connect();
    assert_eq!(client.get("/v1/retention/").json()["policies"], json!([]), "nothing was stored");
}

#[test]
fn the_policy_limit_is_enforced() {
    let stoat = Stoat::start("[retention]\npolicies_max = 2\n");
    let mut client = stoat.connect();
    commit_many(&mut client, 1);
    assert_eq!(put_policy(&mut client, "a", 1).status, 200);
    assert_eq!(put_policy(&mut client, "b", 1).status, 200);
    let third = put_policy(&mut client, "c", 1);
    assert_eq!((third.status, third.error_code()), (429, "too_many_requests".to_string()), "{}", third.text());
    assert_eq!(put_policy(&mut client, "a", 1).status, 200, "moving an existing policy is allowed");
}

#[test]
fn truncation_keeps_history_from_the_smallest_policy_and_answers_410_before_it() {
    let data = tempfile::tempdir().unwrap();
    let stoat = Stoat::start_at(FAST, data.path());
    let mut client = stoat.connect();
    let versions = commit_many(&mut client, 20);
    // The lower policy first: truncation may run between the two.
    assert_eq!(put_policy(&mut client, "backup", versions[10]).status, 200);
    assert_eq!(put_policy(&mut client, "reader", versions[12]).status, 200);
    // Batches ending before versions[10] go; the one holding it stays.
    let oldest = versions[9];
    wait_for_oldest(&mut client, oldest);

    let batches = remaining_log(data.path());
    assert_eq!(batches[0].prev_version, oldest);
    assert_eq!(batches.last().unwrap().last_version, versions[19]);
    let subscribed = read_chain(stoat.addr, oldest, 10);
    assert_eq!(subscribed, versions[10..]);
    for after in [0, oldest - 1] {
        let refused = client.get(&format!("/v1/subscribe?after={after}"));
        assert_eq!((refused.status, refused.error_code()), (410, "version_too_old".to_string()));
        assert_eq!(refused.json()["oldest_version"], oldest);
    }
    for min_version in [0, oldest] {
        let refused = client.get(&format!("/v1/status?request_id=nope&min_version={min_version}"));
        assert_eq!(refused.status, 410, "min_version {min_version}: {}", refused.text());
        assert_eq!(refused.json()["oldest_version"], oldest);
    }
    let answered = client.get("/v1/status?request_id=nope").json();
    assert_eq!(answered["status"], "not_committed", "min_version defaults to the retained log");
    assert_eq!(client.get(&format!("/v1/status?request_id=nope&min_version={}", oldest + 1)).status, 200);

    let too_old = put_policy(&mut client, "late", oldest);
    assert_eq!((too_old.status, too_old.error_code()), (409, "version_too_old".to_string()), "{}", too_old.text());
    assert_eq!(too_old.json()["oldest_version"], oldest);
    assert_eq!(put_policy(&mut client, "late", oldest + 1).status, 200, "the first retained version can be pinned");

    assert_eq!(metric(&mut client, "stoat_retention_oldest_version"), oldest as f64);
    assert_eq!(metric(&mut client, "stoat_retention_objects_deleted_total"), 10.0);
    assert_eq!(metric(&mut client, "stoat_history_objects"), 10.0);
    let bytes: u64 =
        std::fs::read_dir(data.path().join("log/log")).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
    assert_eq!(metric(&mut client, "stoat_history_bytes"), bytes as f64);
    let text = client.get("/metrics").text();
    let lag = format!("stoat_retention_policy_lag_versions{{policy_id=\"backup\"}} {}", versions[19] - versions[10]);
    assert!(text.contains(&lag), "{text}");
}

#[test]
fn deleting_the_policy_that_pinned_old_history_lets_truncation_delete_it() {
    let stoat = Stoat::start(FAST);
    let mut client = stoat.connect();
    let versions = commit_many(&mut client, 16);
    // The lower policy first: truncation may run between the two.
    assert_eq!(put_policy(&mut client, "low", versions[4]).status, 200);
    assert_eq!(put_policy(&mut client, "high", versions[12]).status, 200);
    wait_for_oldest(&mut client, versions[3]);
    // Several more rounds: "low" still holds history back.
    let rounds_before = metric(&mut client, "stoat_retention_objects_deleted_total");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(oldest_version(&mut client), versions[3]);
    assert_eq!(metric(&mut client, "stoat_retention_objects_deleted_total"), rounds_before);
    assert_eq!(request(&mut client, "DELETE", "/v1/retention/low", None).status, 204);
    wait_for_oldest(&mut client, versions[11]);
    assert_eq!(read_chain(stoat.addr, versions[11], 4), versions[12..]);
    // With no policy at all, nothing more is deleted.
    assert_eq!(request(&mut client, "DELETE", "/v1/retention/high", None).status, 204);
    let more = commit_many(&mut client, 3);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(oldest_version(&mut client), versions[11]);
    let all = read_chain(stoat.addr, versions[11], 7);
    assert_eq!(all[4..], more[..]);
}

#[test]
fn policies_and_a_truncated_log_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut stoat = Stoat::start_at(FAST, data.path());
    let mut client = stoat.connect();
    let versions = commit_many(&mut client, 10);
    let kept = put_policy(&mut client, "keep", versions[6]).json();
    let other = put_policy(&mut client, "other", versions[8]).json();
    wait_for_oldest(&mut client, versions[5]);
    drop(client);
    stoat.signal("TERM");
    assert!(stoat.wait_exit().success());

    let stoat = Stoat::start_at(FAST, data.path());
    let mut client = stoat.connect();
    assert_eq!(client.get("/v1/retention/keep").json(), kept, "the same policy, updated_at included");
    assert_eq!(client.get("/v1/retention/other").json(), other);
    assert_eq!(oldest_version(&mut client), versions[5], "recovery finds the oldest version from the log");
    assert_eq!(client.get(&format!("/v1/subscribe?after={}", versions[4])).status, 410);
    let next = commit_write(&mut client, "after-restart", b"v");
    let streamed = read_chain(stoat.addr, versions[5], 5);
    assert_eq!(streamed, [&versions[6..], &[next]].concat());
}

#[test]
fn a_log_left_partly_truncated_by_a_crash_recovers_and_truncation_finishes() {
    let data = tempfile::tempdir().unwrap();
    // Rounds too rare to run before the crash.
    let slow = "[retention]\ntruncate_interval_ms = 3600000\n";
    let mut stoat = Stoat::start_at(slow, data.path());
    let mut client = stoat.connect();
    let versions = commit_many(&mut client, 12);
    assert_eq!(put_policy(&mut client, "pin", versions[8]).status, 200);
    stoat.crash();
    // What a round killed between two deletes leaves: the oldest objects
    // gone, in order, the rest still there.
    let batches = remaining_log(data.path());
    for batch in &batches[..3] {
        std::fs::remove_file(data.path().join("log/log").join(format!("{:020}.batch", batch.prev_version + 1)))
            .unwrap();
    }
    let stoat = Stoat::start_at(FAST, data.path());
    let mut client = stoat.connect();
    wait_for_oldest(&mut client, versions[7]);
    let left = remaining_log(data.path());
    assert_eq!(left[0].prev_version, versions[7]);
    let streamed = read_chain(stoat.addr, versions[7], 4);
    assert_eq!(streamed, versions[8..]);
}

#[test]
fn a_live_subscriber_overtaken_by_truncation_gets_version_too_old_and_the_stream_ends() {
    // A small feed, so that a stalled stream falls back to storage.
    let config = format!("{FAST}[subscribe]\nbuffer_bytes = 1048576\n");
    let stoat = Stoat::start(&config);
    let mut client = stoat.connect();
    let first = commit_write(&mut client, "first", b"v");
    let mut stalled = Stream::subscribe(stoat.addr, &format!("after={first}"));
    // Reads nothing while 40 MiB are committed: far more than the socket
    // buffers and the stream's read-ahead hold.
    let value = vec![b'x'; 100 * 1024];
    let mut versions = Vec::new();
    for commit in 0..40 {
        let operations: Vec<Value> = (0..10)
            .map(|i| json!({"type": "write", "key": STANDARD.encode(format!("big/{commit}/{i}")), "value": STANDARD.encode(&value)}))
            .collect();
        let response = client.post("/v1/commit", &json!({ "operations": operations }).to_string());
        assert_eq!(response.status, 200, "{}", response.text());
        versions.push(response.json()["version"].as_u64().unwrap());
    }
    let last = *versions.last().unwrap();
    assert_eq!(put_policy(&mut client, "tail", last).status, 200);
    wait_for_oldest(&mut client, versions[versions.len() - 2]);

    let (received, error) = read_to_end(&mut stalled, first);
    let error = error.expect("an error event ends the stream");
    assert_eq!(error["error"], "version_too_old", "{error}");
    assert_eq!(error["oldest_version"].as_u64(), Some(versions[versions.len() - 2]));
    assert!(received.len() < versions.len() - 1, "the stream was overtaken ({} received)", received.len());
    assert_eq!(received[..], versions[..received.len()], "what it got has no gap");
}
