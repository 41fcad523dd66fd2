//! fake_s3 in-process for the S3 tests: start it, create a bucket (signed
//! when the server checks signatures), open an `S3Store` on it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use fake_s3::sigv4::{self, Credentials};
use fake_s3::FakeS3;
use stoat::log::s3::{Credentials as StoreCredentials, S3Location, S3Options, S3Store};
use stoat::ops::metrics::S3Metrics;

/// Creates `bucket`; `keys` sign the request when the server checks them.
pub fn create_bucket(s3: &FakeS3, bucket: &str, keys: Option<(&str, &str)>) {
    let host = s3.addr().to_string();
    let path = format!("/{bucket}");
    let empty_sha256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let mut headers = vec![("host".to_string(), host.clone())];
    if let Some((access_key, secret_key)) = keys {
        let credentials = Credentials { access_key: access_key.into(), secret_key: secret_key.into() };
        let signed = [("host", host.as_str())];
        let amz_date = sigv4::client::amz_date_now();
        let added =
            sigv4::client::sign(&credentials, "us-east-1", "PUT", &path, None, &signed, empty_sha256, &amz_date);
        headers.extend(added);
    }
    let mut request = format!("PUT {path} HTTP/1.1\r\ncontent-length: 0\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(s3.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "create bucket: {reply}");
}

pub fn location(s3: &FakeS3, bucket: &str, prefix: &str, keys: Option<(&str, &str)>) -> S3Location {
    S3Location {
        endpoint: s3.url(),
        bucket: bucket.into(),
        prefix: prefix.into(),
        region: "us-east-1".into(),
        credentials: keys.map(|(access_key_id, secret_access_key)| StoreCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }),
    }
}

/// Options for tests: short timeouts and backoffs so that faults resolve fast.
pub fn fast_options() -> S3Options {
    S3Options {
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(30),
        backoff_first: Duration::from_millis(5),
        backoff_max: Duration::from_millis(100),
        attempts_max: 30,
        ..S3Options::default()
    }
}

pub fn open(s3: &FakeS3, bucket: &str, prefix: &str) -> S3Store {
    S3Store::open(location(s3, bucket, prefix, None), fast_options(), S3Metrics::default()).unwrap()
}
