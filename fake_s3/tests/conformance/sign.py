"""A small SigV4 signer for raw requests (aws-chunked bodies, virtual-host
requests): written from the specification, independent of fake-s3's Rust
implementation, so that each checks the other."""

import datetime
import hashlib
import hmac
import urllib.parse

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret, date, region):
    key = _hmac(("AWS4" + secret).encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, "s3")
    return _hmac(key, "aws4_request")


def sign(method, path, query, headers, payload_hash, access_key, secret, region="us-east-1"):
    """Returns headers to add: x-amz-date, x-amz-content-sha256, Authorization,
    plus the seed signature (for signed chunks)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    all_headers = {k.lower(): str(v).strip() for k, v in headers.items()}
    all_headers["x-amz-date"] = amz_date
    all_headers["x-amz-content-sha256"] = payload_hash
    names = sorted(all_headers)
    canonical_headers = "".join(f"{n}:{' '.join(all_headers[n].split())}\n" for n in names)
    pairs = sorted(
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~"))
        for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)
    )
    canonical_query = "&".join(f"{k}={v}" for k, v in pairs)
    signed = ";".join(names)
    canonical = "\n".join([method, path, canonical_query, canonical_headers, signed, payload_hash])
    scope = f"{date}/{region}/s3/aws4_request"
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = signing_key(secret, date, region)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    out = {
        "x-amz-date": amz_date,
        "x-amz-content-sha256": payload_hash,
        "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}",
    }
    return out, (key, amz_date, scope, signature)


def signed_chunks(data, chunk_size, chunk_context):
    """STREAMING-AWS4-HMAC-SHA256-PAYLOAD framing of `data`."""
    key, amz_date, scope, previous = chunk_context
    out = b""
    chunks = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for chunk in chunks:
        string_to_sign = "\n".join(
            ["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, previous, EMPTY_SHA256, hashlib.sha256(chunk).hexdigest()]
        )
        previous = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        out += f"{len(chunk):x};chunk-signature={previous}\r\n".encode() + chunk + b"\r\n"
    return out


def unsigned_chunks(data, chunk_size, trailers):
    out = b""
    for i in range(0, len(data), chunk_size):
        chunk = data[i : i + chunk_size]
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += b"0\r\n"
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    return out + b"\r\n"
