"""Fixtures: the real ``stoat`` binary on a loopback port with a fresh data dir.

The binary is ``$STOAT_BIN``, else ``$CARGO_TARGET_DIR/debug/stoat``, else
``target/debug/stoat`` in the repository (what ``scripts/test`` builds).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List, Optional

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]
DEADLINE_SECONDS = 20.0


def stoat_binary() -> Path:
    if os.environ.get("STOAT_BIN"):
        return Path(os.environ["STOAT_BIN"])
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "stoat"
    return REPO / "target" / "debug" / "stoat"


class StoatServer:
    """One ``stoat serve`` process; ``restart`` keeps the data dir and the port."""

    def __init__(self, data_dir: Path, config: str = "") -> None:
        self.data_dir = data_dir
        self.config_path = data_dir.parent / f"{data_dir.name}-config.toml"
        self.config_path.write_text(config)
        self.process: Optional[subprocess.Popen] = None
        self.port = 0
        self.log: List[str] = []
        self._lines: "queue.Queue[Optional[str]]" = queue.Queue()
        self._started_at_line = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StoatServer":
        binary = stoat_binary()
        if not binary.exists():
            pytest.fail(f"no stoat binary at {binary}: build it with `cargo build` or set STOAT_BIN")
        self._lines = queue.Queue()
        self._started_at_line = len(self.log)
        self.process = subprocess.Popen(
            [
                str(binary),
                "serve",
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "info",
                "--config",
                str(self.config_path),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, args=(self.process, self._lines), daemon=True).start()
        line = self.wait_for_log("listening on http://")
        address = line.split("listening on http://")[1].split()[0]
        self.port = int(address.rsplit(":", 1)[1])
        self.wait_for_log("log recovered; serving")
        return self

    @staticmethod
    def _read_log(process: subprocess.Popen, lines: "queue.Queue[Optional[str]]") -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def wait_for_log(self, needle: str) -> str:
        """Waits for a line of the current process's log containing ``needle``."""
        for line in self.log[self._started_at_line :]:
            if needle in line:
                return line
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no log line with {needle!r}; saw {self.log}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stoat exited before logging {needle!r}; saw {self.log}")
            self.log.append(line)
            if needle in line:
                return line

    def stop(self) -> None:
        """SIGTERM and wait: a clean shutdown."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def crash(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    servers: List[StoatServer] = []

    def make(config: str = "", name: str = "data") -> StoatServer:
        server = StoatServer(tmp_path / name, config)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.crash()


@pytest.fixture
def server(make_server) -> StoatServer:
    return make_server()


@pytest.fixture
def http(server: StoatServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=DEADLINE_SECONDS) as client:
        yield client


def wait_until(condition, what: str, deadline_seconds: float = DEADLINE_SECONDS):
    """Polls ``condition`` until it returns a truthy value, failing after the deadline."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
