"""Uploads framed by HTTP chunked transfer coding and by aws-chunked
(signed chunks, and unsigned chunks with a trailing checksum), sent raw and
signed with the independent signer in sign.py."""

import base64
import hashlib
import http.client
import urllib.parse
import zlib

import pytest

import sign
from conftest import ACCESS_KEY, SECRET_KEY

DATA = bytes(range(256)) * 700  # 179,200 bytes: several chunks


def send(server, method, path, headers, body_chunks=None, body=None, host=None):
    url = urllib.parse.urlsplit(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    headers = dict(headers)
    headers["Host"] = host or url.netloc
    connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in headers.items():
        connection.putheader(name, value)
    if body_chunks is not None:
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for chunk in body_chunks:
            connection.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        connection.send(b"0\r\n\r\n")
    else:
        connection.putheader("Content-Length", str(len(body or b"")))
        connection.endheaders(body or b"")
    response = connection.getresponse()
    return response.status, response.read()


def signed_headers(server, method, path, extra, payload_hash, host=None):
    host = host or urllib.parse.urlsplit(server.url).netloc
    headers = {"host": host, **extra}
    auth, context = sign.sign(method, path, "", headers, payload_hash, ACCESS_KEY, SECRET_KEY)
    headers.update(auth)
    del headers["host"]
    return headers, context


def test_http_chunked_transfer(server, s3, bucket):
    path = f"/{bucket}/http-chunked"
    headers, _ = signed_headers(server, "PUT", path, {}, "UNSIGNED-PAYLOAD")
    chunks = [DATA[i : i + 10_000] for i in range(0, len(DATA), 10_000)]
    status, body = send(server, "PUT", path, headers, body_chunks=chunks)
    assert status == 200, body
    assert s3.get_object(Bucket=bucket, Key="http-chunked")["Body"].read() == DATA


def test_aws_chunked_unsigned_with_trailing_checksum(server, s3, bucket):
    path = f"/{bucket}/aws-chunked"
    crc = base64.b64encode(zlib.crc32(DATA).to_bytes(4, "big")).decode()
    extra = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(DATA)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    headers, _ = signed_headers(server, "PUT", path, extra, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    body = sign.unsigned_chunks(DATA, 65536, [("x-amz-checksum-crc32", crc)])
    status, response = send(server, "PUT", path, headers, body=body)
    assert status == 200, response
    got = s3.get_object(Bucket=bucket, Key="aws-chunked", ChecksumMode="ENABLED")
    assert got["Body"].read() == DATA
    assert "aws-chunked" not in got.get("ContentEncoding", "")


@pytest.mark.moto_wrong("does not verify a trailing checksum of an aws-chunked body")
def test_aws_chunked_wrong_trailing_checksum_rejected(server, s3, bucket):
    path = f"/{bucket}/aws-chunked-bad"
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    extra = {
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": str(len(DATA)),
        "x-amz-trailer": "x-amz-checksum-crc32",
    }
    headers, _ = signed_headers(server, "PUT", path, extra, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    status, response = send(server, "PUT", path, headers, body=sign.unsigned_chunks(DATA, 65536, [("x-amz-checksum-crc32", wrong)]))
    assert status == 400, response
    assert b"BadDigest" in response


def test_aws_chunked_signed_chunks(server, s3, bucket):
    path = f"/{bucket}/signed-chunks"
    extra = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(DATA))}
    headers, context = signed_headers(server, "PUT", path, extra, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    status, response = send(server, "PUT", path, headers, body=sign.signed_chunks(DATA, 65536, context))
    assert status == 200, response
    assert s3.get_object(Bucket=bucket, Key="signed-chunks")["Body"].read() == DATA


@pytest.mark.moto_wrong("does not verify chunk signatures")
def test_aws_chunked_bad_chunk_signature_rejected(server, s3, bucket):
    path = f"/{bucket}/signed-chunks-bad"
    extra = {"content-encoding": "aws-chunked", "x-amz-decoded-content-length": str(len(DATA))}
    headers, context = signed_headers(server, "PUT", path, extra, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
    body = bytearray(sign.signed_chunks(DATA, 65536, context))
    body[-200] ^= 1  # a byte of the last data chunk
    status, response = send(server, "PUT", path, headers, body=bytes(body))
    assert status == 403, response
    assert b"SignatureDoesNotMatch" in response


@pytest.mark.moto_wrong("does not check the payload against x-amz-content-sha256")
def test_payload_hash_mismatch_rejected(server, bucket):
    path = f"/{bucket}/hashed"
    headers, _ = signed_headers(server, "PUT", path, {}, hashlib.sha256(b"declared").hexdigest())
    status, response = send(server, "PUT", path, headers, body=b"different")
    assert status == 400, response
    assert b"XAmzContentSHA256Mismatch" in response


@pytest.mark.fake_only
def test_virtual_host_style(server, s3, bucket):
    port = urllib.parse.urlsplit(server.url).port
    host = f"{bucket}.localhost:{port}"
    headers, _ = signed_headers(server, "PUT", "/vhost/key", {}, hashlib.sha256(b"vh").hexdigest(), host=host)
    status, response = send(server, "PUT", "/vhost/key", headers, body=b"vh", host=host)
    assert status == 200, response
    assert s3.get_object(Bucket=bucket, Key="vhost/key")["Body"].read() == b"vh"
