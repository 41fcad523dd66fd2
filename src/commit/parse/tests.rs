//! Tests of commit parsing: every rule of the API, and errors that name their place.

use super::*;
use crate::commit::transaction::OperationRef;

fn limits() -> LimitsConfig {
    LimitsConfig {
        key_bytes_max: 8,
        value_bytes_max: 16,
        preconditions_max: 3,
        operations_max: 3,
        ..Default::default()
    }
}

fn parse(body: &str) -> Result<CommitRequest, String> {
    let arena = Bump::new();
    let mut buffers = JsonScratch::default();
    let mut out = CommitRequest::default();
    parse_commit(body.as_bytes(), &arena, &mut buffers, &limits(), &mut out).map(|()| out)
}

fn error(body: &str) -> String {
    parse(body).expect_err("expected a 400")
}

#[test]
fn a_full_commit_parses_into_decoded_parts() {
    let request = parse(
        r#"{"request_id":"r-1","leader_id":"L","read_version":7,
            "preconditions":[{"type":"point_read","key":"a2V5"},{"type":"range_read","begin":"YQ==","end":"Yg==","version":5}],
            "operations":[{"type":"write","key":"a2V5","value":"dmFsdWU="},{"type":"delete","key":"b2xk"},
                          {"type":"range_delete","begin":"eA==","end":"eQ=="}]}"#,
    )
    .unwrap();
    assert_eq!(request.request_id(), "r-1");
    assert!(!request.request_id_generated);
    assert_eq!(request.leader_id(), Some("L"));
    assert_eq!(request.read_version, Some(7));
    let reads: Vec<_> = request.preconditions().collect();
    assert_eq!(reads[0], ReadSpec { begin: b"key", end: b"key\0", version: 7 });
    assert_eq!(reads[1], ReadSpec { begin: b"a", end: b"b", version: 5 });
    let operations: Vec<_> = request.operations().collect();
    assert_eq!(
        operations,
        vec![
            OperationRef::Write { key: b"key", value: b"value" },
            OperationRef::Delete { key: b"old" },
            OperationRef::RangeDelete { begin: b"x", end: b"y" },
        ]
    );
    let writes: Vec<_> = request.write_ranges().collect();
    assert_eq!(writes, vec![(&b"key"[..], &b"key\0"[..]), (b"old", b"old\0"), (b"x", b"y")]);
    assert_eq!(request.newest_version_named(), Some((VersionField::ReadVersion, 7)));
}

#[test]
fn an_empty_commit_is_a_blind_write_with_a_generated_request_id() {
    let request = parse("{}").unwrap();
    assert!(request.request_id_generated);
    assert_eq!(request.request_id().len(), 36);
    assert_eq!(request.preconditions().len(), 0);
    assert_eq!(request.operations().len(), 0);
}

#[test]
fn empty_ranges_are_allowed_and_empty_range_deletes_dropped() {
    let request = parse(
        r#"{"read_version":1,"preconditions":[{"type":"range_read","begin":"YQ==","end":"YQ=="}],
            "operations":[{"type":"range_delete","begin":"YQ==","end":"YQ=="}]}"#,
    )
    .unwrap();
    assert_eq!(request.preconditions().len(), 1);
    assert_eq!(request.operations().len(), 0);
}

#[test]
fn errors_name_the_field_and_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("", "body: expected a JSON object, got an empty body"),
        ("[1]", "body: expected a JSON object, got an array"),
        ("{", "body: invalid JSON"),
        (r#"{"bogus":1}"#, "unknown field \"bogus\""),
        (r#"{"read_version":-1}"#, "read_version: expected an unsigned 64-bit integer, got the number -1"),
        (r#"{"read_version":1.5}"#, "read_version: expected an unsigned 64-bit integer, got the number 1.5"),
        (r#"{"read_version":"1"}"#, "read_version: expected an unsigned 64-bit integer, got a string"),
        (r#"{"leader_id":true}"#, "leader_id: expected a string, got a boolean"),
        (r#"{"request_id":null}"#, "request_id: expected a string, got null"),
        (r#"{"operations":[[]]}"#, "operations[0]: expected an object, got an array"),
        (
            r#"{"read_version":1,"preconditions":[{"type":"point_read","key":{}}]}"#,
            "preconditions[0].key: expected a string, got an object",
        ),
        (
            r#"{"operations":[{"type":"write","key":"YQ==","value":"YQ==","x":{"y":[1]}}]}"#,
            "operations[0]: unknown field \"x\"",
        ),
        (r#"{"request_id":""}"#, "request_id: must be 1-128 characters"),
        (r#"{"request_id":"has space"}"#, "request_id: must be 1-128 characters"),
        (r#"{"request_id":7}"#, "request_id: expected a string, got the number 7"),
        (r#"{"preconditions":{}}"#, "preconditions: expected an array, got an object"),
        (
            r#"{"preconditions":[{"type":"point_read","key":"YQ=="}]}"#,
            "preconditions[0].version: required because read_version is absent",
        ),
        (r#"{"read_version":1,"preconditions":[{"type":"point_read"}]}"#, "preconditions[0].key: required"),
        (
            r#"{"read_version":1,"preconditions":[{"type":"scan","key":"YQ=="}]}"#,
            "preconditions[0].type: unknown precondition type \"scan\"",
        ),
        (
            r#"{"read_version":1,"preconditions":[{"type":"point_read","key":"YQ==","end":"Yg=="}]}"#,
            "preconditions[0]: unknown field \"end\"",
        ),
        (
            r#"{"read_version":1,"preconditions":[{"type":"range_read","begin":"Yg==","end":"YQ=="}]}"#,
            "preconditions[0]: begin is after end",
        ),
        (r#"{"operations":[{"type":"write","key":"YQ==","value":"YQ="}]}"#, "operations[0].value: invalid base64"),
        (r#"{"operations":[{"type":"write","key":"YQ","value":"YQ=="}]}"#, "operations[0].key: invalid base64"),
        (r#"{"operations":[{"type":"write","key":"YQ=="}]}"#, "operations[0].value: required"),
        (r#"{"operations":[{"type":"put","key":"YQ=="}]}"#, "operations[0].type: unknown operation type \"put\""),
        (
            r#"{"operations":[{"type":"range_delete","begin":"Yg==","end":"YQ=="}]}"#,
            "operations[0]: begin is after end",
        ),
        (
            r#"{"operations":[{"type":"delete","key":"YWJjZGVmZ2hp"}]}"#,
            "operations[0].key: 9 bytes, over the limit of 8",
        ),
        (
            r#"{"operations":[{"type":"delete","key":"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo="}]}"#,
            "operations[0].key: longer than the limit of 8 bytes",
        ),
        (r#"{"operations":[1,2,3,4]}"#, "operations: 4 operations, over the limit of 3"),
        (r#"{"operations":[1]}"#, "operations[0]: expected an object, got the number 1"),
        (r#"{"leader_id":""}"#, "leader_id: must be 1-256 bytes"),
    ];
    for (body, expected) in cases {
        let message = error(body);
        assert!(message.starts_with(expected), "{body}: got {message:?}, expected {expected:?}");
    }
}

#[test]
fn a_later_error_after_earlier_ops_reports_its_own_index() {
    let message = error(
        r#"{"operations":[{"type":"delete","key":"YQ=="},{"type":"delete","key":"YQ=="},{"type":"delete","key":"!!!!"}]}"#,
    );
    assert_eq!(message, "operations[2].key: invalid base64 (standard alphabet, with padding)");
}

#[test]
fn escaped_strings_and_numbers_as_large_as_u64_parse() {
    let request = parse(r#"{"request_id":"a\u002db","read_version":18446744073709551615}"#).unwrap();
    assert_eq!(request.request_id(), "a-b");
    assert_eq!(request.read_version, Some(u64::MAX));
}

#[test]
fn buffers_are_reused_without_leaking_one_request_into_the_next() {
    let arena = Bump::new();
    let mut buffers = JsonScratch::default();
    let mut out = CommitRequest::default();
    let first =
        r#"{"request_id":"one","leader_id":"L","read_version":3,"operations":[{"type":"delete","key":"YQ=="}]}"#;
    parse_commit(first.as_bytes(), &arena, &mut buffers, &limits(), &mut out).unwrap();
    parse_commit(b"{\"request_id\":\"two\"}", &arena, &mut buffers, &limits(), &mut out).unwrap();
    assert_eq!(out.request_id(), "two");
    assert_eq!(out.leader_id(), None);
    assert_eq!(out.read_version, None);
    assert_eq!(out.operations().len(), 0);
}

proptest::proptest! {
    /// Any bytes are either a commit or a 400 message: never a panic.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let arena = Bump::new();
        let mut buffers = JsonScratch::default();
        let mut out = CommitRequest::default();
        let _ = parse_commit(&body, &arena, &mut buffers, &limits(), &mut out);
    }
}

#[test]
fn status_queries_parse_or_name_the_problem() {
    let mut query = StatusQuery::default();
    parse_status_query(Some("request_id=a%3Ab&min_version=7"), &mut query).unwrap();
    assert_eq!(query, StatusQuery { request_id: "a:b".into(), min_version: Some(7) });
    parse_status_query(Some("request_id=x"), &mut query).unwrap();
    assert_eq!(query.min_version, None);
    let errors = [
        (None, "request_id: required"),
        (Some("min_version=1"), "request_id: required"),
        (Some("request_id=a&min_version=-1"), "min_version: \"-1\" is not an unsigned 64-bit integer"),
        (Some("request_id=a%2"), "request_id: invalid percent-encoding"),
        (Some("request_id=has%20space"), "request_id: must be 1-128 characters"),
        (Some("request_id=a&color=red"), "unknown parameter \"color\""),
    ];
    for (text, expected) in errors {
        let message = parse_status_query(text, &mut query).unwrap_err();
        assert!(message.starts_with(expected), "{text:?}: {message}");
    }
}

#[test]
fn the_unknown_field_named_is_the_first_in_the_body() {
    let point =
        |fields: &str| error(&format!(r#"{{"read_version":1,"preconditions":[{{"type":"point_read",{fields}}}]}}"#));
    assert!(point(r#""end":"YQ==","bogus":1,"key":"YQ==""#).starts_with("preconditions[0]: unknown field \"end\""));
    assert!(point(r#""bogus":1,"end":"YQ==","key":"YQ==""#).starts_with("preconditions[0]: unknown field \"bogus\""));
    let delete = |fields: &str| error(&format!(r#"{{"operations":[{{"type":"delete",{fields}}}]}}"#));
    assert!(
        delete(r#""key":"YQ==","value":"YQ==","begin":"YQ==""#).starts_with("operations[0]: unknown field \"value\"")
    );
    assert!(
        delete(r#""begin":"YQ==","key":"YQ==","value":"YQ==""#).starts_with("operations[0]: unknown field \"begin\"")
    );
    assert_eq!(
        error(r#"{"operations":[],"extra":{"operations":1},"more":2}"#),
        "unknown field \"extra\"; expected one of request_id, leader_id, read_version, preconditions, operations"
    );
    // A bad version is reported before an unknown field, as before.
    assert!(
        point(r#""key":"YQ==","version":"x","bogus":1"#).starts_with("preconditions[0].version: expected an unsigned")
    );
}

#[test]
fn a_field_given_twice_counts_once_its_first_value() {
    let request = parse(
        r#"{"request_id":"first","request_id":"second","operations":[{"type":"delete","key":"YQ==","key":"Yg=="}]}"#,
    )
    .unwrap();
    assert_eq!(request.request_id(), "first");
    assert_eq!(request.operations().len(), 1);
}

#[test]
fn a_large_body_leaves_scratch_that_still_parses_the_next() {
    let arena = Bump::new();
    let mut scratch = JsonScratch::default();
    let mut out = CommitRequest::default();
    let large = format!("{{\"request_id\":\"big\"{}}}", " ".repeat(RETAINED_SCRATCH_BODY_BYTES + 1));
    parse_commit(large.as_bytes(), &arena, &mut scratch, &limits(), &mut out).unwrap();
    assert_eq!(out.request_id(), "big");
    assert!(scratch.tape.is_none(), "the scratch of a large body is dropped");
    parse_commit(b"{\"request_id\":\"small\"}", &arena, &mut scratch, &limits(), &mut out).unwrap();
    assert_eq!(out.request_id(), "small");
    assert!(scratch.tape.is_some(), "the scratch of a small body is kept");
}
