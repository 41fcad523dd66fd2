//! Building S3 requests: object names to keys under the store's prefix,
//! path-style URLs with S3's percent-encoding, and SigV4 signing with
//! `aws-sigv4` (settings from ../shared/CRATES.md). Pure apart from the
//! clock value passed in.

use std::sync::Arc;
use std::time::SystemTime;

use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

/// Characters S3 leaves unencoded in a query value: the unreserved set.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
/// In a key path `/` also stays as it is.
const KEY_PATH: &AsciiSet = &QUERY_VALUE.remove(b'/');

/// Access keys, from the standard AWS environment variables.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("Credentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

impl Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (both or neither),
    /// `AWS_SESSION_TOKEN` optional.
    pub fn from_env() -> Result<Option<Credentials>, String> {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        match (read("AWS_ACCESS_KEY_ID"), read("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => {
                Ok(Some(Credentials { access_key_id, secret_access_key, session_token: read("AWS_SESSION_TOKEN") }))
            }
            (None, None) => Ok(None),
            _ => Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into()),
        }
    }
}

/// Where objects live: a path-style endpoint, a bucket, a key prefix.
#[derive(Clone, Debug)]
pub struct Target {
    /// `HOST:PORT` as sent in the `Host` header and signed.
    pub host: String,
    pub bucket: String,
    /// Empty, or ends with `/`: object `n` is key `{key_prefix}{n}`.
    pub key_prefix: String,
    pub region: String,
    pub credentials: Option<Credentials>,
}

/// One HTTP request, ready to sign and send.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: &'static str,
    /// Encoded path and query, as sent on the request line.
    pub target: String,
    /// Headers that are signed (besides `host`), lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Arc<Vec<u8>>,
    /// Hex SHA-256 of `body`, computed once per request and reused by
    /// every attempt's signature.
    pub payload_sha256: String,
}

impl Target {
    /// Normalises the URL's prefix: no leading `/`, one trailing `/` unless
    /// empty.
    pub fn key_prefix_from(prefix: &str) -> String {
        let trimmed = prefix.trim_matches('/');
        if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.key_prefix)
    }

    /// The object name of a listed key; `None` for keys outside the prefix.
    pub fn name<'a>(&self, key: &'a str) -> Option<&'a str> {
        key.strip_prefix(self.key_prefix.as_str()).filter(|name| !name.is_empty())
    }

    fn object_path(&self, name: &str) -> String {
        format!("/{}/{}", self.bucket, utf8_percent_encode(&self.key(name), KEY_PATH))
    }

    /// PutObject; `if_absent` adds `If-None-Match: *` (create only).
    pub fn put(&self, name: &str, body: Arc<Vec<u8>>, if_absent: bool) -> Request {
        let headers = if_absent.then(|| ("if-none-match".to_owned(), "*".to_owned()));
        self.request("PUT", self.object_path(name), headers.into_iter().collect(), body)
    }

    /// `range` is inclusive here, as in the `Range` header.
    pub fn get(&self, name: &str, range: Option<(u64, u64)>) -> Request {
        let headers = range.map(|(first, last)| ("range".to_owned(), format!("bytes={first}-{last}")));
        self.request("GET", self.object_path(name), headers.into_iter().collect(), Arc::new(Vec::new()))
    }

    pub fn list(&self, prefix: &str, start_after: Option<&str>, token: Option<&str>, max_keys: usize) -> Request {
        let mut query = vec![("list-type", "2".to_owned()), ("max-keys", max_keys.to_string())];
        query.push(("prefix", self.key(prefix)));
        if let Some(start_after) = start_after {
            query.push(("start-after", self.key(start_after)));
        }
        if let Some(token) = token {
            query.push(("continuation-token", token.to_owned()));
        }
        query.sort();
        let encoded: Vec<String> =
            query.iter().map(|(key, value)| format!("{key}={}", utf8_percent_encode(value, QUERY_VALUE))).collect();
        self.request("GET", format!("/{}?{}", self.bucket, encoded.join("&")), Vec::new(), Arc::new(Vec::new()))
    }

    pub fn delete_objects(&self, names: &[String]) -> Request {
        let keys: Vec<String> = names.iter().map(|name| self.key(name)).collect();
        let body = super::xml::delete_request(&keys);
        let md5 = {
            use base64::Engine as _;
            use md5::Digest as _;
            base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body))
        };
        let headers = vec![("content-md5".to_owned(), md5), ("content-type".to_owned(), "application/xml".to_owned())];
        self.request("POST", format!("/{}?delete=", self.bucket), headers, Arc::new(body))
    }

    fn request(
        &self,
        method: &'static str,
        target: String,
        headers: Vec<(String, String)>,
        body: Arc<Vec<u8>>,
    ) -> Request {
        let payload_sha256 = hex::encode(Sha256::digest(body.as_slice()));
        Request { method, target, headers, body, payload_sha256 }
    }

    /// The request's bytes, signed at `now` when there are credentials.
    pub fn encode(&self, request: &Request, now: SystemTime) -> Result<Vec<u8>, String> {
        let mut headers = request.headers.clone();
        headers.extend(self.signature_headers(request, now)?);
        let mut head = format!("{} {} HTTP/1.1\r\nhost: {}\r\n", request.method, request.target, self.host);
        for (name, value) in &headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if request.method != "GET" || !request.body.is_empty() {
            head.push_str(&format!("content-length: {}\r\n", request.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&request.body);
        Ok(bytes)
    }

    fn signature_headers(&self, request: &Request, now: SystemTime) -> Result<Vec<(String, String)>, String> {
        let Some(credentials) = &self.credentials else {
            return Ok(vec![("x-amz-content-sha256".to_owned(), request.payload_sha256.clone())]);
        };
        let identity: Identity = aws_credential_types::Credentials::new(
            credentials.access_key_id.clone(),
            credentials.secret_access_key.clone(),
            credentials.session_token.clone(),
            None,
            "environment",
        )
        .into();
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("s3")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|error| format!("signing parameters: {error}"))?
            .into();
        let url = format!("http://{}{}", self.host, request.target);
        let mut signed: Vec<(&str, &str)> = vec![("host", self.host.as_str())];
        signed.extend(request.headers.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        let signable = SignableRequest::new(
            request.method,
            url,
            signed.into_iter(),
            SignableBody::Precomputed(request.payload_sha256.clone()),
        )
        .map_err(|error| format!("cannot sign the request: {error}"))?;
        let (instructions, _) = sign(signable, &params).map_err(|error| format!("signing: {error}"))?.into_parts();
        Ok(instructions.headers().map(|(name, value)| (name.to_owned(), value.to_owned())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(prefix: &str) -> Target {
        Target {
            host: "127.0.0.1:9000".into(),
            bucket: "bucket".into(),
            key_prefix: Target::key_prefix_from(prefix),
            region: "us-east-1".into(),
            credentials: None,
        }
    }

    #[test]
    fn names_map_to_keys_under_the_prefix_and_back() {
        assert_eq!(target("").key("log/a"), "log/a");
        assert_eq!(target("/p/q/").key("log/a"), "p/q/log/a");
        let t = target("p");
        assert_eq!(t.name("p/log/a"), Some("log/a"));
        assert_eq!(t.name("other/x"), None);
        assert_eq!(t.name("p/"), None);
    }

    #[test]
    fn paths_and_queries_are_encoded_like_s3() {
        let t = target("a b+c");
        assert_eq!(t.get("log/x~y", Some((0, 9))).target, "/bucket/a%20b%2Bc/log/x~y");
        let list = t.list("log/", Some("log/é"), Some("t/+="), 1000);
        assert_eq!(
            list.target,
            "/bucket?continuation-token=t%2F%2B%3D&list-type=2&max-keys=1000&prefix=a%20b%2Bc%2Flog%2F\
&start-after=a%20b%2Bc%2Flog%2F%C3%A9"
        );
    }

    #[test]
    fn signed_requests_carry_the_signature_headers() {
        let mut t = target("p");
        t.credentials = Some(Credentials {
            access_key_id: "AKID".into(),
            secret_access_key: "secret".into(),
            session_token: Some("token".into()),
        });
        let request = t.put("log/a", Arc::new(b"x".to_vec()), true);
        let text = String::from_utf8(t.encode(&request, SystemTime::now()).unwrap()).unwrap();
        assert!(text.starts_with("PUT /bucket/p/log/a HTTP/1.1\r\nhost: 127.0.0.1:9000\r\n"), "{text}");
        for needle in [
            "if-none-match: *",
            "authorization: AWS4-HMAC-SHA256 Credential=AKID/",
            "x-amz-date: ",
            "x-amz-security-token: token",
            "content-length: 1\r\n\r\nx",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
    }
}
