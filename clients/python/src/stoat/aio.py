"""``AsyncClient``: the asyncio twin of ``Client``, with the same methods and rules."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator, Dict, Optional, Union

import httpx
from httpx_sse import EventSource, SSEError

from . import _protocol as protocol
from ._protocol import NOT_SENT_ERRORS, RETRYABLE_STATUSES, Backoff, TransactionBuilder
from ._subscribe import StreamState
from .client import DEFAULT_URL, SUBSCRIBE_BACKOFF
from .errors import CommitOutcomeUnknown, NotCommitted, StoatError
from .types import CommitResult, Event, Policy, RetentionList, Status, Version


class AsyncClient:
    """See ``Client``; every method is a coroutine and ``subscribe`` an async iterator."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: Optional[str] = None,
        timeout: float = 10.0,
        *,
        backoff: Backoff = Backoff(),
        subscribe_backoff: Backoff = SUBSCRIBE_BACKOFF,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        headers = {"User-Agent": "stoat-python"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.backoff = backoff
        self.subscribe_backoff = subscribe_backoff
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)
        self._known_version: Optional[int] = None
        self.retention = AsyncRetention(self)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    @property
    def known_version(self) -> Optional[int]:
        return self._known_version

    def _observe(self, version: int) -> None:
        if self._known_version is None or version > self._known_version:
            self._known_version = version

    def transaction(self, read_version: Optional[int] = None, leader_id: Optional[str] = None) -> TransactionBuilder:
        return TransactionBuilder(read_version=read_version, leader_id=leader_id)

    async def version(self) -> Version:
        result = protocol.version_result(await self._request("GET", "/v1/version"))
        self._observe(result.version)
        return result

    async def status(self, request_id: str, min_version: Optional[int] = None) -> Status:
        params = protocol.status_params(request_id, min_version)
        result = protocol.status_result(await self._request("GET", "/v1/status", params=params))
        self._observe(result.version)
        return result

    async def metrics_text(self) -> str:
        response = await self._request("GET", "/metrics")
        if response.status_code != 200:
            raise protocol.error_from(response)
        return response.text

    async def commit(self, transaction: TransactionBuilder, request_id: Optional[str] = None) -> CommitResult:
        """See ``Client.commit``: the same safe-retry rule."""
        request_id = protocol.check_request_id(request_id) if request_id else protocol.new_request_id()
        content = json.dumps(transaction.body(request_id))
        headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
        min_version = self._known_version
        attempt = 0
        while True:
            try:
                response = await self._http.post("/v1/commit", content=content, headers=headers)
            except NOT_SENT_ERRORS as error:
                attempt = await self._pause(attempt, error=error)
                continue
            except httpx.TransportError as error:
                status = await self._settle(request_id, min_version, error)
                if status.committed:
                    return CommitResult(status.version, request_id, None, duplicate=False, recovered=True)
                attempt = await self._pause(attempt, error=error)
                continue
            if response.status_code in RETRYABLE_STATUSES:
                attempt = await self._pause(attempt, response=response)
                continue
            try:
                result = protocol.commit_result(response)
            except NotCommitted as not_committed:
                self._observe(not_committed.version)
                raise
            self._observe(result.version)
            return result

    async def _settle(self, request_id: str, min_version: Optional[int], cause: BaseException) -> Status:
        last_problem = protocol.describe(cause)
        for attempt in range(self.backoff.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff.delay(attempt - 1))
            try:
                params = protocol.status_params(request_id, min_version)
                response = await self._http.get("/v1/status", params=params)
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

    async def _pause(
        self, attempt: int, response: Optional[httpx.Response] = None, error: Optional[BaseException] = None
    ) -> int:
        if attempt >= self.backoff.retries:
            if response is not None:
                raise protocol.error_from(response)
            raise StoatError(f"cannot reach {self.url}: {protocol.describe(error or Exception())}")
        delay = self.backoff.delay(attempt, protocol.retry_after(response) if response is not None else None)
        await asyncio.sleep(delay)
        return attempt + 1

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as error:
                attempt = await self._pause(attempt, error=error)
                continue
            if response.status_code in RETRYABLE_STATUSES:
                attempt = await self._pause(attempt, response=response)
                continue
            return response

    async def subscribe(
        self,
        after: Optional[int] = None,
        durable: bool = True,
        checkpoints: bool = False,
        prefix: Optional[bytes] = None,
        max_reconnects: Optional[int] = None,
    ) -> AsyncIterator[Event]:
        """See ``Client.subscribe``."""
        if after is None:
            after = (await self.version()).version
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
                async with self._http.stream("GET", "/v1/subscribe", params=params, headers=headers) as response:
                    if response.status_code != 200:
                        await response.aread()
                        if response.status_code not in RETRYABLE_STATUSES:
                            raise protocol.error_from(response)
                        problem = protocol.error_from(response).message
                        wait_at_least = protocol.retry_after(response)
                    else:
                        async for sse in EventSource(response).aiter_sse():
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
            await asyncio.sleep(self.subscribe_backoff.delay(min(failures - 1, 16), wait_at_least))


class AsyncRetention:
    """Retention policies for ``AsyncClient``: ``client.retention``."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def put(self, policy_id: str, version: int) -> Policy:
        path = protocol.policy_path(policy_id)
        return protocol.policy_result(await self._client._request("PUT", path, json={"version": version}))

    async def get(self, policy_id: str) -> Policy:
        return protocol.policy_result(await self._client._request("GET", protocol.policy_path(policy_id)))

    async def list(self) -> RetentionList:
        return protocol.retention_list_result(await self._client._request("GET", "/v1/retention/"))

    async def delete(self, policy_id: str) -> None:
        protocol.empty_result(await self._client._request("DELETE", protocol.policy_path(policy_id)))
