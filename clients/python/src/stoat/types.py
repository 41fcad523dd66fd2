"""The values the client returns: plain frozen dataclasses, keys and values as bytes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union


@dataclass(frozen=True)
class Version:
    """The answer of ``GET /v1/version``: a safe ``read_version`` and the leader."""

    version: int
    leader_id: str


@dataclass(frozen=True)
class CommitResult:
    """A committed transaction.

    ``duplicate`` is true when the server had already committed this
    ``request_id`` (the original answer). ``recovered`` is true when the answer
    was lost on the way and the outcome was learned from ``/v1/status``; then
    ``leader_id`` is ``None``, because ``/v1/status`` does not report it.
    """

    version: int
    request_id: str
    leader_id: Optional[str]
    duplicate: bool = False
    recovered: bool = False


@dataclass(frozen=True)
class Status:
    """The answer of ``GET /v1/status``.

    ``status`` is ``"committed"`` (at ``version``) or ``"not_committed"``: no
    transaction with this id is in the log from ``min_version`` to ``version``.
    """

    status: str
    version: int
    request_id: str = ""

    @property
    def committed(self) -> bool:
        return self.status == "committed"


@dataclass(frozen=True)
class Write:
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Delete:
    key: bytes


@dataclass(frozen=True)
class RangeDelete:
    """Deletes every key in ``[begin, end)``."""

    begin: bytes
    end: bytes


Operation = Union[Write, Delete, RangeDelete]


@dataclass(frozen=True)
class TransactionEvent:
    """One committed transaction from ``subscribe``.

    ``prev_version`` is the version of the previous transaction in the log (on
    a ``prefix`` stream: of the previous event sent), which the client checks.
    ``timestamp`` is the server's RFC 3339 text.
    """

    version: int
    prev_version: int
    request_id: str
    leader_id: str
    timestamp: str
    operations: List[Operation] = field(default_factory=list)


@dataclass(frozen=True)
class Checkpoint:
    """How far the stream is caught up; yielded with ``subscribe(checkpoints=True)``."""

    committed_version: int
    durable_version: int
    leader_id: str


Event = Union[TransactionEvent, Checkpoint]


@dataclass(frozen=True)
class Policy:
    """A retention policy: the log keeps every transaction with version >= ``version``."""

    policy_id: str
    version: int
    updated_at: str


@dataclass(frozen=True)
class RetentionList:
    """Every retention policy and the oldest version the log still holds."""

    policies: List[Policy]
    oldest_version: int
