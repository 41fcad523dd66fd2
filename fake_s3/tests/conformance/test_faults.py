"""fake-s3's fault injection, through the admin endpoint and the flags."""

import json
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, ReadTimeoutError

from conftest import FakeS3Process, make_client

pytestmark = pytest.mark.fake_only


def admin(server, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.url}/_fake_s3/{path}", data=data, method=method)
    with urllib.request.urlopen(request) as response:
        text = response.read()
        return json.loads(text) if text else None


@pytest.fixture
def faults(server):
    yield lambda config: admin(server, "PUT", "faults", config)
    admin(server, "DELETE", "faults")


def timed(call):
    start = time.monotonic()
    call()
    return time.monotonic() - start


def test_put_latency_by_admin_endpoint(server, s3, bucket, faults):
    faults({"seed": 1, "rules": [{"operations": ["PutObject"], "latency": {"fixed_ms": 50}}]})
    assert admin(server, "GET", "faults")["rules"][0]["latency"] == {"fixed_ms": 50}
    puts = [timed(lambda: s3.put_object(Bucket=bucket, Key="slow", Body=b"x")) for _ in range(3)]
    assert min(puts) >= 0.050, puts
    gets = [timed(lambda: s3.get_object(Bucket=bucket, Key="slow")["Body"].read()) for _ in range(3)]
    assert min(gets) < 0.050, gets
    stats = admin(server, "GET", "stats")
    assert stats["requests"]["PutObject"] == 3 and stats["delayed"] == 3


def test_error_rates_answer_s3_errors(server, bucket, faults):
    client = make_client(server.url, retries=1)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    faults({"rules": [{"operations": ["GetObject"], "error_rate": 1.0}, {"operations": ["HeadObject"], "slowdown_rate": 1.0}]})
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=bucket, Key="k")
    assert excinfo.value.response["Error"]["Code"] == "InternalError"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    with pytest.raises(ClientError) as excinfo:
        client.head_object(Bucket=bucket, Key="k")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    # Other operations are untouched.
    assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 1


def test_injected_errors_do_not_act(server, s3, bucket, faults):
    client = make_client(server.url, retries=1)
    faults({"rules": [{"operations": ["PutObject"], "error_rate": 1.0}]})
    with pytest.raises(ClientError):
        client.put_object(Bucket=bucket, Key="never", Body=b"x")
    admin(server, "DELETE", "faults")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_seeded_faults_repeat(server, bucket, faults):
    client = make_client(server.url, retries=1)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    config = {"seed": 77, "rules": [{"operations": ["GetObject"], "error_rate": 0.5}]}

    def outcomes():
        faults(config)  # resets the counters: the draws start again
        result = []
        for _ in range(30):
            try:
                client.get_object(Bucket=bucket, Key="k")["Body"].read()
                result.append("ok")
            except ClientError:
                result.append("error")
        return result

    first = outcomes()
    assert first == outcomes()
    assert 5 < first.count("error") < 25, first


def test_dropped_and_stalled_connections(server, bucket, faults):
    client = make_client(server.url, retries=1, read_timeout=1, connect_timeout=2)
    client.put_object(Bucket=bucket, Key="k", Body=b"x")
    faults({"rules": [{"operations": ["GetObject"], "drop_rate": 1.0}]})
    with pytest.raises((ConnectionClosedError, EndpointConnectionError)):
        client.get_object(Bucket=bucket, Key="k")
    faults({"rules": [{"operations": ["GetObject"], "stall_rate": 1.0, "stall_ms": 3000}]})
    with pytest.raises((ReadTimeoutError, ConnectionClosedError)):
        client.get_object(Bucket=bucket, Key="k")
    assert admin(server, "GET", "stats")["stalls"] >= 1


def test_drop_after_acts_then_loses_the_reply(server, s3, bucket, faults):
    client = make_client(server.url, retries=1)
    faults({"rules": [{"operations": ["PutObject"], "drop_after_rate": 1.0}]})
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=bucket, Key="applied", Body=b"landed")
    admin(server, "DELETE", "faults")
    assert s3.get_object(Bucket=bucket, Key="applied")["Body"].read() == b"landed"


def test_bad_fault_config_is_refused(server):
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        admin(server, "PUT", "faults", {"rules": [{"error_rate": 3}]})
    assert excinfo.value.code == 400


@pytest.mark.own_process
def test_latency_flag(server):
    process = FakeS3Process("--latency", "PutObject=50", "--fault-seed", "3")
    try:
        client = make_client(process.url)
        client.create_bucket(Bucket="flagged")
        assert min(timed(lambda: client.put_object(Bucket="flagged", Key="k", Body=b"x")) for _ in range(3)) >= 0.05
        assert min(timed(lambda: client.head_bucket(Bucket="flagged")) for _ in range(3)) < 0.05
    finally:
        process.stop()
