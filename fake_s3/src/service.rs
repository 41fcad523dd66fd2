//! The request handler: where a parsed HTTP request becomes an S3
//! operation. In order: admin paths, bucket and key from the path (or the
//! host, virtual-host style), the operation, injected faults, SigV4, the
//! body (aws-chunked decoding, payload hash, checksums), then the operation
//! itself (`api`, `multipart`). Every error becomes S3's XML error here.
//!
//! Invariant: nothing a client sends makes this panic; every refusal is an
//! `S3Error` answered with its status.

use std::sync::atomic::{AtomicU64, Ordering};

use stoat_http::server::{Body, Handler, Request, Response};
use stoat_http::{HttpError, Method, RequestHead};

use crate::error::S3Error;
use crate::faults::{Faults, Outcome};
use crate::sigv4::{self, Credentials, Payload};
use crate::store::Store;
use crate::{admin, api, aws_chunked, checksum, multipart, sigv2, time, url, xml};

/// S3's limit on key length, in bytes of UTF-8.
pub const KEY_BYTES_MAX: usize = 1024;

/// Settings the handler needs at run time.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub credentials: Vec<Credentials>,
    pub region: String,
    /// Host suffixes for virtual-host style: `<bucket>.<domain>[:port]`.
    pub virtual_host_domains: Vec<String>,
}

#[derive(Debug)]
pub struct Service {
    pub store: Store,
    pub faults: Faults,
    pub settings: ServiceSettings,
    next_request_id: AtomicU64,
}

/// The S3 operations fake-s3 knows, named as S3 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListBuckets,
    CreateBucket,
    HeadBucket,
    DeleteBucket,
    GetBucketLocation,
    ListObjects,
    ListObjectsV2,
    ListMultipartUploads,
    DeleteObjects,
    PutObject,
    CopyObject,
    GetObject,
    HeadObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
    /// A subresource or method fake-s3 does not implement.
    Unsupported,
}

impl Operation {
    pub fn name(self) -> &'static str {
        match self {
            Operation::ListBuckets => "ListBuckets",
            Operation::CreateBucket => "CreateBucket",
            Operation::HeadBucket => "HeadBucket",
            Operation::DeleteBucket => "DeleteBucket",
            Operation::GetBucketLocation => "GetBucketLocation",
            Operation::ListObjects => "ListObjects",
            Operation::ListObjectsV2 => "ListObjectsV2",
            Operation::ListMultipartUploads => "ListMultipartUploads",
            Operation::DeleteObjects => "DeleteObjects",
            Operation::PutObject => "PutObject",
            Operation::CopyObject => "CopyObject",
            Operation::GetObject => "GetObject",
            Operation::HeadObject => "HeadObject",
            Operation::DeleteObject => "DeleteObject",
            Operation::CreateMultipartUpload => "CreateMultipartUpload",
            Operation::UploadPart => "UploadPart",
            Operation::UploadPartCopy => "UploadPartCopy",
            Operation::CompleteMultipartUpload => "CompleteMultipartUpload",
            Operation::AbortMultipartUpload => "AbortMultipartUpload",
            Operation::ListParts => "ListParts",
            Operation::Unsupported => "Unsupported",
        }
    }
}

/// Query parameters that name a subresource fake-s3 does not implement.
const UNSUPPORTED_SUBRESOURCES: &[&str] = &[
    "acl",
    "policy",
    "cors",
    "lifecycle",
    "versioning",
    "versions",
    "tagging",
    "website",
    "logging",
    "notification",
    "replication",
    "encryption",
    "object-lock",
    "retention",
    "legal-hold",
    "torrent",
    "restore",
    "select",
    "accelerate",
    "requestPayment",
    "ownershipControls",
    "publicAccessBlock",
    "attributes",
];

/// A request as the operations see it.
#[derive(Debug)]
pub struct Context<'a> {
    pub head: &'a RequestHead,
    pub query: Vec<(String, String)>,
    pub bucket: String,
    pub key: String,
    pub request_id: String,
    /// The decoded body (aws-chunked framing removed).
    pub body: Vec<u8>,
    /// Trailing headers of an aws-chunked body (lowercase names).
    pub trailers: Vec<(String, String)>,
}

impl Context<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str())
    }

    pub fn has_param(&self, name: &str) -> bool {
        self.query.iter().any(|(n, _)| n == name)
    }

    /// A header as text (trimmed); `None` if absent or not UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name).and_then(|value| std::str::from_utf8(value).ok()).map(str::trim)
    }

    /// A header, or the aws-chunked trailer of that name.
    pub fn header_or_trailer(&self, name: &str) -> Option<&str> {
        self.header(name).or_else(|| self.trailers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()))
    }
}

impl Service {
    pub fn new(store: Store, faults: Faults, settings: ServiceSettings) -> Service {
        Service { store, faults, settings, next_request_id: AtomicU64::new(1) }
    }

    fn request_id(&self) -> String {
        format!("{:016X}", self.next_request_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Bucket and key from the host (virtual-host style) or the path.
    fn locate(&self, head: &RequestHead) -> Result<(String, String), S3Error> {
        let host = head.header("host").and_then(|h| std::str::from_utf8(h).ok()).unwrap_or("");
        let host_name =
            host.rsplit_once(':').map_or(
                host,
                |(name, port)| {
                    if port.bytes().all(|b| b.is_ascii_digit()) {
                        name
                    } else {
                        host
                    }
                },
            );
        let virtual_bucket = self.settings.virtual_host_domains.iter().find_map(|domain| {
            host_name.strip_suffix(domain.as_str()).and_then(|rest| rest.strip_suffix('.')).filter(|b| !b.is_empty())
        });
        let path = head.path();
        let path = path.strip_prefix('/').unwrap_or(path);
        let (bucket, key) = match virtual_bucket {
            Some(bucket) => (bucket.to_string(), path),
            None => {
                let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
                (decode_component(bucket)?, key)
            }
        };
        let key = decode_component(key)?;
        if key.len() > KEY_BYTES_MAX {
            return Err(S3Error::KeyTooLong);
        }
        Ok((bucket, key))
    }

    fn classify(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        query: &[(String, String)],
        head: &RequestHead,
    ) -> Operation {
        let has = |name: &str| query.iter().any(|(n, _)| n == name);
        if UNSUPPORTED_SUBRESOURCES.iter().any(|name| has(name)) {
            return Operation::Unsupported;
        }
        let copy = head.header("x-amz-copy-source").is_some();
        match (method, bucket.is_empty(), key.is_empty()) {
            (Method::Get, true, _) => Operation::ListBuckets,
            (_, true, _) => Operation::Unsupported,
            (Method::Put, false, true) => Operation::CreateBucket,
            (Method::Head, false, true) => Operation::HeadBucket,
            (Method::Delete, false, true) => Operation::DeleteBucket,
            (Method::Get, false, true) if has("location") => Operation::GetBucketLocation,
            (Method::Get, false, true) if has("uploads") => Operation::ListMultipartUploads,
            (Method::Get, false, true) if query.iter().any(|(n, v)| n == "list-type" && v == "2") => {
                Operation::ListObjectsV2
            }
            (Method::Get, false, true) => Operation::ListObjects,
            (Method::Post, false, true) if has("delete") => Operation::DeleteObjects,
            (Method::Put, false, false) if has("partNumber") && has("uploadId") => {
                if copy {
                    Operation::UploadPartCopy
                } else {
                    Operation::UploadPart
                }
            }
            (Method::Put, false, false) if copy => Operation::CopyObject,
            (Method::Put, false, false) => Operation::PutObject,
            (Method::Get, false, false) if has("uploadId") => Operation::ListParts,
            (Method::Get, false, false) => Operation::GetObject,
            (Method::Head, false, false) => Operation::HeadObject,
            (Method::Delete, false, false) if has("uploadId") => Operation::AbortMultipartUpload,
            (Method::Delete, false, false) => Operation::DeleteObject,
            (Method::Post, false, false) if has("uploads") => Operation::CreateMultipartUpload,
            (Method::Post, false, false) if has("uploadId") => Operation::CompleteMultipartUpload,
            _ => Operation::Unsupported,
        }
    }

    fn serve(&self, request: Request<'_>, request_id: String) -> Response {
        let head = request.head;
        let is_head = head.method == Method::Head;
        let (bucket, key) = match self.locate(head) {
            Ok(location) => location,
            Err(error) => return error_response(&error, head.path(), &request_id, is_head),
        };
        let query = url::parse_query(head.query());
        let operation = self.classify(head.method, &bucket, &key, &query, head);
        let decision = self.faults.decide(operation.name());
        let fault_error = match decision.outcome {
            Outcome::Drop | Outcome::Stall => {
                let mut response = Response::new(500);
                response.drop_connection = true;
                response.delay = decision.delay;
                return response;
            }
            Outcome::InternalError => Some(S3Error::InternalError("injected fault".into())),
            Outcome::SlowDown => Some(S3Error::SlowDown),
            Outcome::Proceed | Outcome::DropAfter => None,
        };
        let result = match fault_error {
            Some(error) => Err(error),
            None => {
                let body = std::mem::take(request.body);
                self.authenticate_and_run(head, query, bucket, key, body, operation, &request_id)
            }
        };
        let mut response = match result {
            Ok(response) => response,
            Err(error) => error_response(&error, head.path(), &request_id, is_head),
        };
        response.delay = decision.delay;
        response.drop_connection = decision.outcome == Outcome::DropAfter;
        response
    }

    fn authenticate_and_run(
        &self,
        head: &RequestHead,
        query: Vec<(String, String)>,
        bucket: String,
        key: String,
        body: Vec<u8>,
        operation: Operation,
        request_id: &str,
    ) -> Result<Response, S3Error> {
        let payload = if self.settings.credentials.is_empty() {
            sigv4::payload_of(head)
        } else if sigv2::is_sigv2(head, &query) {
            sigv2::verify(head, &query, &self.settings.credentials, time::now_ms() / 1000)?;
            sigv4::payload_of(head)
        } else {
            sigv4::verify(head, &self.settings.credentials, time::now_ms() / 1000)?
        };
        let (body, trailers) = decode_body(head, body, &payload)?;
        let mut context = Context { head, query, bucket, key, request_id: request_id.to_string(), body, trailers };
        if operation == Operation::Unsupported {
            return Err(unsupported(head.method));
        }
        if !context.bucket.is_empty() && operation != Operation::CreateBucket && operation != Operation::ListBuckets {
            api::validate_bucket_name(&context.bucket)
                .map_err(|_| S3Error::NoSuchBucket { bucket: context.bucket.clone() })?;
        }
        self.run(operation, &mut context)
    }

    fn run(&self, operation: Operation, context: &mut Context<'_>) -> Result<Response, S3Error> {
        let store = &self.store;
        match operation {
            Operation::ListBuckets => api::list_buckets(store),
            Operation::CreateBucket => api::create_bucket(store, context, &self.settings.region),
            Operation::HeadBucket => api::head_bucket(store, context, &self.settings.region),
            Operation::DeleteBucket => api::delete_bucket(store, context),
            Operation::GetBucketLocation => api::bucket_location(store, context, &self.settings.region),
            Operation::ListObjects => api::list_objects(store, context, false),
            Operation::ListObjectsV2 => api::list_objects(store, context, true),
            Operation::DeleteObjects => api::delete_objects(store, context),
            Operation::PutObject => api::put_object(store, context),
            Operation::CopyObject => api::copy_object(store, context),
            Operation::GetObject => api::get_object(store, context, false),
            Operation::HeadObject => api::get_object(store, context, true),
            Operation::DeleteObject => api::delete_object(store, context),
            Operation::ListMultipartUploads => multipart::list_uploads(store, context),
            Operation::CreateMultipartUpload => multipart::create(store, context),
            Operation::UploadPart => multipart::upload_part(store, context),
            Operation::UploadPartCopy => multipart::upload_part_copy(store, context),
            Operation::CompleteMultipartUpload => multipart::complete(store, context),
            Operation::AbortMultipartUpload => multipart::abort(store, context),
            Operation::ListParts => multipart::list_parts(store, context),
            Operation::Unsupported => Err(unsupported(context.head.method)),
        }
    }
}

fn unsupported(method: Method) -> S3Error {
    match method {
        Method::Get | Method::Put | Method::Post | Method::Delete | Method::Head => {
            S3Error::NotImplemented("this operation is not supported by fake-s3".into())
        }
        _ => S3Error::MethodNotAllowed,
    }
}

/// Percent-decodes a path component (`+` stays `+`); not UTF-8 is a 400.
fn decode_component(text: &str) -> Result<String, S3Error> {
    url::decode(text).ok_or_else(|| S3Error::InvalidArgument("The path is not valid UTF-8 once decoded.".into()))
}

/// Trailing headers of an aws-chunked body.
type Trailers = Vec<(String, String)>;

/// Removes aws-chunked framing and checks the payload hash.
fn decode_body(head: &RequestHead, body: Vec<u8>, payload: &Payload) -> Result<(Vec<u8>, Trailers), S3Error> {
    let content_encoding = head.header("content-encoding").map(String::from_utf8_lossy).unwrap_or_default();
    let aws_chunked = content_encoding.split(',').any(|coding| coding.trim().eq_ignore_ascii_case("aws-chunked"));
    match payload {
        Payload::Streaming { signer, .. } => {
            let decoded = aws_chunked::decode(&body, signer.as_ref())?;
            check_decoded_length(head, decoded.data.len())?;
            Ok((decoded.data, decoded.trailers))
        }
        _ if aws_chunked => {
            let decoded = aws_chunked::decode(&body, None)?;
            check_decoded_length(head, decoded.data.len())?;
            Ok((decoded.data, decoded.trailers))
        }
        Payload::Sha256(expected) => {
            if checksum::sha256_hex(&body) != *expected {
                return Err(S3Error::ContentSha256Mismatch);
            }
            Ok((body, Vec::new()))
        }
        Payload::Unsigned => Ok((body, Vec::new())),
    }
}

fn check_decoded_length(head: &RequestHead, length: usize) -> Result<(), S3Error> {
    let declared = head.header("x-amz-decoded-content-length").and_then(|v| std::str::from_utf8(v).ok());
    match declared.map(|v| v.trim().parse::<usize>()) {
        Some(Ok(declared)) if declared != length => Err(S3Error::IncompleteBody),
        Some(Err(_)) => Err(S3Error::InvalidArgument("x-amz-decoded-content-length is not a number".into())),
        _ => Ok(()),
    }
}

/// S3's XML error response (a HEAD response carries only the status).
pub fn error_response(error: &S3Error, resource: &str, request_id: &str, is_head: bool) -> Response {
    let mut response = Response::new(error.status());
    if let S3Error::InvalidRange { size } = error {
        response = response.header("Content-Range", format!("bytes */{size}"));
    }
    if matches!(error, S3Error::SlowDown) {
        response = response.header("Retry-After", "1");
    }
    if is_head {
        return response;
    }
    response
        .header("Content-Type", "application/xml")
        .body(Body::Bytes(xml::error_document(error, resource, request_id)))
}

impl Handler for Service {
    fn handle(&self, request: Request<'_>) -> Response {
        let request_id = self.request_id();
        let response = if request.head.path().starts_with(admin::PREFIX) {
            admin::handle(self, request)
        } else {
            self.serve(request, request_id.clone())
        };
        response
            .header("x-amz-request-id", request_id)
            .header("Date", time::http_date(time::now_ms()))
            .header("Server", "fake-s3")
    }

    fn refuse(&self, error: &HttpError, head: Option<&RequestHead>) -> Response {
        let s3_error = match error {
            HttpError::PayloadTooLarge { .. } => S3Error::EntityTooLarge,
            HttpError::HeadTooLarge { .. } => S3Error::InvalidRequest("request headers too large".into()),
            HttpError::BadRequest(message) => S3Error::InvalidRequest(message.clone()),
        };
        let resource = head.map_or("/", |head| head.path());
        let is_head = head.is_some_and(|head| head.method == Method::Head);
        error_response(&s3_error, resource, &self.request_id(), is_head)
    }
}

#[cfg(test)]
mod tests {
    use stoat_http::{Limits, Progress, RequestParser};

    use super::*;
    use crate::faults::{FaultConfig, SplitMix64};

    fn service(credentials: Vec<Credentials>) -> Service {
        let settings =
            ServiceSettings { credentials, region: "us-east-1".into(), virtual_host_domains: vec!["localhost".into()] };
        let service = Service::new(Store::in_memory(5), Faults::new(FaultConfig::default()), settings);
        service.store.create_bucket("bucket").unwrap();
        service
            .store
            .put_object("bucket", "key", b"0123456789".to_vec(), Default::default(), &Default::default())
            .unwrap();
        service
    }

    fn pick<'a>(random: &mut SplitMix64, items: &[&'a str]) -> &'a str {
        items[(random.next_u64() % items.len() as u64) as usize]
    }

    /// A request assembled from S3-shaped pieces, many of them wrong.
    fn random_request(random: &mut SplitMix64) -> Vec<u8> {
        let method = pick(random, &["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH"]);
        let path = pick(
            random,
            &[
                "/",
                "/bucket",
                "/bucket/key",
                "/bucket/%ff",
                "/bucket/a%2",
                "/nope/k",
                "/Bad_Name/k",
                "/bucket//x",
                "/_fake_s3/faults",
            ],
        );
        let query = pick(
            random,
            &[
                "",
                "?list-type=2&max-keys=x",
                "?list-type=2&continuation-token=%%%",
                "?uploads",
                "?uploadId=zz&partNumber=99999",
                "?delete",
                "?location",
                "?acl",
                "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a/b",
                "?AWSAccessKeyId=x&Expires=y",
            ],
        );
        let headers = [
            "Range: bytes=5-1",
            "Range: bytes=-0",
            "Range: bytes=99-",
            "If-Match: *",
            "If-None-Match: \"x\"",
            "If-Modified-Since: garbage",
            "Content-MD5: ###",
            "x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
            "x-amz-content-sha256: 00",
            "Content-Encoding: aws-chunked",
            "x-amz-decoded-content-length: -1",
            "x-amz-copy-source: /bucket/key",
            "x-amz-copy-source: %",
            "x-amz-copy-source-range: bytes=9-3",
            "x-amz-checksum-crc32: AAAA",
            "x-amz-checksum-algorithm: NOPE",
            "Authorization: AWS4-HMAC-SHA256 Credential=",
            "Authorization: AWS x",
            "x-amz-metadata-directive: MAYBE",
            "Host: bucket.localhost:1",
            "Host: ::1",
        ];
        let mut text = format!("{method} {path}{query} HTTP/1.1\r\n");
        for _ in 0..random.next_u64() % 5 {
            text.push_str(pick(random, &headers));
            text.push_str("\r\n");
        }
        let bodies: [&[u8]; 6] = [
            b"",
            b"<Delete><Object><Key>a</Key></Object></Delete>",
            b"<Complete",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"zz\r\n",
            b"{\"rules\": [{\"error_rate\": 9}]}",
        ];
        let body = bodies[(random.next_u64() % bodies.len() as u64) as usize];
        let mut bytes = format!("{text}Content-Length: {}\r\n\r\n", body.len()).into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }

    /// Thousands of malformed S3 requests: every one is answered with a
    /// status, none panics (the handler is called directly, no catch).
    #[test]
    fn random_requests_never_panic() {
        for credentials in [Vec::new(), vec![Credentials { access_key: "AK".into(), secret_key: "SK".into() }]] {
            let service = service(credentials);
            let mut random = SplitMix64::new(2026);
            for case in 0..3000 {
                let raw = random_request(&mut random);
                let mut parser = RequestParser::new(Limits { head_bytes_max: 8192, body_bytes_max: 1 << 20 });
                let mut body = Vec::new();
                let Ok((_, Progress::Complete)) = parser.parse(&raw, &mut body) else { continue };
                let response = service.handle(Request { head: parser.head(), body: &mut body, peer: None });
                assert!((200..600).contains(&response.status), "case {case}: {}", String::from_utf8_lossy(&raw));
            }
            service.faults.set(FaultConfig::default());
        }
    }
}
