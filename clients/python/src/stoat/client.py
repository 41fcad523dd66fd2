"""``Client``: the synchronous client of the Stoat HTTP API (API.md)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Dict, Iterator, Optional, Union

import httpx
from httpx_sse import EventSource, SSEError

from . import _protocol as protocol
from ._protocol import NOT_SENT_ERRORS, RETRYABLE_STATUSES, Backoff, TransactionBuilder
from ._subscribe import StreamState
from .errors import CommitOutcomeUnknown, NotCommitted, StoatError
from .types import CommitResult, Event, Policy, RetentionList, Status, Version

DEFAULT_URL = "http://127.0.0.1:7474"

# Delays between subscription reconnections: they go on until the server is back.
SUBSCRIBE_BACKOFF = Backoff(retries=0, initial_seconds=0.1, max_seconds=5.0)


class Client:
    """A connection pool to one Stoat server.

    ``timeout`` bounds every request (and a subscription's wait for its next
    byte: the server sends a checkpoint at least every second). ``backoff``
    bounds the retries of requests answered 429/503 or that could not connect.
    Thread-safe.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        timeout: float = 10.0,
        *,
        backoff: Backoff = Backoff(),
        subscribe_backoff: Backoff = SUBSCRIBE_BACKOFF,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        headers = {"User-Agent": "stoat-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.backoff = backoff
        self.subscribe_backoff = subscribe_backoff
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._known_version: Optional[int] = None
        self._lock = threading.Lock()
        self.retention = Retention(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def known_version(self) -> Optional[int]:
        """The newest version this client has seen in any answer."""
        return self._known_version

    def _observe(self, version: int) -> None:
        with self._lock:
            if self._known_version is None or version > self._known_version:
                self._known_version = version

    def transaction(self, read_version: Optional[int] = None, leader_id: Optional[str] = None) -> TransactionBuilder:
        """A transaction builder; commit it with ``commit``."""
        return TransactionBuilder(read_version=read_version, leader_id=leader_id)

    def version(self) -> Version:
        result = protocol.version_result(self._request("GET", "/v1/version"))
        self._observe(result.version)
        return result

    def status(self, request_id: str, min_version: Optional[int] = None) -> Status:
        """Whether the commit with ``request_id`` was applied (``GET /v1/status``)."""
        params = protocol.status_params(request_id, min_version)
        result = protocol.status_result(self._request("GET", "/v1/status", params=params))
        self._observe(result.version)
        return result

    def metrics_text(self) -> str:
        """The server's ``/metrics`` (OpenMetrics text)."""
        response = self._request("GET", "/metrics")
        if response.status_code != 200:
            raise protocol.error_from(response)
        return response.text

    def commit(self, transaction: TransactionBuilder, request_id: Optional[str] = None) -> CommitResult:
        """Commits ``transaction``; raises ``Conflict``, ``TooOld`` or ``LeaderChanged``
        when it was not applied.

        Never resends blindly: when the connection is lost after the request may
        have reached the server, the client asks ``/v1/status`` (from the newest
        version it knew before sending) and resends, with the same
        ``request_id``, only when the answer is ``not_committed``. If it cannot
        learn the outcome it raises ``CommitOutcomeUnknown``.
        """
        request_id = protocol.check_request_id(request_id) if request_id else protocol.new_request_id()
        content = json.dumps(transaction.body(request_id))
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        min_version = self._known_version
        attempt = 0
        while True:
            try:
                response = self._http.post("/v1/commit", content=content, headers=headers)
            except NOT_SENT_ERRORS as error:
                attempt = self._pause(attempt, error=error)
                continue
            except httpx.TransportError as error:
                status = self._settle(request_id, min_version, error)
                if status.committed:
                    return CommitResult(status.version, request_id, None, duplicate=False, recovered=True)
                attempt = self._pause(attempt, error=error)
                continue
            if response.status_code in RETRYABLE_STATUSES:
                attempt = self._pause(attempt, response=response)
                continue
            try:
                result = protocol.commit_result(response)
            except NotCommitted as not_committed:
                self._observe(not_committed.version)
                raise
            self._observe(result.version)
            return result

    def _settle(self, request_id: str, min_version: Optional[int], cause: BaseException) -> Status:
        """Asks ``/v1/status`` until it answers; the answer is final for our commit,
        whose connection is closed."""
        last_problem = protocol.describe(cause)
        for attempt in range(self.backoff.retries + 1):
            if attempt:
                time.sleep(self.backoff.delay(attempt - 1))
            try:
                params = protocol.status_params(request_id, min_version)
                response = self._http.get("/v1/status", params=params)
            except httpx.TransportError as error:
                last_problem = protocol.describe(error)
                continue
            if response.status_code == 200:
                status = protocol.status_result(response)
                self._observe(status.version)
                return status
            last_problem = protocol.error_from(response).message
            if response.status_code not in RETRYABLE_STATUSES:
                break
        raise CommitOutcomeUnknown(
            f"commit {request_id}: the answer was lost and /v1/status could not tell ({last_problem}); "
            "it was not resent",
            request_id=request_id,
            min_version=min_version,
        )

    def _pause(
        self, attempt: int, response: Optional[httpx.Response] = None, error: Optional[BaseException] = None
    ) -> int:
        """Sleeps before retry ``attempt`` or raises once the retries are used up."""
        if attempt >= self.backoff.retries:
            if response is not None:
                raise protocol.error_from(response)
            raise StoatError(f"cannot reach {self.url}: {protocol.describe(error or Exception())}")
        delay = self.backoff.delay(attempt, protocol.retry_after(response) if response is not None else None)
        time.sleep(delay)
        return attempt + 1

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An idempotent request, retried on 429/503 and on transport errors."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                attempt = self._pause(attempt, error=error)
                continue
            if response.status_code in RETRYABLE_STATUSES:
                attempt = self._pause(attempt, response=response)
                continue
            return response

    def subscribe(
        self,
        after: Optional[int] = None,
        durable: bool = True,
        checkpoints: bool = False,
        prefix: Optional[bytes] = None,
        max_reconnects: Optional[int] = None,
    ) -> Iterator[Event]:
        """Every transaction with version > ``after`` (default: the current
        version), in order, forever.

        Reconnects with backoff and resumes where it stopped; raises
        ``StoatError`` on a gap in the ``prev_version`` chain, ``VersionTooOld``
        when the history is no longer retained, and, for ``durable=False``,
        ``LeaderChanged`` when transactions it delivered were lost with a leader
        (drop what was applied after ``error.version`` and subscribe from it).
        ``max_reconnects`` bounds consecutive failed connections (default: none).
        """
        if after is None:
            after = self.version().version
        state = StreamState(after, durable, prefix is not None)
        failures = 0
        while True:
            position = state.connect()
            params: Dict[str, Union[str, int]] = {"after": position, "durable": "true" if durable else "false"}
            if prefix is not None:
                params["prefix"] = protocol.b64(prefix)
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if failures or state.last_transaction is not None:
                headers["Last-Event-ID"] = str(position)
            wait_at_least: Optional[float] = None
            try:
                with self._http.stream("GET", "/v1/subscribe", params=params, headers=headers) as response:
                    if response.status_code != 200:
                        response.read()
                        if response.status_code not in RETRYABLE_STATUSES:
                            raise protocol.error_from(response)
                        problem = protocol.error_from(response).message
                        wait_at_least = protocol.retry_after(response)
                    else:
                        for sse in EventSource(response).iter_sse():
                            if sse.event == "transaction":
                                event = protocol.transaction_event(sse.data)
                                if state.on_transaction(event):
                                    failures = 0
                                    yield event
                            elif sse.event == "checkpoint":
                                checkpoint = protocol.checkpoint_event(sse.data)
                                state.on_checkpoint(checkpoint)
                                failures = 0
                                if checkpoints:
                                    yield checkpoint
                            elif sse.event == "error":
                                ended = protocol.stream_error(sse.data)
                                # unavailable (shutdown, storage): reconnect and resume; anything else is final.
                                if ended.code != "unavailable":
                                    raise ended
                                problem = str(ended)
                                break
                        else:
                            problem = "the server ended the stream"
            except httpx.TransportError as error:
                problem = protocol.describe(error)
            except SSEError as error:
                raise StoatError(f"subscribe: {error}") from None
            failures += 1
            if max_reconnects is not None and failures > max_reconnects:
                raise StoatError(f"subscribe: gave up after {failures} failed connections: {problem}")
            time.sleep(self.subscribe_backoff.delay(min(failures - 1, 16), wait_at_least))


class Retention:
    """Retention policies (``/v1/retention/``): ``client.retention``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def put(self, policy_id: str, version: int) -> Policy:
        """Creates or moves a policy; raises ``VersionTooOld`` if ``version`` is already deleted."""
        path = protocol.policy_path(policy_id)
        return protocol.policy_result(self._client._request("PUT", path, json={"version": version}))

    def get(self, policy_id: str) -> Policy:
        """The policy; raises ``NotFound`` if there is none."""
        return protocol.policy_result(self._client._request("GET", protocol.policy_path(policy_id)))

    def list(self) -> RetentionList:
        return protocol.retention_list_result(self._client._request("GET", "/v1/retention/"))

    def delete(self, policy_id: str) -> None:
        """Deletes the policy; raises ``NotFound`` if there is none."""
        protocol.empty_result(self._client._request("DELETE", protocol.policy_path(policy_id)))

