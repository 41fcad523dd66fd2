"""A subscriber that builds a key-value state from Stoat's log.

Stoat stores no values for reading: a service that needs to read subscribes
and applies every transaction, in order, to its own state. The state is
complete up to ``state.version``, which is therefore a valid ``read_version``
for a transaction whose preconditions cover what it read.

    python kv_state.py --url http://127.0.0.1:7474
"""

from __future__ import annotations

import argparse
import threading
from typing import Dict, Optional, Tuple

from stoat import Checkpoint, Client, Delete, RangeDelete, TransactionEvent, Write


class KeyValueState:
    """Key-value state built from the stream; safe to read from other threads."""

    def __init__(self, version: int = 0) -> None:
        self.values: Dict[bytes, bytes] = {}
        self.version = version
        self._changed = threading.Condition()

    def apply(self, event: TransactionEvent) -> None:
        with self._changed:
            for operation in event.operations:
                if isinstance(operation, Write):
                    self.values[operation.key] = operation.value
                elif isinstance(operation, Delete):
                    self.values.pop(operation.key, None)
                elif isinstance(operation, RangeDelete):
                    for key in [k for k in self.values if operation.begin <= k < operation.end]:
                        del self.values[key]
            self.version = event.version
            self._changed.notify_all()

    def caught_up(self, version: int) -> None:
        """A checkpoint: nothing else was committed up to ``version``."""
        with self._changed:
            if version > self.version:
                self.version = version
                self._changed.notify_all()

    def read(self, key: bytes) -> Tuple[Optional[bytes], int]:
        """The value of ``key`` and the version the state is complete up to."""
        with self._changed:
            return self.values.get(key), self.version

    def wait_for(self, version: int, timeout: float = 30.0) -> bool:
        """Waits until the state includes every transaction up to ``version``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.version >= version, timeout)

    def snapshot(self) -> Tuple[Dict[bytes, bytes], int]:
        with self._changed:
            return dict(self.values), self.version


def follow(client: Client, state: KeyValueState, stop: Optional[threading.Event] = None) -> None:
    """Applies the log to ``state`` from ``state.version`` on, until ``stop`` is set."""
    for event in client.subscribe(after=state.version, checkpoints=True):
        if isinstance(event, TransactionEvent):
            state.apply(event)
        elif isinstance(event, Checkpoint):
            state.caught_up(event.durable_version)
        if stop is not None and stop.is_set():
            return


def follow_in_background(url: str, state: KeyValueState) -> Tuple[threading.Thread, threading.Event]:
    """Runs ``follow`` on a daemon thread with its own client; set the event to stop it
    (it stops at the next event or checkpoint, which comes at least every second)."""
    stop = threading.Event()

    def run() -> None:
        with Client(url) as client:
            follow(client, state, stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7474")
    parser.add_argument("--after", type=int, default=0)
    arguments = parser.parse_args()
    state = KeyValueState(arguments.after)
    with Client(arguments.url) as client:
        for event in client.subscribe(after=state.version):
            assert isinstance(event, TransactionEvent)
            state.apply(event)
            print(f"version {state.version}: {len(state.values)} keys")


if __name__ == "__main__":
    main()
