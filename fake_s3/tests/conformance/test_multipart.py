"""Multipart uploads: create, upload part, list parts, complete, abort."""

import hashlib

import pytest
from botocore.exceptions import ClientError

from test_buckets import error_of

MIB = 1024 * 1024


def test_multipart_upload(s3, bucket):
    parts_data = [b"a" * (5 * MIB), b"b" * (5 * MIB), b"tail"]
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big", ContentType="application/x-big", Metadata={"m": "1"})
    upload_id = upload["UploadId"]
    etags = []
    for number, data in enumerate(parts_data, start=1):
        etags.append(s3.upload_part(Bucket=bucket, Key="big", UploadId=upload_id, PartNumber=number, Body=data)["ETag"])
    assert etags[0] == '"%s"' % hashlib.md5(parts_data[0]).hexdigest()
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2, 3]
    assert [p["Size"] for p in listed["Parts"]] == [len(d) for d in parts_data]
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="big",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]},
    )
    expected = hashlib.md5(b"".join(hashlib.md5(d).digest() for d in parts_data)).hexdigest() + "-3"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket=bucket, Key="big")
    assert got["Body"].read() == b"".join(parts_data)
    assert got["ETag"] == done["ETag"]
    assert got["ContentType"] == "application/x-big"
    assert got["Metadata"] == {"m": "1"}
    ranged = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={5 * MIB - 2}-{5 * MIB + 1}")
    assert ranged["Body"].read() == b"aabb"


@pytest.mark.moto_wrong("answers UploadPart to an aborted upload with 500 (S3: 404 NoSuchUpload)")
def test_abort(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=upload_id, PartNumber=1, Body=b"x")
    assert upload_id in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=upload_id)
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket=bucket, Key="gone", UploadId=upload_id, PartNumber=2, Body=b"x")
    assert error_of(excinfo) == ("NoSuchUpload", 404)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="gone")


def test_complete_errors(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="bad")["UploadId"]
    bodies = {1: b"1" * (5 * MIB), 2: b"2" * (5 * MIB), 3: b"small", 4: b"last"}
    etags = {
        n: s3.upload_part(Bucket=bucket, Key="bad", UploadId=upload_id, PartNumber=n, Body=body)["ETag"]
        for n, body in bodies.items()
    }
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="bad", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in [1, 3, 4]]},
        )
    assert error_of(excinfo) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="bad", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]},
        )
    assert error_of(excinfo) == ("InvalidPart", 400)
    # Parts may be skipped; only the last may be small.
    s3.complete_multipart_upload(
        Bucket=bucket, Key="bad", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in [1, 2, 4]]},
    )
    assert s3.get_object(Bucket=bucket, Key="bad")["Body"].read() == bodies[1] + bodies[2] + b"last"


@pytest.mark.moto_wrong("completes an upload whose parts are listed out of order")
def test_parts_out_of_order(s3, bucket):
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="order")["UploadId"]
    etags = {
        n: s3.upload_part(Bucket=bucket, Key="order", UploadId=upload_id, PartNumber=n, Body=b"p" * (5 * MIB))["ETag"]
        for n in (1, 2)
    }
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="order", UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in (2, 1)]},
        )
    assert error_of(excinfo) == ("InvalidPartOrder", 400)


def test_upload_part_copy(s3, bucket):
    s3.put_object(Bucket=bucket, Key="source", Body=b"0123456789" * (MIB // 2))
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="copied")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=bucket, Key="copied", UploadId=upload_id, PartNumber=1,
        CopySource={"Bucket": bucket, "Key": "source"}, CopySourceRange="bytes=0-9",
    )
    s3.complete_multipart_upload(
        Bucket=bucket, Key="copied", UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert s3.get_object(Bucket=bucket, Key="copied")["Body"].read() == b"0123456789"
