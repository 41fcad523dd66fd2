//! SigV4 verification against the worked examples of Amazon's S3
//! documentation (secret `wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY`), and
//! against the signer of this module.

use stoat_http::{Limits, Progress, RequestParser};

use super::*;

const NOW: u64 = 1_369_353_600; // 20130524T000000Z

fn credentials() -> Vec<Credentials> {
    vec![Credentials {
        access_key: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
    }]
}

fn parse_head(raw: &str) -> RequestParser {
    let mut parser = RequestParser::new(Limits { head_bytes_max: 8192, body_bytes_max: 1 << 20 });
    let mut body = Vec::new();
    let raw = raw.replace('\n', "\r\n");
    let (_, progress) = parser.parse(raw.as_bytes(), &mut body).unwrap();
    assert_ne!(progress, Progress::NeedMore);
    parser
}

fn authorization(signed_headers: &str, signature: &str) -> String {
    format!(
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
         SignedHeaders={signed_headers},Signature={signature}"
    )
}

const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn documented_get_object_with_range() {
    let raw = format!(
        "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n{}\nRange: bytes=0-9\n\
         x-amz-content-sha256: {EMPTY_SHA256}\nx-amz-date: 20130524T000000Z\n\n",
        authorization(
            "host;range;x-amz-content-sha256;x-amz-date",
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        )
    );
    let parser = parse_head(&raw);
    assert_eq!(verify(parser.head(), &credentials(), NOW), Ok(Payload::Sha256(EMPTY_SHA256.into())));
}

#[test]
fn documented_list_objects() {
    let raw = format!(
        "GET /?max-keys=2&prefix=J HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n{}\n\
         x-amz-content-sha256: {EMPTY_SHA256}\nx-amz-date: 20130524T000000Z\n\n",
        authorization(
            "host;x-amz-content-sha256;x-amz-date",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        )
    );
    let parser = parse_head(&raw);
    assert!(verify(parser.head(), &credentials(), NOW).is_ok());
}

#[test]
fn documented_presigned_get() {
    let raw = "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
        &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\n\
        Host: examplebucket.s3.amazonaws.com\n\n";
    let parser = parse_head(raw);
    assert_eq!(verify(parser.head(), &credentials(), NOW + 3600), Ok(Payload::Unsigned));
    // Expired a second after its 86,400 seconds.
    assert_eq!(
        verify(parser.head(), &credentials(), NOW + 86_401),
        Err(S3Error::AccessDenied("Request has expired".into()))
    );
}

#[test]
fn documented_chunk_signatures() {
    let signer = ChunkSigner {
        key: signing_key("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3"),
        amz_date: "20130524T000000Z".into(),
        scope: "20130524/us-east-1/s3/aws4_request".into(),
        seed_signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9".into(),
    };
    let first = signer.chunk_signature(&signer.seed_signature, &[b'a'; 65536]);
    assert_eq!(first, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648");
    let second = signer.chunk_signature(&first, &[b'a'; 1024]);
    assert_eq!(second, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497");
    let last = signer.chunk_signature(&second, b"");
    assert_eq!(last, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9");
}

fn signed_request(credentials: &Credentials, path: &str, query: Option<&str>, amz_date: &str) -> String {
    let headers = [("host", "127.0.0.1:9000"), ("x-amz-meta-note", "  two   spaces ")];
    let signed = client::sign(credentials, "us-west-2", "PUT", path, query, &headers, UNSIGNED_PAYLOAD, amz_date);
    let target = match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    let mut raw = format!("PUT {target} HTTP/1.1\nHost: 127.0.0.1:9000\nx-amz-meta-note:   two   spaces \n");
    for (name, value) in signed {
        raw.push_str(&format!("{name}: {value}\n"));
    }
    raw + "\n"
}

#[test]
fn signer_and_verifier_agree_and_wrong_keys_are_refused() {
    let good = Credentials { access_key: "AK".into(), secret_key: "SK".into() };
    let path = "/bucket/a%20b/%2B/%E2%82%AC";
    let raw = signed_request(&good, path, Some("uploads=&x=a%2Fb"), "20130524T000000Z");
    let parser = parse_head(&raw);
    assert_eq!(verify(parser.head(), std::slice::from_ref(&good), NOW), Ok(Payload::Unsigned));

    let wrong_secret = Credentials { access_key: "AK".into(), secret_key: "other".into() };
    let raw = signed_request(&wrong_secret, path, None, "20130524T000000Z");
    let parser = parse_head(&raw);
    let error = verify(parser.head(), std::slice::from_ref(&good), NOW).unwrap_err();
    assert_eq!(error.code(), "SignatureDoesNotMatch");

    let unknown = Credentials { access_key: "NOBODY".into(), secret_key: "SK".into() };
    let raw = signed_request(&unknown, path, None, "20130524T000000Z");
    let parser = parse_head(&raw);
    assert_eq!(
        verify(parser.head(), std::slice::from_ref(&good), NOW),
        Err(S3Error::InvalidAccessKeyId { access_key: "NOBODY".into() })
    );

    let raw = signed_request(&good, path, None, "20130524T000000Z");
    let parser = parse_head(&raw);
    assert_eq!(verify(parser.head(), std::slice::from_ref(&good), NOW + 3600), Err(S3Error::RequestTimeTooSkewed));
}

#[test]
fn missing_or_malformed_authorization_is_refused_without_panic() {
    let good = credentials();
    for extra in [
        "",
        "Authorization: AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=\n",
        "Authorization: AWS4-HMAC-SHA256\n",
        "Authorization: AWS4-HMAC-SHA256 Credential=x, SignedHeaders=host, Signature=00\n",
        "Authorization: AWS4-HMAC-SHA256 Credential=//////, SignedHeaders=, Signature=\nx-amz-date: 1\n",
    ] {
        let raw = format!("GET / HTTP/1.1\nHost: h\n{extra}\n");
        let parser = parse_head(&raw);
        let error = verify(parser.head(), &good, NOW).unwrap_err();
        assert!(matches!(error.status(), 400 | 403), "{extra}: {error:?}");
    }
    let raw = "GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a HTTP/1.1\nHost: h\n\n";
    let parser = parse_head(raw);
    assert!(verify(parser.head(), &good, NOW).is_err());
}

#[test]
fn canonical_query_sorts_and_encodes() {
    assert_eq!(canonical_query(Some("b=2&a=1&uploads"), false), "a=1&b=2&uploads=");
    assert_eq!(canonical_query(Some("prefix=a%2fb&x=a b"), false), "prefix=a%2Fb&x=a%20b");
    assert_eq!(canonical_query(Some("X-Amz-Signature=1&a=2"), true), "a=2");
}
