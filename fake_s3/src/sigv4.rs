//! AWS Signature Version 4 as S3 uses it: verification of header
//! authentication (`Authorization: AWS4-HMAC-SHA256 ...`), presigned URLs
//! (`X-Amz-Signature` in the query) and signed `aws-chunked` payloads; and a
//! signer for tests and tools.
//!
//! Pure: the caller passes the request head and the current time.
//! S3 specifics: the canonical URI is the path as sent (S3 does not
//! normalize it or encode it twice); a path that does not match as sent is
//! also tried re-encoded strictly, for clients that send characters raw
//! which they signed encoded.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stoat_http::RequestHead;

use crate::checksum::sha256_hex;
use crate::error::S3Error;
use crate::url;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
pub const STREAMING_SIGNED: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";
pub const STREAMING_SIGNED_TRAILER: &str = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER";
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Requests signed further than this from the server's clock are refused.
pub const CLOCK_SKEW_SECONDS_MAX: u64 = 15 * 60;
/// The longest validity a presigned URL may ask for (seven days).
pub const PRESIGNED_EXPIRES_SECONDS_MAX: u64 = 7 * 24 * 3600;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key derived from a secret for one day, region and service.
pub fn signing_key(secret_key: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let date_key = hmac(format!("AWS4{secret_key}").as_bytes(), date.as_bytes());
    let region_key = hmac(&date_key, region.as_bytes());
    let service_key = hmac(&region_key, service.as_bytes());
    hmac(&service_key, b"aws4_request")
}

/// An access key and its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
}

/// How the payload of a verified (or unverified) request is to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Nothing to check.
    Unsigned,
    /// The body's SHA-256 must be this (lowercase hex).
    Sha256(String),
    /// An `aws-chunked` body; with `signer`, each chunk's signature is checked.
    Streaming { trailer: bool, signer: Option<ChunkSigner> },
}

/// What chunk signatures are checked against: the seed is the request's
/// own signature, each chunk's signature is the previous one for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSigner {
    pub key: [u8; 32],
    pub amz_date: String,
    pub scope: String,
    pub seed_signature: String,
}

impl ChunkSigner {
    pub fn chunk_signature(&self, previous: &str, data: &[u8]) -> String {
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{previous}\n{}\n{}",
            self.amz_date,
            self.scope,
            sha256_hex(b""),
            sha256_hex(data)
        );
        hex::encode(hmac(&self.key, string_to_sign.as_bytes()))
    }

    pub fn trailer_signature(&self, previous: &str, trailer: &[u8]) -> String {
        let string_to_sign =
            format!("AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{previous}\n{}", self.amz_date, self.scope, sha256_hex(trailer));
        hex::encode(hmac(&self.key, string_to_sign.as_bytes()))
    }
}

/// The payload marker of a request without verification (no keys
/// configured): hashes and streaming framing are still honoured.
pub fn payload_of(head: &RequestHead) -> Payload {
    let marker = head.header("x-amz-content-sha256").and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("");
    payload_from_marker(marker.trim(), None)
}

fn payload_from_marker(marker: &str, signer: Option<ChunkSigner>) -> Payload {
    match marker {
        STREAMING_SIGNED => Payload::Streaming { trailer: false, signer },
        STREAMING_SIGNED_TRAILER => Payload::Streaming { trailer: true, signer },
        STREAMING_UNSIGNED_TRAILER => Payload::Streaming { trailer: true, signer: None },
        hash if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Payload::Sha256(hash.to_ascii_lowercase())
        }
        _ => Payload::Unsigned,
    }
}

/// Verifies a request's signature against the known `credentials`.
/// Returns how its payload must be checked once the body is read.
pub fn verify(head: &RequestHead, credentials: &[Credentials], now_seconds: u64) -> Result<Payload, S3Error> {
    let query = url::parse_query(head.query());
    if query.iter().any(|(name, _)| name == "X-Amz-Algorithm") {
        return verify_presigned(head, &query, credentials, now_seconds);
    }
    let Some(authorization) = head.header("authorization") else {
        return Err(S3Error::AccessDenied("Anonymous access is not allowed; sign requests with SigV4.".into()));
    };
    let authorization = std::str::from_utf8(authorization)
        .map_err(|_| S3Error::AuthorizationHeaderMalformed("The authorization header is not valid UTF-8.".into()))?;
    let Some(fields) = authorization.trim().strip_prefix(ALGORITHM) else {
        return Err(S3Error::InvalidRequest(
            "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.".into(),
        ));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for field in fields.split(',') {
        let (name, value) = field.trim().split_once('=').unwrap_or((field.trim(), ""));
        match name {
            "Credential" => credential = Some(value),
            "SignedHeaders" => signed_headers = Some(value),
            "Signature" => signature = Some(value),
            _ => {}
        }
    }
    let malformed = || S3Error::AuthorizationHeaderMalformed("The authorization header is malformed.".into());
    let (credential, signed_headers, signature) =
        (credential.ok_or_else(malformed)?, signed_headers.ok_or_else(malformed)?, signature.ok_or_else(malformed)?);
    let scope = Scope::parse(credential)?;
    let secret = secret_for(credentials, &scope.access_key)?;
    let amz_date = header_str(head, "x-amz-date")
        .ok_or_else(|| S3Error::AccessDenied("AWS authentication requires a valid x-amz-date header.".into()))?;
    let request_seconds = crate::time::parse_amz_date(amz_date)
        .ok_or_else(|| S3Error::AccessDenied("AWS authentication requires a valid x-amz-date header.".into()))?;
    if request_seconds.abs_diff(now_seconds) > CLOCK_SKEW_SECONDS_MAX {
        return Err(S3Error::RequestTimeTooSkewed);
    }
    let payload_marker = header_str(head, "x-amz-content-sha256").ok_or_else(|| {
        S3Error::InvalidRequest("Missing required header for this request: x-amz-content-sha256".into())
    })?;
    let canonical_query = canonical_query(head.query(), false);
    let key = signing_key(secret, &scope.date, &scope.region, &scope.service);
    let check = SignatureCheck { head, scope: &scope, amz_date, signed_headers, key: &key };
    check.verify(&canonical_query, payload_marker, signature)?;
    let signer = ChunkSigner {
        key,
        amz_date: amz_date.to_string(),
        scope: scope.string(),
        seed_signature: signature.to_ascii_lowercase(),
    };
    Ok(payload_from_marker(payload_marker, Some(signer)))
}

fn verify_presigned(
    head: &RequestHead,
    query: &[(String, String)],
    credentials: &[Credentials],
    now_seconds: u64,
) -> Result<Payload, S3Error> {
    let parameter = |name: &str| query.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str());
    let missing = |name: &str| {
        S3Error::AuthorizationHeaderMalformed(format!("Query-string authentication requires the {name} parameter."))
    };
    if parameter("X-Amz-Algorithm") != Some(ALGORITHM) {
        return Err(S3Error::AuthorizationHeaderMalformed("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"".into()));
    }
    let credential = parameter("X-Amz-Credential").ok_or_else(|| missing("X-Amz-Credential"))?;
    let amz_date = parameter("X-Amz-Date").ok_or_else(|| missing("X-Amz-Date"))?;
    let expires = parameter("X-Amz-Expires").ok_or_else(|| missing("X-Amz-Expires"))?;
    let signed_headers = parameter("X-Amz-SignedHeaders").ok_or_else(|| missing("X-Amz-SignedHeaders"))?;
    let signature = parameter("X-Amz-Signature").ok_or_else(|| missing("X-Amz-Signature"))?;
    let scope = Scope::parse(credential)?;
    let secret = secret_for(credentials, &scope.access_key)?;
    let signed_at = crate::time::parse_amz_date(amz_date).ok_or_else(|| {
        S3Error::AuthorizationHeaderMalformed("X-Amz-Date must be in the ISO8601 basic format.".into())
    })?;
    let expires: u64 =
        expires.parse().ok().filter(|&seconds| seconds <= PRESIGNED_EXPIRES_SECONDS_MAX).ok_or_else(|| {
            S3Error::AuthorizationHeaderMalformed("X-Amz-Expires must be 1 to 604800 seconds.".into())
        })?;
    if signed_at > now_seconds + CLOCK_SKEW_SECONDS_MAX {
        return Err(S3Error::AccessDenied("Request is not valid yet".into()));
    }
    if now_seconds > signed_at + expires {
        return Err(S3Error::AccessDenied("Request has expired".into()));
    }
    let canonical_query = canonical_query(head.query(), true);
    let key = signing_key(secret, &scope.date, &scope.region, &scope.service);
    let check = SignatureCheck { head, scope: &scope, amz_date, signed_headers, key: &key };
    check.verify(&canonical_query, UNSIGNED_PAYLOAD, signature)?;
    Ok(Payload::Unsigned)
}

fn secret_for<'a>(credentials: &'a [Credentials], access_key: &str) -> Result<&'a str, S3Error> {
    credentials
        .iter()
        .find(|c| c.access_key == access_key)
        .map(|c| c.secret_key.as_str())
        .ok_or_else(|| S3Error::InvalidAccessKeyId { access_key: access_key.to_string() })
}

fn header_str<'a>(head: &'a RequestHead, name: &str) -> Option<&'a str> {
    head.header(name).and_then(|value| std::str::from_utf8(value).ok()).map(str::trim)
}

/// `AK/20130524/us-east-1/s3/aws4_request`.
#[derive(Debug)]
struct Scope {
    access_key: String,
    date: String,
    region: String,
    service: String,
}

impl Scope {
    fn parse(credential: &str) -> Result<Scope, S3Error> {
        // The access key may itself not contain '/', so split from the right.
        let parts: Vec<&str> = credential.rsplitn(5, '/').collect();
        match parts.as_slice() {
            ["aws4_request", service, region, date, access_key] if date.len() == 8 => Ok(Scope {
                access_key: (*access_key).to_string(),
                date: (*date).to_string(),
                region: (*region).to_string(),
                service: (*service).to_string(),
            }),
            _ => Err(S3Error::AuthorizationHeaderMalformed(format!(
                "The credential '{credential}' is malformed; expected \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\"."
            ))),
        }
    }

    fn string(&self) -> String {
        format!("{}/{}/{}/aws4_request", self.date, self.region, self.service)
    }
}

struct SignatureCheck<'a> {
    head: &'a RequestHead,
    scope: &'a Scope,
    amz_date: &'a str,
    signed_headers: &'a str,
    key: &'a [u8; 32],
}

impl SignatureCheck<'_> {
    fn verify(&self, canonical_query: &str, payload: &str, signature: &str) -> Result<(), S3Error> {
        let raw_path = self.head.path();
        let mut first_failure = None;
        for path in [raw_path.to_string(), strict_path(raw_path)] {
            let canonical_request = canonical_request(
                self.head.method.as_str(),
                &path,
                canonical_query,
                self.head,
                self.signed_headers,
                payload,
            );
            let string_to_sign = format!(
                "{ALGORITHM}\n{}\n{}\n{}",
                self.amz_date,
                self.scope.string(),
                sha256_hex(canonical_request.as_bytes())
            );
            let expected = hex::encode(hmac(self.key, string_to_sign.as_bytes()));
            if constant_time_eq(expected.as_bytes(), signature.to_ascii_lowercase().as_bytes()) {
                return Ok(());
            }
            first_failure.get_or_insert(S3Error::SignatureDoesNotMatch { string_to_sign, canonical_request });
        }
        Err(first_failure.unwrap_or(S3Error::AccessDenied("signature check failed".into())))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The path decoded and re-encoded segment by segment with SigV4's rules.
fn strict_path(raw_path: &str) -> String {
    raw_path
        .split('/')
        .map(|segment| url::encode_strict(&url::decode(segment).unwrap_or_else(|| segment.to_string())))
        .collect::<Vec<_>>()
        .join("/")
}

/// Query parameters decoded and re-encoded strictly, sorted; for a
/// presigned URL without `X-Amz-Signature`.
pub fn canonical_query(query: Option<&str>, presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = url::decode(name).unwrap_or_else(|| name.to_string());
            let value = url::decode(value).unwrap_or_else(|| value.to_string());
            (url::encode_strict(&name), url::encode_strict(&value))
        })
        .filter(|(name, _)| !(presigned && name == "X-Amz-Signature"))
        .collect();
    pairs.sort();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// The canonical request of SigV4.
pub fn canonical_request(
    method: &str,
    path: &str,
    canonical_query: &str,
    head: &RequestHead,
    signed_headers: &str,
    payload: &str,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str(method);
    out.push('\n');
    out.push_str(if path.is_empty() { "/" } else { path });
    out.push('\n');
    out.push_str(canonical_query);
    out.push('\n');
    for name in signed_headers.split(';') {
        out.push_str(name);
        out.push(':');
        let values: Vec<String> = head
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| canonical_header_value(value))
            .collect();
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(signed_headers);
    out.push('\n');
    out.push_str(payload);
    out
}

/// Trimmed, with runs of spaces collapsed to one.
fn canonical_header_value(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Signs requests, for tests and tools that talk to fake-s3 without an SDK.
pub mod client {
    use super::*;

    /// The headers to add to a request (`x-amz-date`, `x-amz-content-sha256`,
    /// `Authorization`). `headers` are the other headers sent, which are all
    /// signed (`host` must be among them); names in lowercase.
    pub fn sign(
        credentials: &Credentials,
        region: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &[(&str, &str)],
        payload: &str,
        amz_date: &str,
    ) -> Vec<(String, String)> {
        let date = amz_date.get(..8).unwrap_or(amz_date);
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        all.push(("x-amz-date".into(), amz_date.into()));
        all.push(("x-amz-content-sha256".into(), payload.into()));
        all.sort();
        let signed_headers = all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
        let mut canonical = format!("{method}\n{path}\n{}\n", canonical_query(query, false));
        for (name, value) in &all {
            canonical.push_str(&format!("{name}:{}\n", canonical_header_value(value.as_bytes())));
        }
        canonical.push_str(&format!("\n{signed_headers}\n{payload}"));
        let scope = format!("{date}/{region}/s3/aws4_request");
        let string_to_sign = format!("{ALGORITHM}\n{amz_date}\n{scope}\n{}", sha256_hex(canonical.as_bytes()));
        let key = signing_key(&credentials.secret_key, date, region, "s3");
        let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        vec![
            ("x-amz-date".into(), amz_date.into()),
            ("x-amz-content-sha256".into(), payload.into()),
            (
                "Authorization".into(),
                format!(
                    "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                    credentials.access_key
                ),
            ),
        ]
    }

    /// The current time in SigV4's basic format.
    pub fn amz_date_now() -> String {
        let iso = crate::time::iso8601(crate::time::now_ms());
        // 2026-11-21T23:35:31.000Z -> 20261121T233531Z
        format!("{}{}{}T{}{}{}Z", &iso[0..4], &iso[5..7], &iso[8..10], &iso[11..13], &iso[14..16], &iso[17..19])
    }
}

#[cfg(test)]
mod tests;
