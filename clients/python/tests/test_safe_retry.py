"""A commit whose answer is lost is never resent blindly: the client asks
/v1/status first. A proxy in front of the real binary loses answers on purpose."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from stoat import AsyncClient, Backoff, Client, CommitOutcomeUnknown
from conftest import DEADLINE_SECONDS
from helpers import LossyProxy

FAST = Backoff(retries=3, initial_seconds=0.01, max_seconds=0.05)


def first_commit(fate: str):
    """A policy: the first commit request gets ``fate``, everything else is forwarded."""
    state = {"commits": 0}

    def decide(method: str, path: str) -> str:
        if method == "POST" and path.startswith("/v1/commit"):
            state["commits"] += 1
            return fate if state["commits"] == 1 else "forward"
        return "forward"

    return decide


def direct_status(server, request_id: str) -> dict:
    return httpx.get(f"{server.url}/v1/status", params={"request_id": request_id}, timeout=DEADLINE_SECONDS).json()


def test_lost_answer_of_an_applied_commit_is_not_resent(server):
    proxy = LossyProxy(server.port, first_commit("lose_answer"))
    with Client(proxy.url, timeout=DEADLINE_SECONDS, backoff=FAST) as client:
        known = client.version().version
        result = client.commit(client.transaction().write(b"k", b"v"), request_id="lost-answer")
    assert result.recovered and result.version == 1 and result.request_id == "lost-answer"
    assert proxy.requests("POST", "/v1/commit") == ["lose_answer"], "the commit was resent"
    status_paths = [p for m, p, _ in proxy.seen if p.startswith("/v1/status")]
    assert status_paths, "the client did not ask /v1/status"
    query = parse_qs(urlparse(status_paths[0]).query)
    assert query == {"request_id": ["lost-answer"], "min_version": [str(known)]}
    assert direct_status(server, "lost-answer") == {"request_id": "lost-answer", "status": "committed", "version": 1}
    assert httpx.get(f"{server.url}/v1/version").json()["version"] == 1
    proxy.close()


def test_commit_that_never_arrived_is_resent_after_status_says_not_committed(server):
    proxy = LossyProxy(server.port, first_commit("drop"))
    with Client(proxy.url, timeout=DEADLINE_SECONDS, backoff=FAST) as client:
        result = client.commit(client.transaction().write(b"k", b"v"), request_id="never-arrived")
    assert not result.recovered and result.version == 1
    decisions = [d for m, p, d in proxy.seen]
    assert decisions[0] == "drop" and proxy.requests("POST", "/v1/commit") == ["drop", "forward"]
    first_status = next(i for i, (m, p, d) in enumerate(proxy.seen) if p.startswith("/v1/status"))
    resend = [i for i, (m, p, d) in enumerate(proxy.seen) if m == "POST"][1]
    assert first_status < resend, "the commit was resent before /v1/status was asked"
    # The resend carries the same request_id.
    assert b'"request_id": "never-arrived"' in proxy.bodies[resend]
    assert httpx.get(f"{server.url}/v1/version").json()["version"] == 1
    proxy.close()


def test_outcome_unknown_when_status_cannot_be_asked(server):
    def decide(method: str, path: str) -> str:
        if method == "POST":
            return "lose_answer"
        return "drop" if path.startswith("/v1/status") else "forward"

    proxy = LossyProxy(server.port, decide)
    with Client(proxy.url, timeout=DEADLINE_SECONDS, backoff=FAST) as client:
        with pytest.raises(CommitOutcomeUnknown) as unknown:
            client.commit(client.transaction().write(b"k", b"v"), request_id="unknowable")
    assert unknown.value.request_id == "unknowable"
    assert proxy.requests("POST", "/v1/commit") == ["lose_answer"], "resent without knowing the outcome"
    assert len(proxy.requests("GET", "/v1/status")) == FAST.retries + 1
    # It was in fact applied: a blind resend would have applied it twice.
    assert direct_status(server, "unknowable")["status"] == "committed"
    proxy.close()


def test_async_client_recovers_the_same_way(server):
    proxy = LossyProxy(server.port, first_commit("lose_answer"))

    async def scenario():
        async with AsyncClient(proxy.url, timeout=DEADLINE_SECONDS, backoff=FAST) as client:
            return await client.commit(client.transaction().write(b"k", b"v"), request_id="async-lost")

    result = asyncio.run(scenario())
    assert result.recovered and result.version == 1
    assert proxy.requests("POST", "/v1/commit") == ["lose_answer"]
    proxy.close()
