"""``stoat-admin`` invoked as the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import List

import httpx
import pytest

from conftest import DEADLINE_SECONDS


def stoat_admin() -> str:
    beside_python = Path(sys.executable).parent / "stoat-admin"
    found = str(beside_python) if beside_python.exists() else shutil.which("stoat-admin")
    if not found:
        pytest.fail("stoat-admin is not installed: pip install ./clients/python")
    return found


def run(url: str, *arguments: str, env_url: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    command: List[str] = [stoat_admin()]
    if env_url:
        env["STOAT_URL"] = url
    else:
        command += ["--url", url]
    return subprocess.run(
        command + list(arguments), capture_output=True, text=True, timeout=DEADLINE_SECONDS * 2, env=env
    )


def commit(url: str, request_id: str) -> dict:
    body = {"request_id": request_id, "operations": [{"type": "write", "key": "aw==", "value": "dg=="}]}
    return httpx.post(f"{url}/v1/commit", json=body, timeout=DEADLINE_SECONDS).json()


def test_version_as_json_and_table(server):
    expected = httpx.get(f"{server.url}/v1/version").json()
    for arguments in (["--json", "version"], ["version", "--json"]):
        result = run(server.url, *arguments)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == expected
    table = run(server.url, "version", env_url=True)
    assert table.returncode == 0, table.stderr
    assert expected["leader_id"] in table.stdout and "version" in table.stdout


def test_status(server):
    committed = commit(server.url, "cli-1")
    result = run(server.url, "--json", "status", "cli-1")
    assert json.loads(result.stdout) == {"request_id": "cli-1", "status": "committed", "version": committed["version"]}
    result = run(server.url, "--json", "status", "cli-1", "--min-version", str(committed["version"] + 0))
    assert json.loads(result.stdout)["status"] == "committed"
    result = run(server.url, "status", "never")
    assert result.returncode == 0 and "not_committed" in result.stdout


def test_metrics_summary(server):
    for index in range(5):
        commit(server.url, f"m{index}")
    result = run(server.url, "--json", "metrics", "--interval", "0.2")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["commits_by_outcome"]["committed"] == 5
    assert summary["commit_rate_per_second"] == 0.0, "nothing was committed during the interval"
    latency = summary["commit_latency_seconds"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"]
    assert summary["batch_transactions_mean"] >= 1
    table = run(server.url, "metrics", "--interval", "0")
    assert table.returncode == 0, table.stderr
    for row in ("commit rate", "commit latency p99", "subscribers", "oldest retained version"):
        assert row in table.stdout


def test_errors_are_one_line_with_exit_code_1(server):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    unreachable = run(f"http://127.0.0.1:{closed_port}", "version")
    assert unreachable.returncode == 1
    assert unreachable.stdout == ""
    lines = unreachable.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach"), unreachable.stderr
    bad = run(server.url, "status", "x", "--min-version", "99")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "bad_request" in lines[0] and "min_version" in lines[0], bad.stderr
    usage = run(server.url, "retention", "set", "p", "not-a-number")
    assert usage.returncode == 2
