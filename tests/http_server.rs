//! The HTTP server through its real door: the `stoat` binary on a loopback
//! port, spoken to over TCP.

mod common;

use std::time::{Duration, Instant};

use common::{Client, Stoat, DEADLINE};

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    for _ in 0..20 {
        let response = client.get("/v1/version");
        assert_eq!(response.status, 200);
        assert!(response.text().starts_with("{\"version\":0,\"leader_id\":\""), "{}", response.text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert!(response.header("connection").is_none());
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_across_hand_offs() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    // The commit goes through the pipeline stage; the others are answered on
    // the reactor. Responses must still come back in request order.
    let mut batch = Vec::new();
    for round in 0..10 {
        batch.extend_from_slice(format!("GET /v1/version HTTP/1.1\r\nX-Request-Id: v-{round}\r\n\r\n").as_bytes());
        batch.extend_from_slice(
            format!("POST /v1/commit HTTP/1.1\r\nX-Request-Id: c-{round}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        );
        batch.extend_from_slice(format!("GET /healthz HTTP/1.1\r\nX-Request-Id: h-{round}\r\n\r\n").as_bytes());
    }
    client.send(&batch);
    for round in 0..10 {
        let expected = [("v", 200), ("c", 200), ("h", 200)];
        for (prefix, status) in expected {
            let response = client.read_response();
            let id = format!("{prefix}-{round}");
            assert_eq!(response.header("x-request-id"), Some(id.as_str()));
            assert_eq!(response.status, status, "{id}: {}", response.text());
        }
    }
}

#[test]
fn a_request_sent_while_the_previous_one_is_in_the_pipeline_is_answered() {
    // The reactor reads only after a readable event (or a read that filled
    // its buffer); the event for the second request arrives while the
    // connection is away in the pipeline, held there by the batch timeout,
    // and must not be lost.
    let stoat = Stoat::start("[persist]\nbatch_timeout_us = 300000\n");
    let mut client = stoat.connect();
    client.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for round in 0..3 {
        client.send(
            format!("POST /v1/commit HTTP/1.1\r\nX-Request-Id: c-{round}\r\nContent-Length: 2\r\n\r\n{{}}").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(100));
        client.send(format!("GET /healthz HTTP/1.1\r\nX-Request-Id: h-{round}\r\n\r\n").as_bytes());
        let commit = client.read_response();
        assert_eq!(commit.status, 200, "{}", commit.text());
        assert_eq!(commit.header("x-request-id"), Some(format!("c-{round}").as_str()));
        let health = client.read_response();
        assert_eq!(health.status, 200);
        assert_eq!(health.header("x-request-id"), Some(format!("h-{round}").as_str()));
    }
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer_and_then_eof() {
    // The request and the FIN arrive together, so one readable event reports
    // both: the reactor must still read on to the end of the stream, though
    // the read that brought the request did not fill its buffer.
    let stoat = Stoat::start("[server]\nidle_timeout_ms = 60000\n");
    for request in [
        "GET /healthz HTTP/1.1\r\n\r\n".to_string(),
        "POST /v1/commit HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_string(),
    ] {
        let mut client = stoat.connect();
        client.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        client.send(request.as_bytes());
        client.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(client.read_response().status, 200);
        assert!(client.closed_by_server(), "{request:?}: no end of stream within 5 s of the answer");
    }
}

#[test]
fn a_subscriber_that_half_closes_with_its_request_is_closed() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.send(b"GET /v1/subscribe HTTP/1.1\r\n\r\n");
    client.stream.shutdown(std::net::Shutdown::Write).unwrap();
    // A stream's client that has closed its side is gone (as when the close
    // comes later): the stream ends, rather than writing checkpoints forever.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut client.stream, &mut chunk) {
            Ok(0) => break,
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(_) => assert!(Instant::now() < deadline, "the stream was still open after 5 s"),
            Err(error) => panic!("no end of stream: {error}"),
        }
    }
}

#[test]
fn generated_request_ids_are_present_and_distinct() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let first = client.get("/healthz");
    let second = client.get("/healthz");
    let (first, second) = (first.header("x-request-id").unwrap(), second.header("x-request-id").unwrap());
    assert_eq!(first.len(), 36);
    assert_ne!(first, second);
}

#[test]
fn chunked_bodies_are_read_whole_and_the_connection_stays_framed() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"POST /v1/commit HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"reques\r\n");
    client.send(b"b;ext=x\r\nt_id\":\"c1\"}\r\n0\r\nX-Trailer: yes\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.text().contains("\"request_id\":\"c1\""), "{}", response.text());
    // Had the body been mis-framed, this request would be read as garbage.
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"POST /v1/commit HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    let interim = client.read_response();
    assert_eq!(interim.status, 100);
    client.send(b"{}");
    assert_eq!(client.read_response().status, 200);
}

#[test]
fn expect_100_continue_to_a_wrong_path_is_refused_without_the_body() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"POST /v1/nowhere HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 404);
    assert_eq!(response.header("connection"), Some("close"));
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    let response = client.get("/v2/nothing");
    assert_eq!((response.status, response.error_code().as_str()), (404, "not_found"));
    assert!(response.text().contains("/v2/nothing"));
    client.send(b"DELETE /v1/version HTTP/1.1\r\n\r\n");
    let response = client.read_response();
    assert_eq!((response.status, response.error_code().as_str()), (405, "method_not_allowed"));
    assert_eq!(response.header("allow"), Some("GET"));
    client.send(b"POST /v1/retention/backup HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, PUT, DELETE"));
    // Errors on a well-framed request keep the connection open.
    assert_eq!(client.get("/healthz").status, 200);
}

#[test]
fn an_oversized_body_is_413_before_the_body_is_sent() {
    let stoat = Stoat::start("[limits]\nbody_bytes_max = 2048\n");
    let mut client = stoat.connect();
    client.send(b"POST /v1/commit HTTP/1.1\r\nX-Request-Id: big-1\r\nContent-Length: 1000000\r\n\r\n");
    // No body byte has been sent; the answer must come anyway.
    let response = client.read_response();
    assert_eq!((response.status, response.error_code().as_str()), (413, "payload_too_large"));
    assert_eq!(response.header("x-request-id"), Some("big-1"));
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed_by_server());
}

#[test]
fn an_oversized_chunked_body_is_413_when_the_total_passes_the_limit() {
    let stoat = Stoat::start("[limits]\nbody_bytes_max = 2048\n");
    let mut client = stoat.connect();
    let chunk = vec![b'x'; 1500];
    client.send(b"POST /v1/commit HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5dc\r\n");
    client.send(&chunk);
    client.send(b"\r\n5dc\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 413);
}

#[test]
fn oversized_headers_are_431() {
    let stoat = Stoat::start("[server]\nheader_bytes_max = 2048\n");
    let mut client = stoat.connect();
    let long = "a".repeat(4096);
    client.send(format!("GET /v1/version HTTP/1.1\r\nX-Long: {long}\r\n\r\n").as_bytes());
    let response = client.read_response();
    assert_eq!((response.status, response.error_code().as_str()), (431, "headers_too_large"));
}

#[test]
fn garbage_gets_400_and_the_server_keeps_serving() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n");
    let response = client.read_response();
    assert_eq!((response.status, response.error_code().as_str()), (400, "bad_request"));
    assert!(client.closed_by_server());
    let mut other = stoat.connect();
    assert_eq!(other.get("/v1/version").status, 200);
}

#[test]
fn a_malformed_request_id_header_is_400() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"GET /v1/version HTTP/1.1\r\nX-Request-Id: has space\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 400);
    assert!(response.text().contains("X-Request-Id"));
}

#[test]
fn connection_close_is_honoured() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    client.send(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n");
    let response = client.read_response();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(client.closed_by_server());
}

#[test]
fn connections_over_the_maximum_are_answered_503() {
    let stoat = Stoat::start("[server]\nmax_connections = 2\n");
    let mut first = stoat.connect();
    let mut second = stoat.connect();
    assert_eq!(first.get("/healthz").status, 200);
    assert_eq!(second.get("/healthz").status, 200);
    let mut third = stoat.connect();
    let response = third.read_response();
    assert_eq!((response.status, response.error_code().as_str()), (503, "unavailable"));
    assert!(response.header("retry-after").is_some());
    // Once one closes, a new connection is served again.
    drop(first);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let mut again = stoat.connect();
        let response = again.get_or_refused("/healthz");
        if response == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "a freed connection slot was never reused");
        std::thread::sleep(Duration::from_millis(20));
    }
}

trait GetOrRefused {
    fn get_or_refused(&mut self, path: &str) -> Option<u16>;
}

impl GetOrRefused for Client {
    /// The status of a GET, or `None` if the connection was refused at once.
    fn get_or_refused(&mut self, path: &str) -> Option<u16> {
        use std::io::Write;
        let _ = self.stream.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
        let response = self.read_response();
        (response.status != 503).then_some(response.status)
    }
}

#[test]
fn idle_connections_are_closed_after_the_idle_timeout() {
    let stoat = Stoat::start("[server]\nidle_timeout_ms = 300\n");
    let mut client = stoat.connect();
    assert_eq!(client.get("/healthz").status, 200);
    let started = Instant::now();
    assert!(client.closed_by_server());
    assert!(started.elapsed() >= Duration::from_millis(250), "closed too early: {:?}", started.elapsed());
}

#[test]
fn a_slow_head_is_cut_off_by_the_header_read_timeout() {
    let stoat = Stoat::start("[server]\nheader_read_timeout_ms = 300\nidle_timeout_ms = 60000\n");
    let mut client = stoat.connect();
    client.send(b"GET /v1/version HTTP/1.1\r\nX-Slow: ");
    let started = Instant::now();
    // Trickle bytes slower than the timeout allows for the whole head.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(100));
        if std::io::Write::write_all(&mut client.stream, b"a").is_err() {
            break;
        }
    }
    assert!(client.closed_by_server());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn metrics_health_and_readiness_answer() {
    let stoat = Stoat::start("");
    let mut client = stoat.connect();
    assert_eq!(client.get("/healthz").status, 200);
    let ready = client.get("/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let metrics = client.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.header("content-type").unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text();
    assert!(text.contains("stoat_http_requests_total{route=\"healthz\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("stoat_http_connections_open 1"), "{text}");
    assert!(text.contains("stoat_pipeline_queue_depth 0"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    // One reactor, so that the idle connection being closed proves that the
    // shutdown has reached the reactor that holds the in-flight request.
    let mut stoat = Stoat::start("[server]\nio_threads = 1\n");
    let mut idle = stoat.connect();
    assert_eq!(idle.get("/healthz").status, 200);
    let mut in_flight = stoat.connect();
    in_flight.send(b"POST /v1/commit HTTP/1.1\r\nContent-Length: 21\r\n\r\n{\"request_id\"");
    // Make sure the partial request has reached the server before the signal.
    let mut probe = stoat.connect();
    assert_eq!(probe.get("/healthz").status, 200);
    drop(probe);
    stoat.signal("TERM");
    stoat.wait_for_log("stopping");
    // The idle connection is closed; the in-flight request is finished.
    assert!(idle.closed_by_server());
    in_flight.send(b":\"in-1\"}");
    let response = in_flight.read_response();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("connection"), Some("close"));
    let status = stoat.wait_exit();
    assert_eq!(status.code(), Some(0), "log: {:?}", stoat.log_seen);
}

#[test]
fn a_bad_config_exits_2_with_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nmax_connections = \"many\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stoat"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("server.max_connections"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_stoat"))
        .args(["serve", "--storage", "ftp://nowhere"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8(output.stderr).unwrap().contains("storage.url"));
}
