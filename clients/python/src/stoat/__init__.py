"""Stoat's Python client: commit transactions, ask their status, subscribe to
the log and manage retention over Stoat's HTTP API."""

from ._protocol import Backoff, TransactionBuilder
from .aio import AsyncClient
from .client import Client, Retention
from .errors import (
    CommitOutcomeUnknown,
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
    Event,
    Operation,
    Policy,
    RangeDelete,
    RetentionList,
    Status,
    TransactionEvent,
    Version,
    Write,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Backoff",
    "Checkpoint",
    "Client",
    "CommitOutcomeUnknown",
    "CommitResult",
    "Conflict",
    "Delete",
    "Event",
    "LeaderChanged",
    "NotCommitted",
    "NotFound",
    "Operation",
    "Policy",
    "RangeDelete",
    "Retention",
    "RetentionList",
    "Status",
    "StoatError",
    "TooOld",
    "TransactionBuilder",
    "TransactionEvent",
    "Version",
    "VersionTooOld",
    "Write",
]
