"""/v1/subscribe and /v1/retention/ on the real binary, through raw HTTP, the
client, the CLI and the examples."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Dict, List

import httpx
import pytest

from stoat import (
    AsyncClient,
    Backoff,
    Checkpoint,
    Client,
    NotFound,
    TransactionEvent,
    VersionTooOld,
    Write,
)
from conftest import DEADLINE_SECONDS, wait_until
from test_cli import run as run_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from kv_state import KeyValueState, follow_in_background  # noqa: E402
from read_modify_write import increment  # noqa: E402

FAST = Backoff(retries=3, initial_seconds=0.02, max_seconds=0.2)
# Shutdown does not wait long for open subscriptions.
CONFIG = "[server]\nshutdown_timeout_ms = 1000\n"


@pytest.fixture
def live(make_server):
    return make_server(CONFIG)


@pytest.fixture
def subscribe_server(make_server):
    return make_server(CONFIG)


@pytest.fixture
def retention_server(make_server):
    return make_server(CONFIG)


def commit_write(client: Client, key: bytes, value: bytes, request_id=None):
    return client.commit(client.transaction().write(key, value), request_id=request_id)


def read_sse(url: str, path: str, count: int, headers: Dict[str, str] = {}) -> List[Dict]:
    """The first ``count`` events (transaction or checkpoint) of a raw stream."""
    events: List[Dict] = []
    with httpx.Client(base_url=url, timeout=DEADLINE_SECONDS) as http:
        with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            fields: Dict[str, str] = {}
            for line in response.iter_lines():
                if line == "":
                    if fields:
                        events.append(fields)
                        fields = {}
                    if len(events) == count:
                        return events
                    continue
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
    return events


# ---- subscribe, raw HTTP ----


def test_raw_stream_format_history_then_checkpoint(subscribe_server):
    url = subscribe_server.url
    with Client(url) as client:
        first = commit_write(client, b"a", b"1", "raw-1")
        second = commit_write(client, b"b", b"2", "raw-2")
    events = read_sse(url, "/v1/subscribe?after=0", 3)
    transactions = [e for e in events if e.get("event") == "transaction"]
    assert [int(e["id"]) for e in transactions] == [first.version, second.version]
    body = json.loads(transactions[0]["data"])
    assert body["version"] == first.version and body["prev_version"] == 0
    assert body["request_id"] == "raw-1" and body["leader_id"] == first.leader_id and body["timestamp"]
    assert body["operations"] == [{"type": "write", "key": "YQ==", "value": "MQ=="}]
    assert json.loads(transactions[1]["data"])["prev_version"] == first.version
    checkpoints = [json.loads(e["data"]) for e in events if e.get("event") == "checkpoint"]
    assert checkpoints and checkpoints[0]["committed_version"] >= second.version
    assert checkpoints[0]["durable_version"] >= second.version


def test_raw_last_event_id_means_after(subscribe_server):
    url = subscribe_server.url
    with Client(url) as client:
        first = commit_write(client, b"a", b"1")
        second = commit_write(client, b"a", b"2")
    events = read_sse(url, "/v1/subscribe", 1, headers={"Last-Event-ID": str(first.version)})
    assert events[0]["event"] == "transaction" and int(events[0]["id"]) == second.version


def test_raw_410_before_the_stream_when_history_is_gone(live):
    oldest = truncate_history(live.url)
    response = httpx.get(f"{live.url}/v1/subscribe", params={"after": 0}, timeout=DEADLINE_SECONDS)
    assert response.status_code == 410
    body = response.json()
    assert body["error"] == "version_too_old" and body["oldest_version"] == oldest
    status = httpx.get(f"{live.url}/v1/status", params={"request_id": "x", "min_version": 0})
    assert status.status_code == 410 and status.json()["oldest_version"] == oldest


# ---- subscribe through the client ----


def test_client_streams_history_then_live(subscribe_server):
    with Client(subscribe_server.url, backoff=FAST) as client:
        committed = [commit_write(client, b"k%d" % i, b"v").version for i in range(3)]
        events = client.subscribe(after=0)
        seen = [next(events) for _ in range(3)]
        assert [e.version for e in seen] == committed
        assert [e.prev_version for e in seen] == [0] + committed[:2]
        live_commit = commit_write(client, b"live", b"now")
        event = next(events)
        assert event.version == live_commit.version and event.operations == [Write(b"live", b"now")]
        events.close()


def test_client_checkpoints_and_prefix(subscribe_server):
    with Client(subscribe_server.url, backoff=FAST) as client:
        commit_write(client, b"other/1", b"x")
        wanted = commit_write(client, b"user/1", b"y")
        stream = client.subscribe(after=0, prefix=b"user/", checkpoints=True)
        event = next(stream)
        assert isinstance(event, TransactionEvent) and event.version == wanted.version
        assert event.operations == [Write(b"user/1", b"y")]
        checkpoint = next(e for e in stream if isinstance(e, Checkpoint))
        assert checkpoint.durable_version >= wanted.version
        stream.close()


def test_client_resumes_after_the_server_restarts(subscribe_server):
    server = subscribe_server
    with Client(server.url, backoff=FAST) as client:
        before = [commit_write(client, b"k", b"%d" % i).version for i in range(2)]
        stream = client.subscribe(after=0)
        assert [next(stream).version for _ in range(2)] == before
        server.restart()
        after = [commit_write(client, b"k", b"%d" % i).version for i in range(2, 4)]
        resumed = [next(stream) for _ in range(2)]
        assert [e.version for e in resumed] == after, "no gap, no duplicate across the restart"
        assert resumed[0].prev_version == before[-1]
        stream.close()


def test_client_version_too_old_after_truncation(live):
    oldest = truncate_history(live.url)
    with Client(live.url, backoff=FAST) as client:
        with pytest.raises(VersionTooOld) as error:
            next(client.subscribe(after=0))
        assert error.value.oldest_version == oldest
        with pytest.raises(VersionTooOld):
            client.retention.put("too-early", version=0)
        first = next(client.subscribe(after=oldest))
        assert first.version > oldest


def test_async_client_subscribes(subscribe_server):
    import asyncio

    async def scenario():
        async with AsyncClient(subscribe_server.url, backoff=FAST) as client:
            committed = await client.commit(client.transaction().write(b"a", b"1"))
            async for event in client.subscribe(after=0):
                return event, committed

    event, committed = asyncio.run(scenario())
    assert event.version == committed.version


# ---- retention ----


def test_retention_raw_lifecycle_survives_a_restart(retention_server):
    server = retention_server
    url = server.url
    with Client(url) as client:
        version = commit_write(client, b"a", b"1").version
    put = httpx.put(f"{url}/v1/retention/backup", json={"version": version})
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["policy_id"] == "backup" and body["version"] == version and body["updated_at"]
    assert httpx.get(f"{url}/v1/retention/backup").json()["version"] == version
    listing = httpx.get(f"{url}/v1/retention/").json()
    assert [p["policy_id"] for p in listing["policies"]] == ["backup"] and "oldest_version" in listing
    server.restart()
    assert httpx.get(f"{server.url}/v1/retention/backup").json()["version"] == version, "policies are durable"
    assert httpx.delete(f"{server.url}/v1/retention/backup").status_code == 204
    missing = httpx.get(f"{server.url}/v1/retention/backup")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert httpx.delete(f"{server.url}/v1/retention/backup").status_code == 404


def test_retention_through_the_client(retention_server):
    with Client(retention_server.url, backoff=FAST) as client:
        version = commit_write(client, b"a", b"1").version
        policy = client.retention.put("reader", version=version)
        assert (policy.policy_id, policy.version) == ("reader", version)
        assert client.retention.get("reader") == policy
        assert client.retention.list().policies == [policy]
        client.retention.delete("reader")
        with pytest.raises(NotFound):
            client.retention.get("reader")


def test_retention_via_the_cli(retention_server):
    url = retention_server.url
    with Client(url) as client:
        version = commit_write(client, b"a", b"1").version
    created = run_cli(url, "--json", "retention", "set", "cli-policy", str(version))
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["version"] == version
    got = run_cli(url, "--json", "retention", "get", "cli-policy")
    assert json.loads(got.stdout)["policy_id"] == "cli-policy"
    listed = run_cli(url, "--json", "retention", "list")
    listing = json.loads(listed.stdout)
    assert [p["policy_id"] for p in listing["policies"]] == ["cli-policy"]
    table = run_cli(url, "retention", "list")
    assert "cli-policy" in table.stdout and "oldest retained version" in table.stdout
    deleted = run_cli(url, "retention", "delete", "cli-policy")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    missing = run_cli(url, "retention", "get", "cli-policy")
    assert missing.returncode == 1
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and "not_found" in lines[0]


def test_tail_via_the_cli(subscribe_server):
    url = subscribe_server.url
    with Client(url) as client:
        first = commit_write(client, b"user/1", b"alice")
        commit_write(client, b"other", b"x")
        third = commit_write(client, b"user/2", b"\x00\xff")
    as_json = run_cli(url, "--json", "tail", "--after", "0", "--count", "3")
    assert as_json.returncode == 0, as_json.stderr
    lines = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [line["version"] for line in lines][0] == first.version and len(lines) == 3
    people = run_cli(url, "tail", "--after", "0", "--prefix", "user/", "--count", "2")
    assert people.returncode == 0, people.stderr
    assert "user/1 = alice" in people.stdout and "b'\\x00\\xff'" in people.stdout
    assert str(third.version) in people.stdout and "other" not in people.stdout


# ---- the examples agree ----


def test_read_modify_write_and_the_subscriber_agree(subscribe_server):
    url = subscribe_server.url
    workers, increments = 3, 5
    errors: List[BaseException] = []

    def work() -> None:
        state = KeyValueState()
        follow_in_background(url, state)
        try:
            with Client(url) as client:
                for _ in range(increments):
                    increment(client, state, b"counter")
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS * 3)
    assert not errors, errors
    with Client(url) as client:
        final = client.version().version
    fresh = KeyValueState()
    follow_in_background(url, fresh)
    assert fresh.wait_for(final, DEADLINE_SECONDS)
    values, _ = fresh.snapshot()
    assert values == {b"counter": str(workers * increments).encode()}, "an update was lost"


# ---- helpers ----


def truncate_history(url: str) -> int:
    """Commits, pins the log at a later version and waits until older history is
    deleted; returns the oldest retained version."""
    with Client(url, backoff=FAST) as client:
        versions = [commit_write(client, b"t", b"%d" % i).version for i in range(20)]
        pin = versions[-5]
        client.retention.put("truncate", version=pin)

        def truncated():
            oldest = client.retention.list().oldest_version
            return oldest if oldest > versions[0] else None

        oldest = wait_until(truncated, "history older than the policy to be deleted")
    assert 0 < oldest <= pin
    return oldest

