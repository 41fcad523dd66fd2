"""The read-modify-write example against the real binary. (Its agreement with
the state-building subscriber is in test_live_subscribe_retention.py, which
needs /v1/subscribe.)"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional, Tuple

from stoat import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from read_modify_write import increment  # noqa: E402


class ScriptedReader:
    """A reader that first answers a stale value, then catches up when asked."""

    def __init__(self, stale: Tuple[bytes, int], fresh: Tuple[bytes, int]) -> None:
        self.answer = stale
        self.fresh = fresh
        self.waited_for: List[int] = []

    def read(self, key: bytes) -> Tuple[Optional[bytes], int]:
        return self.answer

    def wait_for(self, version: int, timeout: float = 30.0) -> bool:
        self.waited_for.append(version)
        self.answer = self.fresh
        return True


def test_increment_retries_a_conflict_from_the_version_the_server_names(server):
    with Client(server.url) as client:
        other = client.commit(client.transaction().write(b"counter", b"41"))
        reader = ScriptedReader(stale=(b"5", 0), fresh=(b"41", other.version))
        result = increment(client, reader, b"counter")
        assert reader.waited_for == [other.version], "the stale read conflicted and the reader caught up"
        assert result.version > other.version
        assert client.status(result.request_id).committed


def test_increment_of_a_missing_key_starts_from_zero(server):
    with Client(server.url) as client:
        reader = ScriptedReader(stale=(None, 0), fresh=(None, 0))  # type: ignore[arg-type]
        result = increment(client, reader, b"fresh", by=3)
        assert reader.waited_for == []
        assert result.version == 1
