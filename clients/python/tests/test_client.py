"""The client (``Client`` and ``AsyncClient``) against the real binary, plus its
retry rules against a scripted server."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import stoat
from stoat import (
    AsyncClient,
    Backoff,
    Client,
    Conflict,
    LeaderChanged,
    NotFound,
    StoatError,
    TooOld,
    VersionTooOld,
)
from conftest import DEADLINE_SECONDS, wait_until
from helpers import Reply, ScriptedServer

FAST = Backoff(retries=2, initial_seconds=0.01, max_seconds=0.05)


@pytest.fixture
def client(server):
    with Client(server.url, timeout=DEADLINE_SECONDS, backoff=FAST) as client:
        yield client


def test_public_names_of_the_interface():
    for name in ["Client", "AsyncClient", "Conflict", "TooOld", "LeaderChanged", "VersionTooOld", "StoatError"]:
        assert hasattr(stoat, name)
    for error in [stoat.Conflict, stoat.TooOld, stoat.LeaderChanged, stoat.VersionTooOld, stoat.NotFound]:
        assert issubclass(error, StoatError)


def test_version_commit_and_status(client: Client):
    version = client.version()
    assert version.version == 0 and version.leader_id
    tx = client.transaction(read_version=version.version)
    tx.point_read(b"k").range_read(b"a", b"b").write(b"k", b"\x00v").delete(b"old").range_delete(b"x", b"y")
    result = client.commit(tx, request_id="one")
    assert (result.version, result.request_id, result.leader_id, result.duplicate) == (1, "one", version.leader_id, False)
    assert client.status("one") == stoat.Status("committed", 1, "one")
    assert client.status("two", min_version=0) == stoat.Status("not_committed", 1, "two")
    assert client.status("one", min_version=1).committed
    generated = client.commit(client.transaction())
    assert generated.version == 2 and len(generated.request_id) == 36


def test_duplicate_is_reported_not_applied(client: Client):
    tx = client.transaction().write(b"k", b"v")
    first = client.commit(tx, request_id="dup")
    client.commit(client.transaction().write(b"other", b"v"))
    again = client.commit(tx, request_id="dup")
    assert again.duplicate and again.version == first.version
    assert client.version().version == 2


def test_conflict_too_old_and_leader_changed(client: Client, make_server):
    client.commit(client.transaction().write(b"k", b"1"))
    stale = client.transaction(read_version=0)
    stale.range_read(b"a", b"b")
    stale.point_read(b"k")
    with pytest.raises(Conflict) as conflict:
        client.commit(stale, request_id="stale")
    assert conflict.value.conflicts == [1] and conflict.value.version == 1
    assert conflict.value.request_id == "stale"
    fresh = client.transaction(read_version=conflict.value.version).point_read(b"k").write(b"k", b"2")
    assert client.commit(fresh).version > conflict.value.version
    with pytest.raises(LeaderChanged):
        client.commit(client.transaction(leader_id="not-the-leader").write(b"k", b"3"))
    server = make_server("[commit]\nconflict_window_ms = 0\nconflict_window_versions = 1\n", name="window")
    with Client(server.url, backoff=FAST) as small_window:

        def too_old():
            small_window.commit(small_window.transaction().write(b"y", b"1"))
            try:
                small_window.commit(small_window.transaction(read_version=0).point_read(b"k"))
            except TooOld as error:
                return error
            return None

        assert wait_until(too_old, "TooOld").version >= 1


def test_bad_requests_raise_stoat_error_with_the_message(client: Client):
    with pytest.raises(StoatError) as error:
        client.commit(client.transaction(read_version=5))
    assert error.value.status == 400 and error.value.code == "bad_request"
    assert "read_version" in str(error.value)
    with pytest.raises(StoatError) as error:
        client.status("x", min_version=99)
    assert error.value.code == "bad_request"
    with pytest.raises(ValueError):
        client.transaction().point_read(b"k")  # no version and no read_version
    with pytest.raises(ValueError):
        client.commit(client.transaction(), request_id="has spaces")


def test_conflicts_inside_one_batch(make_server):
    """Three commits held in one sequencer batch (a one-second batch window):
    A and B both read and write k at version 0, C is a blind write. B
    conflicts with A although A is not committed when B arrives, and B's
    answer names C's version as the one to retry from: B was decided in the
    batch that committed A and C."""
    server = make_server("[persist]\nbatch_timeout_us = 1000000\n", name="batch")
    results = {}

    def run(name: str, start_after: float, build) -> None:
        with Client(server.url, timeout=DEADLINE_SECONDS) as client:
            time.sleep(start_after)
            try:
                results[name] = client.commit(build(client), request_id=name)
            except Conflict as conflict:
                results[name] = conflict

    def read_write(client):
        return client.transaction(read_version=0).point_read(b"k").write(b"k", b"v")

    threads = [
        threading.Thread(target=run, args=("A", 0.0, read_write)),
        threading.Thread(target=run, args=("B", 0.15, read_write)),
        threading.Thread(target=run, args=("C", 0.3, lambda c: c.transaction().write(b"c", b"v"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_SECONDS)
    a, b, c = results["A"], results["B"], results["C"]
    assert isinstance(a, stoat.CommitResult) and isinstance(c, stoat.CommitResult), results
    assert isinstance(b, Conflict) and b.conflicts == [0], results
    assert c.version == a.version + 2, "B took the version between A and C: one batch"
    assert b.version == c.version, "B's answer knows C's commit: decided in the same batch"


def test_retention_errors_surface_as_stoat_errors(client: Client):
    """An unknown policy is NotFound (a StoatError with the 404)."""
    with pytest.raises(NotFound) as error:
        client.retention.get("no-such-policy")
    assert isinstance(error.value, StoatError) and error.value.status == 404


def test_async_client(server):
    async def scenario():
        async with AsyncClient(server.url, backoff=FAST) as client:
            version = await client.version()
            tx = client.transaction(read_version=version.version).point_read(b"k").write(b"k", b"1")
            first = await client.commit(tx, request_id="a1")
            assert first.version == 1
            assert (await client.commit(tx, request_id="a1")).duplicate
            with pytest.raises(Conflict) as conflict:
                await client.commit(tx)
            assert conflict.value.conflicts == [0]
            assert (await client.status("a1")).version == 1
            with pytest.raises(StoatError):
                await client.status("x", min_version=99)
            assert "stoat_commits_total" in await client.metrics_text()

    asyncio.run(scenario())


COMMITTED = {"status": "committed", "version": 7, "request_id": "r", "leader_id": "L"}


def test_429_and_503_are_retried_with_backoff():
    fake = ScriptedServer(
        {
            "/v1/commit": [
                Reply(429, {"error": "too_many_requests", "message": "queue full"}, {"Retry-After": "0"}),
                Reply(503, {"error": "unavailable", "message": "recovering"}, {"Retry-After": "0"}),
                Reply(200, COMMITTED),
            ]
        }
    )
    try:
        with Client(fake.url, backoff=FAST) as client:
            result = client.commit(client.transaction().write(b"k", b"v"), request_id="r")
        assert result.version == 7
        assert len(fake.paths("/v1/commit")) == 3
    finally:
        fake.close()


def test_retries_are_bounded_and_end_in_the_server_error():
    fake = ScriptedServer(
        {"/v1/version": [Reply(503, {"error": "unavailable", "message": "not the leader"}, {"Retry-After": "0"})]}
    )
    try:
        with Client(fake.url, backoff=FAST) as client:
            with pytest.raises(StoatError) as error:
                client.version()
        assert error.value.status == 503 and "not the leader" in str(error.value)
        assert len(fake.paths("/v1/version")) == FAST.retries + 1
    finally:
        fake.close()


def test_backoff_grows_and_is_bounded():
    backoff = Backoff(retries=10, initial_seconds=0.1, max_seconds=1.0)
    for attempt in range(10):
        ceiling = min(1.0, 0.1 * 2**attempt)
        for _ in range(20):
            assert ceiling / 2 <= backoff.delay(attempt) <= ceiling
    assert backoff.delay(0, retry_after=0.7) >= 0.7
    assert backoff.delay(0, retry_after=30) <= 1.0


def test_token_is_sent_and_401_403_are_errors():
    fake = ScriptedServer(
        {
            "/v1/version": [Reply(401, {"error": "unauthorized", "message": "token missing or wrong"})],
            "/v1/status": [Reply(403, {"error": "forbidden", "message": "token lacks the status scope"})],
        }
    )
    try:
        with Client(fake.url, token="secret", backoff=FAST) as client:
            with pytest.raises(StoatError) as error:
                client.version()
            assert (error.value.status, error.value.code) == (401, "unauthorized")
            with pytest.raises(StoatError) as error:
                client.status("r")
            assert error.value.code == "forbidden"
        assert all(headers["authorization"] == "Bearer secret" for _, _, headers in fake.requests)
    finally:
        fake.close()


def test_retention_answers_map_to_results_and_errors():
    policy = {"policy_id": "backup", "version": 5, "updated_at": "2026-11-21T20:27:42.555Z"}
    fake = ScriptedServer(
        {
            "/v1/retention/backup": [Reply(200, policy)],
            "/v1/retention/old": [Reply(409, {"error": "version_too_old", "message": "deleted", "oldest_version": 9})],
            "/v1/retention/missing": [Reply(404, {"error": "not_found", "message": "no policy missing"})],
            "/v1/retention/": [Reply(200, {"policies": [policy], "oldest_version": 3})],
        }
    )
    try:
        with Client(fake.url, backoff=FAST) as client:
            assert client.retention.put("backup", version=5) == stoat.Policy("backup", 5, policy["updated_at"])
            assert client.retention.get("backup").version == 5
            listing = client.retention.list()
            assert listing.oldest_version == 3 and listing.policies[0].policy_id == "backup"
            with pytest.raises(VersionTooOld) as too_old:
                client.retention.put("old", version=1)
            assert too_old.value.oldest_version == 9
            with pytest.raises(NotFound):
                client.retention.delete("missing")
        methods = [(method, path) for method, path, _ in fake.requests]
        assert ("PUT", "/v1/retention/backup") in methods and ("DELETE", "/v1/retention/missing") in methods
    finally:
        fake.close()
