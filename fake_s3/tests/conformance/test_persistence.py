"""fake-s3 --data-dir: objects survive a restart, even after SIGKILL."""

import signal

import pytest

from conftest import FakeS3Process, make_client

pytestmark = [pytest.mark.fake_only, pytest.mark.own_process]


def test_objects_survive_restart(server, tmp_path):
    first = FakeS3Process("--data-dir", str(tmp_path), "--min-part-bytes", "1")
    try:
        client = make_client(first.url)
        client.create_bucket(Bucket="kept")
        client.create_bucket(Bucket="empty-kept")
        etag = client.put_object(Bucket="kept", Key="dir/ü b+c", Body=b"durable", ContentType="text/plain")["ETag"]
        client.put_object(Bucket="kept", Key="deleted", Body=b"x")
        client.delete_object(Bucket="kept", Key="deleted")
        upload = client.create_multipart_upload(Bucket="kept", Key="mp")["UploadId"]
        part = client.upload_part(Bucket="kept", Key="mp", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
        client.complete_multipart_upload(
            Bucket="kept", Key="mp", UploadId=upload, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]}
        )
    finally:
        first.stop(signal.SIGKILL)
    second = FakeS3Process("--data-dir", str(tmp_path))
    try:
        client = make_client(second.url)
        assert {"kept", "empty-kept"} <= {b["Name"] for b in client.list_buckets()["Buckets"]}
        got = client.get_object(Bucket="kept", Key="dir/ü b+c")
        assert (got["Body"].read(), got["ETag"], got["ContentType"]) == (b"durable", etag, "text/plain")
        assert [o["Key"] for o in client.list_objects_v2(Bucket="kept")["Contents"]] == ["dir/ü b+c", "mp"]
        assert client.get_object(Bucket="kept", Key="mp")["ETag"].endswith('-1"')
    finally:
        second.stop()
