"""SigV4 (header and presigned) and SigV2 presigned URLs; wrong keys refused."""

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import make_client

NOT_VERIFIED = "accepts any credentials unless IAM authentication is set up"


@pytest.mark.moto_wrong(NOT_VERIFIED)
def test_wrong_secret_rejected(server, bucket):
    client = make_client(server.url, secret_key="not-the-secret", retries=1)
    with pytest.raises(ClientError) as excinfo:
        client.list_objects_v2(Bucket=bucket)
    assert excinfo.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert excinfo.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


@pytest.mark.moto_wrong(NOT_VERIFIED)
def test_unknown_access_key_rejected(server, bucket):
    client = make_client(server.url, access_key="AKIDONTKNOWYOU", retries=1)
    with pytest.raises(ClientError) as excinfo:
        client.get_object(Bucket=bucket, Key="k")
    assert excinfo.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.moto_wrong(NOT_VERIFIED)
def test_anonymous_rejected(server, bucket):
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{server.url}/{bucket}?list-type=2")
    assert excinfo.value.code == 403


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_presigned_urls(server, s3, bucket, signature_version):
    key = "pre signed/ü+%2F"
    s3.put_object(Bucket=bucket, Key=key, Body=b"presigned body")
    client = make_client(server.url, signature_version=signature_version)
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert urllib.request.urlopen(url).read() == b"presigned body"
    put_url = client.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "uploaded"}, ExpiresIn=300)
    # No Content-Type: the URL was signed without one (urllib would add one).
    parts = urllib.parse.urlsplit(put_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("PUT", f"{parts.path}?{parts.query}", body=b"via presigned put")
    response = connection.getresponse()
    assert response.status == 200, response.read()
    assert s3.get_object(Bucket=bucket, Key="uploaded")["Body"].read() == b"via presigned put"


@pytest.mark.moto_wrong(NOT_VERIFIED)
@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_tampered_or_expired_presigned_urls_rejected(server, s3, bucket, signature_version):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    client = make_client(server.url, signature_version=signature_version)
    url = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=300)
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url.replace("/k?", "/other?"))
    assert excinfo.value.code == 403
    expired = client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=1)
    # Expiry is about time itself: the URL (second precision) must age.
    time.sleep(2.1)
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(expired)
    assert excinfo.value.code == 403
    assert b"expired" in excinfo.value.read()
