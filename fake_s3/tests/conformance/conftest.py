"""Fixtures of the S3 conformance suite.

Every test runs against each target named in FAKE_S3_TARGETS (default
"fake_s3,fake_s3_disk,moto"): the fake-s3 binary (FAKE_S3_BIN, else
$CARGO_TARGET_DIR/debug/fake-s3) started with SigV4 keys, in memory and
with --data-dir, and moto_server as the reference. A test marked `moto_wrong(reason)` is expected to fail on
moto (xfail) because moto is known to differ from S3 there; `fake_only`
tests use fake-s3 features S3 does not have (faults, restarts).
"""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import botocore.config
import pytest

REPO = Path(__file__).resolve().parents[3]
ACCESS_KEY = "fake-access-key"
SECRET_KEY = "fake-secret-key"
REGION = "us-east-1"


def pytest_configure(config):
    config.addinivalue_line("markers", "moto_wrong(reason): moto is known to differ from S3 here (xfail on moto)")
    config.addinivalue_line("markers", "fake_only: uses fake-s3 features that S3 and moto do not have")
    config.addinivalue_line("markers", "own_process: starts its own fake-s3, so it runs once (with the fake_s3 target)")


def fake_s3_binary():
    explicit = os.environ.get("FAKE_S3_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "fake-s3")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


class FakeS3Process:
    """A fake-s3 binary on a free port; `extra` flags are appended."""

    def __init__(self, *extra, keys=True):
        args = [fake_s3_binary(), "--listen", "127.0.0.1:0"]
        if keys:
            args += ["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY]
        args += list(extra)
        self.process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        line = self.process.stderr.readline()
        if "listening on" not in line:
            self.process.kill()
            raise RuntimeError(f"fake-s3 did not start: {line!r}")
        self.url = line.strip().rsplit(" ", 1)[-1]

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)


class MotoProcess:
    def __init__(self):
        port = free_port()
        moto = Path(sys.executable).parent / "moto_server"
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{port}"

        def up():
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1)
                return True
            except Exception:
                return self.process.poll() is not None

        wait_until(up, what="moto_server")
        if self.process.poll() is not None:
            raise RuntimeError("moto_server exited")

    def stop(self, sig=signal.SIGTERM):
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)


def targets():
    return [t.strip() for t in os.environ.get("FAKE_S3_TARGETS", "fake_s3,fake_s3_disk,moto").split(",") if t.strip()]


@pytest.fixture(scope="session", params=targets())
def server(request, tmp_path_factory):
    if request.param == "fake_s3":
        process = FakeS3Process()
    elif request.param == "fake_s3_disk":
        process = FakeS3Process("--data-dir", str(tmp_path_factory.mktemp("fake-s3-data")))
    elif request.param == "moto":
        process = MotoProcess()
    else:
        raise ValueError(f"unknown target {request.param}")
    process.name = request.param
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def _target_marks(request):
    if "server" not in request.fixturenames:
        return
    name = request.getfixturevalue("server").name
    if name == "moto":
        for mark in request.node.iter_markers("moto_wrong"):
            request.applymarker(pytest.mark.xfail(reason="moto: " + mark.args[0], strict=False))
        if request.node.get_closest_marker("fake_only"):
            pytest.skip("fake-s3 feature")
    if name != "fake_s3" and request.node.get_closest_marker("own_process"):
        pytest.skip("starts its own fake-s3; run with the fake_s3 target")


def make_client(url, access_key=ACCESS_KEY, secret_key=SECRET_KEY, retries=2, **config):
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=REGION,
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": retries, "mode": "standard"},
            max_pool_connections=32,
            **config,
        ),
    )


@pytest.fixture
def s3(server):
    return make_client(server.url)


@pytest.fixture
def bucket(s3):
    name = "test-" + uuid.uuid4().hex[:20]
    s3.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3, name)
    s3.delete_bucket(Bucket=name)


def empty_bucket(s3, name):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
