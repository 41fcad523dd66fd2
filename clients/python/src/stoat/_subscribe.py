"""The subscriber's bookkeeping, as a pure state machine shared by both clients.

It decides where a (re)connection resumes, checks that ``prev_version``
chains so that nothing was missed, and applies API.md's leader-change rule
for ``durable=false`` streams. The clients feed it events and do the IO.

Positions: ``resume_after`` is the version the stream is known complete up
to (the last transaction received, or a checkpoint's ``durable_version``,
which promises that nothing newer than the last event and up to it is
missing). A checkpoint's ``committed_version`` is never used to resume: on a
``durable=false`` stream, transactions above ``durable_version`` may be lost
with the leader, and a new leader may commit different ones at those versions.
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Optional, Tuple

from .errors import LeaderChanged, StoatError
from .types import Checkpoint, TransactionEvent


class StreamState:
    def __init__(self, after: int, durable: bool, prefix: bool) -> None:
        self.durable = durable
        self.prefix = prefix
        # The stream holds every transaction up to this version.
        self.resume_after = after
        # The last transaction accepted (None until one arrives).
        self.last_transaction: Optional[int] = None
        # Per connection: the `after` sent and the chain's last link.
        self.connection_after = after
        self.chain_last: Optional[int] = None
        self.first_on_connection = True
        # durable=false: transactions delivered but not yet covered by a
        # checkpoint's durable_version, and where to rewind to if they are lost.
        self.unconfirmed: Deque[Tuple[int, str]] = deque()
        self.confirmed_after = after
        self.confirmed_transaction: Optional[int] = None
        # On a reconnection of a durable=false stream: the unconfirmed
        # transactions the server must send again, identical, before new ones.
        self.replay: Deque[Tuple[int, str]] = deque()

    def connect(self) -> int:
        """Starts a (re)connection; returns the ``after`` to ask for."""
        self.first_on_connection = True
        if self.unconfirmed:
            self.replay = deque(self.unconfirmed)
            self.connection_after = self.confirmed_after
            self.chain_last = self.confirmed_transaction
        else:
            self.replay = deque()
            self.connection_after = self.resume_after
            self.chain_last = self.last_transaction
        return self.connection_after

    def on_transaction(self, event: TransactionEvent) -> bool:
        """Checks ``event``; returns whether to deliver it (False: a replayed duplicate)."""
        self._check_chain(event)
        self.chain_last = event.version
        self.first_on_connection = False
        if self.replay:
            expected_version, expected_request_id = self.replay[0]
            if (event.version, event.request_id) != (expected_version, expected_request_id):
                raise self._lost(event.leader_id)
            self.replay.popleft()
            return False
        if not self.durable:
            if not self.unconfirmed:
                self.confirmed_after = self.resume_after
                self.confirmed_transaction = self.last_transaction
            self.unconfirmed.append((event.version, event.request_id))
        self.last_transaction = event.version
        self.resume_after = event.version
        return True

    def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        if self.replay and checkpoint.committed_version >= self.replay[0][0]:
            # The server is past transactions delivered earlier without sending them again.
            raise self._lost(checkpoint.leader_id)
        durable_version = checkpoint.durable_version
        if self.replay:
            return
        if durable_version > self.resume_after:
            self.resume_after = durable_version
        while self.unconfirmed and self.unconfirmed[0][0] <= durable_version:
            self.confirmed_transaction = self.unconfirmed.popleft()[0]
            self.confirmed_after = max(self.confirmed_after, self.confirmed_transaction)
        if self.unconfirmed:
            self.confirmed_after = max(self.confirmed_after, durable_version)

    def _check_chain(self, event: TransactionEvent) -> None:
        prev = event.prev_version
        if event.version <= prev:
            raise StoatError(f"subscribe: transaction {event.version} has prev_version {prev}, not older")
        if not self.first_on_connection:
            expected = self.chain_last
            if prev != expected:
                self._broken_chain(event, f"the previous event was {expected}")
            return
        after = self.connection_after
        if event.version <= after:
            self._broken_chain(event, f"it was asked for transactions after {after}")
        if prev > after:
            self._broken_chain(event, f"the stream resumed after {after}")
        last = self.chain_last
        if last is not None and (prev < last or (not self.prefix and prev != last)):
            self._broken_chain(event, f"the last transaction received was {last}")

    def _broken_chain(self, event: TransactionEvent, why: str) -> None:
        raise StoatError(
            f"subscribe: gap in the stream: transaction {event.version} has prev_version "
            f"{event.prev_version}, but {why}"
        )

    def _lost(self, leader_id: str) -> LeaderChanged:
        version = self.confirmed_after
        return LeaderChanged(
            f"subscribe: the leader changed and transactions after {version} were lost; "
            f"drop what was applied after {version} and subscribe again from it",
            version=version,
            request_id="",
            leader_id=leader_id,
        )
