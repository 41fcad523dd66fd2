"""ListObjectsV2 (and V1): paging, delimiter, start-after, byte order, URL encoding."""

import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from test_buckets import error_of


def put_many(s3, bucket, keys):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b""), keys))


@pytest.mark.moto_wrong("does not echo ContinuationToken in the response")
def test_paging_over_1100_keys(s3, bucket):
    keys = [f"key-{i:05d}" for i in range(1100)]
    put_many(s3, bucket, keys)
    first = s3.list_objects_v2(Bucket=bucket)
    assert first["KeyCount"] == 1000 and first["MaxKeys"] == 1000
    assert first["IsTruncated"] is True
    token = first["NextContinuationToken"]
    second = s3.list_objects_v2(Bucket=bucket, ContinuationToken=token)
    assert second["ContinuationToken"] == token
    assert second["KeyCount"] == 100 and second["IsTruncated"] is False
    assert "NextContinuationToken" not in second
    listed = [o["Key"] for o in first["Contents"] + second["Contents"]]
    assert listed == keys
    paged = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 130}):
        assert page["KeyCount"] <= 130
        paged += [o["Key"] for o in page["Contents"]]
    assert paged == keys
    v1 = []
    for page in s3.get_paginator("list_objects").paginate(Bucket=bucket, PaginationConfig={"PageSize": 400}):
        v1 += [o["Key"] for o in page["Contents"]]
    assert v1 == keys


def test_keys_in_byte_order(s3, bucket):
    keys = ["b", "B", "a", "a/", "a0", "ä", "Z", "~", "a b", "a+b", "日本", "\u00ff", "\U0001f389"]
    put_many(s3, bucket, keys)
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(keys, key=lambda k: k.encode())


def test_delimiter_and_prefix(s3, bucket):
    put_many(s3, bucket, ["a/1", "a/2", "a/b/3", "b/1", "c", "d/x/y"])
    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["c"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert top["KeyCount"] == 4
    under_a = s3.list_objects_v2(Bucket=bucket, Delimiter="/", Prefix="a/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/b/"]
    # Common prefixes count against max-keys and page like keys.
    seen_keys, seen_prefixes = [], []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1}
    ):
        assert page["KeyCount"] <= 1
        seen_keys += [o["Key"] for o in page.get("Contents", [])]
        seen_prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    assert (seen_keys, seen_prefixes) == (["c"], ["a/", "b/", "d/"])


def test_start_after_and_max_keys(s3, bucket):
    put_many(s3, bucket, [f"k{i}" for i in range(10)])
    result = s3.list_objects_v2(Bucket=bucket, StartAfter="k4", MaxKeys=3)
    assert [o["Key"] for o in result["Contents"]] == ["k5", "k6", "k7"]
    assert result["StartAfter"] == "k4"
    assert result["IsTruncated"] is True
    exact = s3.list_objects_v2(Bucket=bucket, StartAfter="k6", MaxKeys=3)
    assert [o["Key"] for o in exact["Contents"]] == ["k7", "k8", "k9"]
    assert exact["IsTruncated"] is False


def test_url_encoding_type(s3, bucket):
    key = "dir/a b+c&ü"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # boto3 asks for encoding-type=url and decodes; the key comes back whole.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="dir/")["Contents"]] == [key]
    # Raw: the key in the XML is percent-encoded.
    url = s3.generate_presigned_url(
        "list_objects_v2", Params={"Bucket": bucket, "EncodingType": "url", "Prefix": "dir/"}
    )
    body = urllib.request.urlopen(url).read().decode()
    assert "<EncodingType>url</EncodingType>" in body
    assert "a%20b%2Bc%26%C3%BC</Key>" in body, body


@pytest.mark.moto_wrong("accepts any continuation token")
def test_invalid_continuation_token(s3, bucket):
    with pytest.raises(ClientError) as excinfo:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="!!not a token!!")
    assert error_of(excinfo)[1] == 400
