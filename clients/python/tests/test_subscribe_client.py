"""The subscriber's logic against a scripted SSE server that speaks API.md's
event formats: parsing, resume, gap detection, 410, reconnection, and the
durable=false leader-change rule."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Dict, List
from urllib.parse import parse_qs, urlparse

import pytest

from stoat import (
    AsyncClient,
    Backoff,
    Checkpoint,
    Client,
    Delete,
    LeaderChanged,
    RangeDelete,
    StoatError,
    TransactionEvent,
    VersionTooOld,
    Write,
)
from helpers import Reply, ScriptedServer, sse

FAST = Backoff(retries=1, initial_seconds=0.01, max_seconds=0.02)
END = Reply(500, {"error": "internal", "message": "the script is over"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def tx(version: int, prev: int, request_id: str = "", leader: str = "L1", ops=None) -> str:
    body = {
        "version": version,
        "prev_version": prev,
        "request_id": request_id or f"r{version}",
        "leader_id": leader,
        "timestamp": "2026-11-21T20:27:42.555Z",
        "operations": ops if ops is not None else [{"type": "write", "key": b64(b"k"), "value": b64(b"%d" % version)}],
    }
    return sse("transaction", body, event_id=version)


def checkpoint(committed: int, durable: int, leader: str = "L1") -> str:
    return sse("checkpoint", {"committed_version": committed, "durable_version": durable, "leader_id": leader})


def fake(streams: List[Reply], version: int = 0) -> ScriptedServer:
    return ScriptedServer(
        {
            "/v1/version": [Reply(200, {"version": version, "leader_id": "L1"})],
            "/v1/subscribe": streams + [END],
        }
    )


def take(server: ScriptedServer, count: int, **kwargs) -> List:
    with Client(server.url, timeout=5, backoff=FAST, subscribe_backoff=FAST) as client:
        return list(itertools.islice(client.subscribe(**kwargs), count))


def subscribe_queries(server: ScriptedServer) -> List[Dict[str, List[str]]]:
    return [parse_qs(urlparse(path).query) for path in server.paths("/v1/subscribe")]


def subscribe_headers(server: ScriptedServer) -> List[Dict[str, str]]:
    return [headers for _, path, headers in server.requests if path.startswith("/v1/subscribe")]


@pytest.fixture
def servers():
    made: List[ScriptedServer] = []
    yield made
    for server in made:
        server.close()


def test_events_are_parsed_with_bytes_and_checkpoints_are_optional(servers):
    ops = [
        {"type": "write", "key": b64(b"\x00key"), "value": b64(b"value")},
        {"type": "delete", "key": b64(b"old")},
        {"type": "range_delete", "begin": b64(b"a"), "end": b64(b"b")},
    ]
    stream = [": a comment line\n\n", tx(5, 0, "first", ops=ops), checkpoint(6, 6), sse("unknown", {}), tx(7, 5)]
    server = fake([Reply(stream=stream)])
    servers.append(server)
    events = take(server, 3, after=0, checkpoints=True)
    first = events[0]
    assert isinstance(first, TransactionEvent)
    assert (first.version, first.prev_version, first.request_id, first.leader_id) == (5, 0, "first", "L1")
    assert first.timestamp == "2026-11-21T20:27:42.555Z"
    assert first.operations == [Write(b"\x00key", b"value"), Delete(b"old"), RangeDelete(b"a", b"b")]
    assert events[1] == Checkpoint(6, 6, "L1")
    assert events[2].version == 7
    assert subscribe_queries(server)[0] == {"after": ["0"], "durable": ["true"]}

    server = fake([Reply(stream=[tx(5, 0), checkpoint(6, 6), tx(7, 5)])])
    servers.append(server)
    assert [e.version for e in take(server, 2, after=0)] == [5, 7], "checkpoints only when asked"


def test_without_after_the_stream_starts_at_the_current_version(servers):
    server = fake([Reply(stream=[tx(43, 42)])], version=42)
    servers.append(server)
    assert take(server, 1)[0].version == 43
    assert subscribe_queries(server)[0]["after"] == ["42"]


def test_reconnects_and_resumes_after_the_last_version(servers):
    server = fake([Reply(stream=[tx(5, 3), tx(7, 5)]), Reply(stream=[tx(9, 7)])])
    servers.append(server)
    assert [e.version for e in take(server, 3, after=3)] == [5, 7, 9]
    queries = subscribe_queries(server)
    assert [q["after"] for q in queries] == [["3"], ["7"]]
    assert subscribe_headers(server)[1]["last-event-id"] == "7"


def test_a_partial_event_at_a_drop_is_not_delivered(servers):
    partial = tx(9, 7)[:-30]
    server = fake([Reply(stream=[tx(7, 0), partial]), Reply(stream=[tx(9, 7), tx(11, 9)])])
    servers.append(server)
    assert [e.version for e in take(server, 3, after=0)] == [7, 9, 11]
    assert subscribe_queries(server)[1]["after"] == ["7"]


def test_retries_503_then_streams(servers):
    unavailable = Reply(503, {"error": "unavailable", "message": "recovering"}, {"Retry-After": "0"})
    server = fake([unavailable, Reply(stream=[tx(2, 0)])])
    servers.append(server)
    assert take(server, 1, after=0)[0].version == 2
    assert len(server.paths("/v1/subscribe")) == 2


def test_a_checkpoint_moves_the_resume_point(servers):
    server = fake([Reply(stream=[tx(5, 0), checkpoint(8, 8)]), Reply(stream=[tx(10, 5)])])
    servers.append(server)
    assert [e.version for e in take(server, 2, after=0)] == [5, 10]
    assert subscribe_queries(server)[1]["after"] == ["8"]


def test_durable_stream_resumes_from_durable_not_committed_version(servers):
    server = fake([Reply(stream=[tx(5, 0), checkpoint(9, 6)]), Reply(stream=[tx(8, 5)])])
    servers.append(server)
    assert [e.version for e in take(server, 2, after=0)] == [5, 8]
    assert subscribe_queries(server)[1]["after"] == ["6"]


def test_a_gap_in_the_chain_raises(servers):
    server = fake([Reply(stream=[tx(5, 0), tx(9, 7)])])
    servers.append(server)
    with pytest.raises(StoatError, match="gap"):
        take(server, 2, after=0)


def test_a_gap_across_a_reconnection_raises(servers):
    server = fake([Reply(stream=[tx(5, 0)]), Reply(stream=[tx(9, 6)])])
    servers.append(server)
    with pytest.raises(StoatError, match="gap"):
        take(server, 2, after=0)


def test_a_first_event_older_than_asked_raises(servers):
    server = fake([Reply(stream=[tx(3, 0)])])
    servers.append(server)
    with pytest.raises(StoatError, match="gap"):
        take(server, 1, after=4)


def test_410_before_the_stream_is_version_too_old(servers):
    gone = Reply(410, {"error": "version_too_old", "message": "history before 100 is deleted", "oldest_version": 100})
    server = fake([gone])
    servers.append(server)
    with pytest.raises(VersionTooOld) as error:
        take(server, 1, after=3)
    assert error.value.oldest_version == 100 and error.value.status == 410


def test_error_event_mid_stream_is_version_too_old(servers):
    overtaken = sse("error", {"error": "version_too_old", "oldest_version": 50})
    server = fake([Reply(stream=[tx(5, 0), overtaken])])
    servers.append(server)
    with Client(server.url, backoff=FAST, subscribe_backoff=FAST) as client:
        events = client.subscribe(after=0)
        assert next(events).version == 5
        with pytest.raises(VersionTooOld) as error:
            next(events)
    assert error.value.oldest_version == 50
    assert len(server.paths("/v1/subscribe")) == 1, "no reconnection after version_too_old"


def test_reconnections_are_bounded_when_asked(servers):
    server = ScriptedServer(
        {
            "/v1/version": [Reply(200, {"version": 0, "leader_id": "L1"})],
            "/v1/subscribe": [Reply(503, {"error": "unavailable", "message": "down"}, {"Retry-After": "0"})],
        }
    )
    servers.append(server)
    with pytest.raises(StoatError, match="gave up after 3"):
        take(server, 1, after=0, max_reconnects=2)
    assert len(server.paths("/v1/subscribe")) == 3


def test_prefix_stream_sends_the_prefix_and_chains_from_after(servers):
    server = fake([Reply(stream=[tx(5, 2), checkpoint(9, 9)]), Reply(stream=[tx(12, 9)])])
    servers.append(server)
    events = take(server, 2, after=2, prefix=b"user/")
    assert [e.version for e in events] == [5, 12]
    queries = subscribe_queries(server)
    assert queries[0]["prefix"] == [b64(b"user/")]
    assert queries[1]["after"] == ["9"]


def test_not_durable_stream_skips_what_the_same_leader_sends_again(servers):
    first = Reply(stream=[tx(5, 0), checkpoint(5, 5), tx(6, 5), tx(7, 6)])
    again = Reply(stream=[tx(6, 5), tx(7, 6), tx(8, 7)])
    server = fake([first, again])
    servers.append(server)
    assert [e.version for e in take(server, 4, after=0, durable=False)] == [5, 6, 7, 8]
    queries = subscribe_queries(server)
    assert queries[0]["durable"] == ["false"]
    assert queries[1]["after"] == ["5"], "resumes from the last checkpoint's durable version"


def test_not_durable_stream_raises_leader_changed_when_delivered_transactions_are_lost(servers):
    first = Reply(stream=[tx(5, 0), checkpoint(7, 5), tx(6, 5), tx(7, 6)])
    new_leader = Reply(stream=[tx(8, 5, leader="L2")])
    server = fake([first, new_leader])
    servers.append(server)
    with Client(server.url, backoff=FAST, subscribe_backoff=FAST) as client:
        events = client.subscribe(after=0, durable=False)
        assert [next(events).version for _ in range(3)] == [5, 6, 7]
        with pytest.raises(LeaderChanged) as changed:
            next(events)
    assert changed.value.version == 5 and changed.value.leader_id == "L2"


def test_not_durable_stream_raises_when_a_checkpoint_passes_lost_transactions(servers):
    first = Reply(stream=[tx(5, 0), checkpoint(5, 5), tx(6, 5)])
    new_leader = Reply(stream=[checkpoint(9, 9, leader="L2")])
    server = fake([first, new_leader])
    servers.append(server)
    with pytest.raises(LeaderChanged) as changed:
        take(server, 3, after=0, durable=False)
    assert changed.value.version == 5


def test_async_subscribe_resumes_and_detects_gaps(servers):
    server = fake([Reply(stream=[tx(5, 3), tx(7, 5)]), Reply(stream=[tx(9, 7), tx(12, 10)])])
    servers.append(server)

    async def scenario():
        seen = []
        async with AsyncClient(server.url, backoff=FAST, subscribe_backoff=FAST) as client:
            with pytest.raises(StoatError, match="gap"):
                async for event in client.subscribe(after=3):
                    seen.append(event.version)
        return seen

    assert asyncio.run(scenario()) == [5, 7, 9]
    assert [q["after"] for q in subscribe_queries(server)] == [["3"], ["7"]]
