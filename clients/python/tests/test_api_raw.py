"""API.md through raw HTTP (httpx and plain sockets) against the real binary:
every endpoint the server implements, and its errors."""

from __future__ import annotations

import base64
import json
import socket
import uuid

import httpx

from conftest import DEADLINE_SECONDS, wait_until


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


KEY = b64(b"counter")


def write(key: str = KEY, value: bytes = b"v") -> dict:
    return {"type": "write", "key": key, "value": b64(value)}


def raw_exchange(port: int, request: bytes) -> bytes:
    """Sends raw bytes and reads until the server closes or a full response arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE_SECONDS) as sock:
        sock.sendall(request)
        received = b""
        while True:
            head_end = received.find(b"\r\n\r\n")
            if head_end >= 0:
                head = received[:head_end].decode("latin-1")
                length = 0
                for line in head.split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if len(received) >= head_end + 4 + length:
                    return received
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk


def error_body(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def test_version_and_request_ids(http: httpx.Client):
    response = http.get("/v1/version")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 0 and isinstance(body["leader_id"], str) and body["leader_id"]
    assert uuid.UUID(response.headers["x-request-id"])
    echoed = http.get("/v1/version", headers={"X-Request-Id": "trace-1.a:b_c"})
    assert echoed.headers["x-request-id"] == "trace-1.a:b_c"
    bad = http.get("/v1/version", headers={"X-Request-Id": "has spaces"})
    error_body(bad, 400, "bad_request")


def test_commit_committed_then_version_moves(http: httpx.Client):
    leader_id = http.get("/v1/version").json()["leader_id"]
    response = http.post("/v1/commit", json={"request_id": "first", "operations": [write()]})
    assert response.status_code == 200
    assert response.json() == {"status": "committed", "version": 1, "request_id": "first", "leader_id": leader_id}
    assert http.get("/v1/version").json()["version"] == 1
    generated = http.post("/v1/commit", json={}).json()
    assert generated["status"] == "committed" and generated["version"] > 1
    assert uuid.UUID(generated["request_id"])


def test_every_operation_and_precondition_type_is_accepted(http: httpx.Client):
    first = http.post("/v1/commit", json={"operations": [write()]}).json()["version"]
    body = {
        "read_version": first,
        "preconditions": [
            {"type": "point_read", "key": KEY},
            {"type": "range_read", "begin": b64(b"a"), "end": b64(b"b"), "version": first},
            {"type": "range_read", "begin": b64(b"q"), "end": b64(b"q")},
        ],
        "operations": [
            write(b64(b"k"), b"\x00\xff"),
            {"type": "delete", "key": b64(b"old")},
            {"type": "range_delete", "begin": b64(b"x"), "end": b64(b"y")},
            {"type": "range_delete", "begin": b64(b"m"), "end": b64(b"m")},
        ],
    }
    response = http.post("/v1/commit", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["version"] > first


def test_conflict_is_409_with_indices_and_a_version_to_retry_from(http: httpx.Client):
    http.post("/v1/commit", json={"operations": [write()]})
    response = http.post(
        "/v1/commit",
        json={
            "request_id": "late",
            "read_version": 0,
            "preconditions": [
                {"type": "range_read", "begin": b64(b"a"), "end": b64(b"b")},
                {"type": "point_read", "key": KEY},
                {"type": "range_read", "begin": b64(b"e"), "end": b64(b"f")},
            ],
            "operations": [write(b64(b"x"))],
        },
    )
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "not_committed" and body["reason"] == "conflict"
    assert body["conflicts"] == [1] and body["version"] == 1 and body["request_id"] == "late"
    assert body["leader_id"] == http.get("/v1/version").json()["leader_id"]
    retry = http.post(
        "/v1/commit",
        json={"request_id": "late", "read_version": body["version"], "preconditions": [{"type": "point_read", "key": KEY}]},
    )
    assert retry.status_code == 200, retry.text


def test_duplicate_request_id_answers_the_original_commit(http: httpx.Client):
    body = {"request_id": "once", "operations": [write()]}
    first = http.post("/v1/commit", json=body).json()
    http.post("/v1/commit", json={"operations": [write()]})
    again = http.post("/v1/commit", json=body)
    assert again.status_code == 200
    assert again.json() == {**first, "duplicate": True}
    assert http.get("/v1/version").json()["version"] == 2, "the duplicate was not applied again"


def test_leader_changed_applies_nothing(http: httpx.Client):
    response = http.post("/v1/commit", json={"leader_id": "someone-else", "operations": [write()]})
    assert response.status_code == 409
    assert response.json()["reason"] == "leader_changed"
    assert http.get("/v1/version").json()["version"] == 0


def test_too_old_when_outside_the_conflict_window(make_server):
    server = make_server("[commit]\nconflict_window_ms = 0\nconflict_window_versions = 1\n")
    with httpx.Client(base_url=server.url, timeout=DEADLINE_SECONDS) as http:

        def too_old():
            http.post("/v1/commit", json={"operations": [write(b64(b"y"))]})
            answer = http.post(
                "/v1/commit", json={"read_version": 0, "preconditions": [{"type": "point_read", "key": KEY}]}
            )
            assert answer.status_code in (200, 409), answer.text
            return answer if answer.status_code == 409 else None

        answer = wait_until(too_old, "a too_old answer")
        assert answer.json()["reason"] == "too_old"


def test_bad_requests_name_the_problem(http: httpx.Client):
    cases = [
        (b"{not json", "invalid JSON"),
        (json.dumps({"operations": [{"type": "write", "key": "YQ", "value": "dg=="}]}), "operations[0].key"),
        (
            json.dumps({"read_version": 0, "preconditions": [{"type": "range_read", "begin": b64(b"b"), "end": b64(b"a")}]}),
            "preconditions[0]",
        ),
        (json.dumps({"read_version": 3}), "read_version"),
        (json.dumps({"preconditions": [{"type": "point_read", "key": KEY}]}), "preconditions[0].version"),
        (json.dumps({"operations": [{"type": "upsert", "key": KEY}]}), "operations[0]"),
        (json.dumps({"operations": [{"type": "write", "key": KEY}]}), "operations[0].value"),
        (json.dumps({"request_id": "no spaces allowed"}), "request_id"),
    ]
    for content, place in cases:
        response = http.post("/v1/commit", content=content)
        body = error_body(response, 400, "bad_request")
        assert place in body["message"], (content, body)
    assert http.get("/v1/version").json()["version"] == 0, "nothing was applied"


def test_status_committed_not_committed_and_bad_requests(http: httpx.Client):
    http.post("/v1/commit", json={"request_id": "known", "operations": [write()]})
    http.post("/v1/commit", json={"operations": [write()]})
    assert http.get("/v1/status", params={"request_id": "known"}).json() == {
        "request_id": "known",
        "status": "committed",
        "version": 1,
    }
    assert http.get("/v1/status", params={"request_id": "unknown", "min_version": 1}).json() == {
        "request_id": "unknown",
        "status": "not_committed",
        "version": 2,
    }
    later = http.get("/v1/status", params={"request_id": "known", "min_version": 2}).json()
    assert later["status"] == "not_committed", "committed before min_version is outside the range asked"
    error_body(http.get("/v1/status"), 400, "bad_request")
    error_body(http.get("/v1/status", params={"request_id": "x", "min_version": 99}), 400, "bad_request")


def test_unknown_path_and_wrong_method(http: httpx.Client):
    error_body(http.get("/v1/nothing-here"), 404, "not_found")
    response = http.get("/v1/commit")
    error_body(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    response = http.post("/v1/version")
    error_body(response, 405, "method_not_allowed")
    assert "GET" in response.headers["allow"]


def test_payload_too_large_is_answered_before_the_body(make_server):
    server = make_server("[limits]\nbody_bytes_max = 2048\n")
    # Only the head is sent: the answer must come without the body.
    raw = raw_exchange(server.port, b"POST /v1/commit HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw
    assert json.loads(body)["error"] == "payload_too_large"


def test_headers_too_large(server):
    request = b"GET /v1/version HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    raw = raw_exchange(server.port, request)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), raw[:200]
    assert json.loads(body)["error"] == "headers_too_large"


def test_subscribe_and_retention_routes_answer_json_errors(http: httpx.Client):
    """These routes answer in API.md's error shape; the full behaviour is in
    test_live_subscribe_retention.py."""
    response = http.get("/v1/retention/")
    assert response.status_code == 200 and response.json()["policies"] == [], response.text
    for method, path in [("GET", "/v1/retention/none"), ("DELETE", "/v1/retention/none")]:
        error_body(http.request(method, path), 404, "not_found")
    error_body(http.get("/v1/subscribe?after=x"), 400, "bad_request")
    response = http.post("/v1/retention/")
    error_body(response, 405, "method_not_allowed")


def test_health_ready_metrics(http: httpx.Client):
    assert http.get("/healthz").status_code == 200
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    http.post("/v1/commit", json={"operations": [write()]})
    metrics = http.get("/metrics")
    assert metrics.status_code == 200
    assert 'stoat_commits_total{outcome="committed"} 1' in metrics.text
    assert 'stoat_http_requests_total{route="commit",status="200"} 1' in metrics.text
    assert metrics.text.rstrip().endswith("# EOF")


def test_status_after_the_connection_dropped_mid_commit(server, http: httpx.Client):
    # The whole request sent, the connection closed before reading: the
    # server decides it anyway, and /v1/status says so.
    body = json.dumps({"request_id": "dropped", "operations": [write()]}).encode()
    head = b"POST /v1/commit HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)

    def committed():
        status = http.get("/v1/status", params={"request_id": "dropped"}).json()
        return status if status["status"] == "committed" else None

    status = wait_until(committed, "the dropped commit to be decided")
    assert status["version"] == 1
    # Half the body, then closed: never applied.
    partial = json.dumps({"request_id": "half", "operations": [write()]}).encode()
    head = b"POST /v1/commit HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(partial)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + partial[: len(partial) // 2])
    after = http.post("/v1/commit", json={"request_id": "after", "operations": [write()]}).json()
    assert after["version"] == 2
    assert http.get("/v1/status", params={"request_id": "half"}).json() == {
        "request_id": "half",
        "status": "not_committed",
        "version": 2,
    }
    assert http.get("/v1/status", params={"request_id": "dropped"}).json()["version"] == 1
