"""PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject;
odd keys; ranges; read preconditions; digests and checksums."""

import base64
import datetime
import hashlib
import zlib

import pytest
from botocore.exceptions import ClientError

from test_buckets import error_of

ODD_KEYS = [
    "plus+sign",
    "space in key",
    "percent%2Fslash",
    "double//slash",
    "//leading",
    "trailing/",
    "unicode/ü/日本語/🎉",
    "query?and#hash",
    "xml&<>\"'chars",
    "~!@$^*()[]{}|;:,.=",
    "a" * 1024,
]


@pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
def test_odd_keys_round_trip(s3, bucket, key):
    body = ("body of " + key).encode()
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(body)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert [o["Key"] for o in listed["Contents"]] == [key]
    listed_v1 = s3.list_objects(Bucket=bucket, Prefix=key)
    assert [o["Key"] for o in listed_v1["Contents"]] == [key]
    s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 0


def test_put_get_head_metadata(s3, bucket):
    body = bytes(range(256)) * 100
    put = s3.put_object(
        Bucket=bucket,
        Key="k",
        Body=body,
        ContentType="text/x-test",
        Metadata={"color": "blue", "Answer": "42"},
        CacheControl="max-age=60",
        ContentDisposition="attachment",
    )
    assert put["ETag"] == '"%s"' % hashlib.md5(body).hexdigest()
    get = s3.get_object(Bucket=bucket, Key="k")
    assert get["Body"].read() == body
    assert get["ETag"] == put["ETag"]
    assert get["ContentType"] == "text/x-test"
    assert get["Metadata"] == {"color": "blue", "answer": "42"}
    assert get["CacheControl"] == "max-age=60"
    assert get["ContentDisposition"] == "attachment"
    head = s3.head_object(Bucket=bucket, Key="k")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]
    assert isinstance(head["LastModified"], datetime.datetime)


def test_empty_object(s3, bucket):
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == '"d41d8cd98f00b204e9800998ecf8427e"'
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""


def test_missing_key(s3, bucket):
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="nope")
    assert error_of(excinfo) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="nope")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    # Deleting a missing key succeeds.
    assert s3.delete_object(Bucket=bucket, Key="nope")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_overwrite_replaces(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two, longer")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two, longer"


@pytest.mark.parametrize(
    "header,expected,content_range",
    [
        ("bytes=0-9", b"0123456789", "bytes 0-9/26"),
        ("bytes=20-", b"klmnop", "bytes 20-25/26"),
        ("bytes=-4", b"mnop", "bytes 22-25/26"),
        ("bytes=24-100", b"op", "bytes 24-25/26"),
        ("bytes=5-5", b"5", "bytes 5-5/26"),
    ],
)
def test_ranges(s3, bucket, header, expected, content_range):
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789abcdefghijklmnop")
    got = s3.get_object(Bucket=bucket, Key="r", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == expected
    assert got["ContentRange"] == content_range
    assert got["ContentLength"] == len(expected)


def test_unsatisfiable_range(s3, bucket):
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789")
    for header in ["bytes=10-", "bytes=100-200"]:
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=bucket, Key="r", Range=header)
        assert error_of(excinfo) == ("InvalidRange", 416)


def test_read_preconditions(s3, bucket):
    etag = s3.put_object(Bucket=bucket, Key="c", Body=b"data")["ETag"]
    assert s3.get_object(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"data"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert error_of(excinfo) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=1)
    past = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=future)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    assert s3.get_object(Bucket=bucket, Key="c", IfModifiedSince=past)["Body"].read() == b"data"
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="c", IfUnmodifiedSince=past)
    assert error_of(excinfo) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="c", IfMatch='"0000"')
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


@pytest.mark.moto_wrong("does not verify Content-MD5")
def test_content_md5(s3, bucket):
    body = b"checked body"
    good = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="m", Body=body, ContentMD5=good)
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="m2", Body=body, ContentMD5=wrong)
    assert error_of(excinfo) == ("BadDigest", 400)


# CRC32C and CRC64NVME need awscrt in botocore; the Rust unit tests cover them.
@pytest.mark.parametrize("algorithm", ["CRC32", "SHA1", "SHA256"])
def test_flexible_checksums(s3, bucket, algorithm):
    body = b"checksummed " * 1000
    put = s3.put_object(Bucket=bucket, Key="f", Body=body, ChecksumAlgorithm=algorithm)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = s3.get_object(Bucket=bucket, Key="f", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got.get("Checksum" + algorithm)


@pytest.mark.moto_wrong("does not verify x-amz-checksum-* values sent with PutObject")
def test_wrong_checksum_rejected(s3, bucket):
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="bad", Body=b"data", ChecksumCRC32=wrong)
    assert error_of(excinfo) == ("BadDigest", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="bad")


def test_delete_objects(s3, bucket):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"d{i}", Body=b"x")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "d0"}, {"Key": "d1"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d0", "d1", "never"]
    assert not result.get("Errors")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["d2", "d3", "d4"]


@pytest.mark.moto_wrong("ignores Quiet: lists every deleted key anyway")
def test_delete_objects_quiet(s3, bucket):
    for i in range(3):
        s3.put_object(Bucket=bucket, Key=f"q{i}", Body=b"x")
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "q0"}, {"Key": "q1"}], "Quiet": True})
    assert not quiet.get("Deleted")
    assert not quiet.get("Errors")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["q2"]


def test_copy_object(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"copy me", ContentType="text/plain", Metadata={"a": "1"})
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == '"%s"' % hashlib.md5(b"copy me").hexdigest()
    got = s3.get_object(Bucket=bucket, Key="dst")
    assert got["Body"].read() == b"copy me"
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"a": "1"}
    s3.copy_object(
        Bucket=bucket,
        Key="dst2",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        ContentType="application/x-new",
        Metadata={"b": "2"},
    )
    got = s3.head_object(Bucket=bucket, Key="dst2")
    assert got["ContentType"] == "application/x-new"
    assert got["Metadata"] == {"b": "2"}
    odd = "odd key+ü//%2F"
    s3.put_object(Bucket=bucket, Key=odd, Body=b"odd")
    s3.copy_object(Bucket=bucket, Key="from-odd", CopySource={"Bucket": bucket, "Key": odd})
    assert s3.get_object(Bucket=bucket, Key="from-odd")["Body"].read() == b"odd"


def test_copy_errors(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"x")
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert error_of(excinfo) == ("InvalidRequest", 400)
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "missing"})
    assert error_of(excinfo) == ("NoSuchKey", 404)
