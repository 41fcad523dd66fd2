"""CreateBucket, HeadBucket, ListBuckets, DeleteBucket."""

import uuid

import pytest
from botocore.exceptions import ClientError


def error_of(excinfo):
    response = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def test_bucket_lifecycle(s3):
    name = "life-" + uuid.uuid4().hex[:12]
    s3.create_bucket(Bucket=name)
    assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.put_object(Bucket=name, Key="k", Body=b"x")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=name)
    assert error_of(excinfo) == ("BucketNotEmpty", 409)
    s3.delete_object(Bucket=name, Key="k")
    assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_missing_bucket(s3):
    name = "missing-" + uuid.uuid4().hex[:12]
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket=name)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=name)
    assert error_of(excinfo) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=name, Key="k", Body=b"x")
    assert error_of(excinfo) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.list_objects_v2(Bucket=name)
    assert error_of(excinfo) == ("NoSuchBucket", 404)


def test_create_existing_bucket(s3, bucket):
    # In us-east-1 S3 answers 200 to re-creating a bucket you own (legacy);
    # in every other region 409 BucketAlreadyOwnedByYou.
    assert s3.create_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200


@pytest.mark.moto_wrong("accepts bucket names with uppercase letters and underscores")
def test_invalid_bucket_name(s3):
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket="Bad_Name")
    assert error_of(excinfo) == ("InvalidBucketName", 400)


def test_bucket_location(s3, bucket):
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")
