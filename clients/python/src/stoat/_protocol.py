"""The wire format of API.md: request bodies, answers to results or exceptions,
and the retry timing. Pure functions shared by ``Client`` and ``AsyncClient``;
no IO happens here."""

from __future__ import annotations

import base64
import json
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

import httpx

from .errors import (
    Conflict,
    LeaderChanged,
    NotCommitted,
    NotFound,
    StoatError,
    TooOld,
    VersionTooOld,
)
from .types import (
    Checkpoint,
    CommitResult,
    Delete,
    Operation,
    Policy,
    RangeDelete,
    RetentionList,
    Status,
    TransactionEvent,
    Version,
    Write,
)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Statuses that mean "not accepted, try again later": the request was not acted on.
RETRYABLE_STATUSES = (429, 503)


def b64(data: bytes) -> str:
    """Standard base64 with padding, as API.md requires."""
    return base64.b64encode(bytes(data)).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def new_request_id() -> str:
    return str(uuid.uuid4())


def check_request_id(request_id: str) -> str:
    if not REQUEST_ID_PATTERN.match(request_id):
        raise ValueError(f"request_id {request_id!r}: must be 1-128 characters of [A-Za-z0-9._:-]")
    return request_id


class TransactionBuilder:
    """A transaction under construction: preconditions, then operations.

    Keys and values are bytes. A precondition's ``version`` defaults to the
    transaction's ``read_version``.
    """

    def __init__(self, read_version: Optional[int] = None, leader_id: Optional[str] = None) -> None:
        self.read_version = read_version
        self.leader_id = leader_id
        self.preconditions: List[Dict[str, Any]] = []
        self.operations: List[Dict[str, Any]] = []

    def point_read(self, key: bytes, version: Optional[int] = None) -> "TransactionBuilder":
        precondition: Dict[str, Any] = {"type": "point_read", "key": b64(key)}
        self._add_precondition(precondition, version)
        return self

    def range_read(self, begin: bytes, end: bytes, version: Optional[int] = None) -> "TransactionBuilder":
        precondition: Dict[str, Any] = {"type": "range_read", "begin": b64(begin), "end": b64(end)}
        self._add_precondition(precondition, version)
        return self

    def write(self, key: bytes, value: bytes) -> "TransactionBuilder":
        self.operations.append({"type": "write", "key": b64(key), "value": b64(value)})
        return self

    def delete(self, key: bytes) -> "TransactionBuilder":
        self.operations.append({"type": "delete", "key": b64(key)})
        return self

    def range_delete(self, begin: bytes, end: bytes) -> "TransactionBuilder":
        self.operations.append({"type": "range_delete", "begin": b64(begin), "end": b64(end)})
        return self

    def _add_precondition(self, precondition: Dict[str, Any], version: Optional[int]) -> None:
        if version is not None:
            precondition["version"] = version
        elif self.read_version is None:
            raise ValueError("a precondition needs a version: give one or set the transaction's read_version")
        self.preconditions.append(precondition)

    def body(self, request_id: str) -> Dict[str, Any]:
        """The JSON body of ``POST /v1/commit``."""
        body: Dict[str, Any] = {"request_id": request_id}
        if self.leader_id is not None:
            body["leader_id"] = self.leader_id
        if self.read_version is not None:
            body["read_version"] = self.read_version
        body["preconditions"] = self.preconditions
        body["operations"] = self.operations
        return body


def json_body(response: httpx.Response) -> Dict[str, Any]:
    try:
        value = json.loads(response.content)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def error_from(response: httpx.Response) -> StoatError:
    """The exception for an error answer, chosen by status and error code."""
    body = json_body(response)
    status = response.status_code
    code = body.get("error")
    text = body.get("message") or response.text.strip() or response.reason_phrase
    message = f"{code}: {text}" if code else f"HTTP {status}: {text}"
    if "oldest_version" in body and (status == 410 or code == "version_too_old" or status == 409):
        return VersionTooOld(message, oldest_version=int(body["oldest_version"]), status=status, code=code, body=body)
    if status == 404:
        return NotFound(message, status=status, code=code, body=body)
    return StoatError(message, status=status, code=code, body=body)


def commit_result(response: httpx.Response) -> CommitResult:
    """A commit's answer: a ``CommitResult``, or the matching exception."""
    body = json_body(response)
    if response.status_code == 200 and body.get("status") == "committed":
        return CommitResult(
            version=int(body["version"]),
            request_id=str(body["request_id"]),
            leader_id=body.get("leader_id"),
            duplicate=bool(body.get("duplicate", False)),
        )
    if response.status_code == 409 and body.get("status") == "not_committed":
        raise not_committed(body, response.status_code)
    raise error_from(response)


def not_committed(body: Dict[str, Any], status: int) -> NotCommitted:
    reason = body.get("reason")
    common: Dict[str, Any] = {
        "version": int(body["version"]),
        "request_id": str(body.get("request_id", "")),
        "leader_id": body.get("leader_id"),
        "status": status,
        "code": "not_committed",
        "body": body,
    }
    if reason == "conflict":
        conflicts = [int(index) for index in body.get("conflicts", [])]
        return Conflict(f"not committed: preconditions {conflicts} conflict", conflicts=conflicts, **common)
    if reason == "too_old":
        return TooOld("not committed: a precondition is older than the conflict window", **common)
    if reason == "leader_changed":
        return LeaderChanged("not committed: the leader changed", **common)
    return NotCommitted(f"not committed: {reason}", **common)


def version_result(response: httpx.Response) -> Version:
    if response.status_code != 200:
        raise error_from(response)
    body = json_body(response)
    return Version(version=int(body["version"]), leader_id=str(body["leader_id"]))


def status_result(response: httpx.Response) -> Status:
    if response.status_code != 200:
        raise error_from(response)
    body = json_body(response)
    return Status(status=str(body["status"]), version=int(body["version"]), request_id=str(body.get("request_id", "")))


def policy_result(response: httpx.Response) -> Policy:
    if response.status_code != 200:
        raise error_from(response)
    return policy(json_body(response))


def policy(body: Dict[str, Any]) -> Policy:
    return Policy(policy_id=str(body["policy_id"]), version=int(body["version"]), updated_at=str(body.get("updated_at", "")))


def retention_list_result(response: httpx.Response) -> RetentionList:
    if response.status_code != 200:
        raise error_from(response)
    body = json_body(response)
    return RetentionList(
        policies=[policy(item) for item in body.get("policies", [])],
        oldest_version=int(body["oldest_version"]),
    )


def empty_result(response: httpx.Response) -> None:
    if response.status_code not in (200, 204):
        raise error_from(response)


def status_params(request_id: str, min_version: Optional[int]) -> Dict[str, Union[str, int]]:
    params: Dict[str, Union[str, int]] = {"request_id": request_id}
    if min_version is not None:
        params["min_version"] = min_version
    return params


def policy_path(policy_id: str) -> str:
    if not policy_id:
        raise ValueError("policy_id must not be empty")
    from urllib.parse import quote

    return "/v1/retention/" + quote(policy_id, safe="")


def operation(item: Dict[str, Any]) -> Operation:
    kind = item.get("type")
    if kind == "write":
        return Write(key=unb64(item["key"]), value=unb64(item["value"]))
    if kind == "delete":
        return Delete(key=unb64(item["key"]))
    if kind == "range_delete":
        return RangeDelete(begin=unb64(item["begin"]), end=unb64(item["end"]))
    raise StoatError(f"subscribe: unknown operation type {kind!r}")


def transaction_event(data: str) -> TransactionEvent:
    try:
        body = json.loads(data)
        return TransactionEvent(
            version=int(body["version"]),
            prev_version=int(body["prev_version"]),
            request_id=str(body.get("request_id", "")),
            leader_id=str(body.get("leader_id", "")),
            timestamp=str(body.get("timestamp", "")),
            operations=[operation(item) for item in body.get("operations", [])],
        )
    except (ValueError, KeyError, TypeError) as error:
        raise StoatError(f"subscribe: malformed transaction event: {error}") from None


def checkpoint_event(data: str) -> Checkpoint:
    try:
        body = json.loads(data)
        return Checkpoint(
            committed_version=int(body["committed_version"]),
            durable_version=int(body["durable_version"]),
            leader_id=str(body.get("leader_id", "")),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise StoatError(f"subscribe: malformed checkpoint event: {error}") from None


def stream_error(data: str) -> StoatError:
    """The exception for an ``event: error`` in a subscription."""
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("error")
    text = body.get("message") or data
    if code == "version_too_old":
        oldest = int(body.get("oldest_version", 0))
        return VersionTooOld(
            f"version_too_old: retention overtook the subscription; oldest version is {oldest}",
            oldest_version=oldest,
            code=code,
            body=body,
        )
    return StoatError(f"{code or 'error'}: {text}", code=code, body=body)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter, bounded in attempts and delay."""

    retries: int = 6
    initial_seconds: float = 0.05
    max_seconds: float = 2.0

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        ceiling = min(self.max_seconds, self.initial_seconds * (2**attempt))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_seconds))
        return delay


def retry_after(response: httpx.Response) -> Optional[float]:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


# Transport errors raised before any byte of the request could have reached
# the server: resending is safe.
NOT_SENT_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"
