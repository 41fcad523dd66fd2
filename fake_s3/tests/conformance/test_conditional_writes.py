"""Conditional PUT: If-None-Match: * and If-Match, alone and racing."""

import threading

import pytest
from botocore.exceptions import ClientError

from test_buckets import error_of

WRITERS = 8
ROUNDS = 30


def test_if_none_match_creates_once(s3, bucket):
    s3.put_object(Bucket=bucket, Key="once", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="once", Body=b"second", IfNoneMatch="*")
    assert error_of(excinfo) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="once")["Body"].read() == b"first"


def test_if_match(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="m", Body=b"v1")["ETag"]
    new_etag = s3.put_object(Bucket=bucket, Key="m", Body=b"v2", IfMatch=etag)["ETag"]
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="m", Body=b"v3", IfMatch=etag)
    assert error_of(excinfo) == ("PreconditionFailed", 412)
    assert s3.get_object(Bucket=bucket, Key="m")["Body"].read() == b"v2"
    assert new_etag != etag


def test_if_match_on_missing_key(s3, bucket):
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch='"d41d8cd98f00b204e9800998ecf8427e"')
    assert error_of(excinfo) == ("NoSuchKey", 404)


def race(s3, bucket, key, condition):
    """WRITERS threads put `key` at once under `condition`; returns the
    outcome per writer: "won" or the error code."""
    barrier = threading.Barrier(WRITERS)
    outcomes = [None] * WRITERS

    def writer(index):
        barrier.wait()
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=f"writer {index}".encode(), **condition)
            outcomes[index] = "won"
        except ClientError as error:
            outcomes[index] = error.response["Error"]["Code"]

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_racing_if_none_match_exactly_one_wins(s3, bucket):
    for round_ in range(ROUNDS):
        key = f"race-{round_}"
        outcomes = race(s3, bucket, key, {"IfNoneMatch": "*"})
        assert outcomes.count("won") == 1, (round_, outcomes)
        # S3 may also answer 409 ConditionalRequestConflict to a loser.
        assert all(o in ("won", "PreconditionFailed", "ConditionalRequestConflict") for o in outcomes), outcomes
        winner = outcomes.index("won")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"writer {winner}".encode()


def test_racing_if_match_exactly_one_wins(s3, bucket):
    for round_ in range(ROUNDS // 3):
        key = f"swap-{round_}"
        etag = s3.put_object(Bucket=bucket, Key=key, Body=b"base")["ETag"]
        outcomes = race(s3, bucket, key, {"IfMatch": etag})
        assert outcomes.count("won") == 1, (round_, outcomes)
        winner = outcomes.index("won")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == f"writer {winner}".encode()
