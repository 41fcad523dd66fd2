"""An optimistic read-modify-write loop: increment a counter kept in Stoat.

Read the value and the version the reader is complete up to, commit the new
value with a ``point_read`` precondition at that version, and on ``Conflict``
wait until the reader has caught up with the version the server names, then
try again. Nobody can write the key between the read and the commit without
the commit failing, so no update is lost.

The reader is anything with ``read(key) -> (value, version)`` and
``wait_for(version)``; ``kv_state.KeyValueState`` fed by a subscriber is one.

    python read_modify_write.py --url http://127.0.0.1:7474 --key counter --times 10
"""

from __future__ import annotations

import argparse
from typing import Optional, Protocol, Tuple

from stoat import Client, CommitResult, Conflict, TooOld


class Reader(Protocol):
    def read(self, key: bytes) -> Tuple[Optional[bytes], int]: ...

    def wait_for(self, version: int, timeout: float = 30.0) -> bool: ...


def increment(client: Client, reader: Reader, key: bytes, by: int = 1, attempts: int = 100) -> CommitResult:
    """Adds ``by`` to the decimal counter at ``key``; returns the commit."""
    for _ in range(attempts):
        value, read_version = reader.read(key)
        current = int(value.decode()) if value is not None else 0
        transaction = client.transaction(read_version=read_version)
        transaction.point_read(key)
        transaction.write(key, str(current + by).encode())
        try:
            return client.commit(transaction)
        except Conflict as conflict:
            # Someone wrote the key after our read: catch up and retry.
            reader.wait_for(conflict.version)
        except TooOld:
            # Our read is older than the server's conflict window.
            reader.wait_for(client.version().version)
    raise RuntimeError(f"increment of {key!r}: still conflicting after {attempts} attempts")


def main() -> None:
    from kv_state import KeyValueState, follow_in_background

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7474")
    parser.add_argument("--key", default="counter")
    parser.add_argument("--times", type=int, default=1)
    arguments = parser.parse_args()
    state = KeyValueState()
    _, stop = follow_in_background(arguments.url, state)
    with Client(arguments.url) as client:
        state.wait_for(client.version().version)
        for _ in range(arguments.times):
            result = increment(client, state, arguments.key.encode())
            print(f"committed at version {result.version}")
    stop.set()


if __name__ == "__main__":
    main()
