"""Exceptions: every error the client raises is a ``StoatError``."""

from __future__ import annotations

from typing import Any, Dict, List, Optional


class StoatError(Exception):
    """An error from Stoat or on the way to it.

    ``status`` is the HTTP status (``None`` when no answer came), ``code`` the
    API's error code (``"bad_request"``, ``"unavailable"``, ...) when the server
    sent one, and ``body`` the decoded JSON body, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        status: Optional[int] = None,
        code: Optional[str] = None,
        body: Optional[Dict[str, Any]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body if body is not None else {}


class NotCommitted(StoatError):
    """A commit answered ``409 not_committed``; ``version`` is a version to retry from."""

    def __init__(self, message: str, *, version: int, request_id: str, leader_id: Optional[str], **kwargs: Any):
        super().__init__(message, **kwargs)
        self.version = version
        self.request_id = request_id
        self.leader_id = leader_id


class Conflict(NotCommitted):
    """A precondition failed: ``conflicts`` lists the indices of the failed preconditions."""

    def __init__(self, message: str, *, conflicts: List[int], **kwargs: Any):
        super().__init__(message, **kwargs)
        self.conflicts = conflicts


class TooOld(NotCommitted):
    """A precondition's version is older than the server's conflict window."""


class LeaderChanged(NotCommitted):
    """The leader is not the one the request named.

    From a commit: the ``leader_id`` given is not the leader's; nothing was
    applied. From ``subscribe(durable=False)``: transactions received after
    ``version`` were lost with the old leader; drop what was applied from
    them and subscribe again with ``after=version``.
    """


class VersionTooOld(StoatError):
    """The history asked for is no longer retained; ``oldest_version`` is the oldest kept."""

    def __init__(self, message: str, *, oldest_version: int, **kwargs: Any):
        super().__init__(message, **kwargs)
        self.oldest_version = oldest_version


class NotFound(StoatError):
    """``404``: an unknown retention policy (or path)."""


class CommitOutcomeUnknown(StoatError):
    """A commit's answer was lost and ``/v1/status`` could not be asked in time.

    The commit was not resent. Ask ``Client.status(request_id, min_version)``
    later to learn whether it was applied.
    """

    def __init__(self, message: str, *, request_id: str, min_version: Optional[int], **kwargs: Any):
        super().__init__(message, **kwargs)
        self.request_id = request_id
        self.min_version = min_version
