//! AWS Signature Version 2 (HMAC-SHA1), still what boto3's
//! `generate_presigned_url` produces for S3 by default, as query parameters
//! (`AWSAccessKeyId`, `Signature`, `Expires`) or as `Authorization: AWS
//! AK:signature`. Pure, like `sigv4`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use stoat_http::RequestHead;

use crate::error::S3Error;
use crate::sigv4::Credentials;
use crate::url;

/// Query parameters that are part of the signed resource.
const SUBRESOURCES: &[&str] = &[
    "acl",
    "cors",
    "delete",
    "lifecycle",
    "location",
    "logging",
    "notification",
    "partNumber",
    "policy",
    "requestPayment",
    "response-cache-control",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-content-type",
    "response-expires",
    "restore",
    "tagging",
    "torrent",
    "uploadId",
    "uploads",
    "versionId",
    "versioning",
    "versions",
    "website",
];

/// Whether the request carries a SigV2 signature (query or header).
pub fn is_sigv2(head: &RequestHead, query: &[(String, String)]) -> bool {
    let header = head.header("authorization").is_some_and(|value| value.starts_with(b"AWS "));
    header || query.iter().any(|(name, _)| name == "AWSAccessKeyId")
}

pub fn verify(
    head: &RequestHead,
    query: &[(String, String)],
    credentials: &[Credentials],
    now_seconds: u64,
) -> Result<(), S3Error> {
    let parameter = |name: &str| query.iter().find(|(n, _)| n == name).map(|(_, value)| value.as_str());
    let (access_key, signature, date) = match parameter("AWSAccessKeyId") {
        Some(access_key) => {
            let signature = parameter("Signature").unwrap_or("");
            let expires = parameter("Expires").unwrap_or("");
            let expires_at: u64 = expires
                .parse()
                .map_err(|_| S3Error::AccessDenied("Query-string authentication requires Expires.".into()))?;
            if now_seconds > expires_at {
                return Err(S3Error::AccessDenied("Request has expired".into()));
            }
            (access_key.to_string(), signature.to_string(), expires.to_string())
        }
        None => {
            let value = head.header("authorization").map(String::from_utf8_lossy).unwrap_or_default();
            let fields = value.strip_prefix("AWS ").unwrap_or("");
            let (access_key, signature) = fields
                .trim()
                .split_once(':')
                .ok_or_else(|| S3Error::InvalidArgument("AWS authorization header is invalid.".into()))?;
            // With x-amz-date the Date line is empty (the date is signed as an amz header).
            let date = if head.header("x-amz-date").is_some() { String::new() } else { header(head, "date") };
            (access_key.to_string(), signature.to_string(), date)
        }
    };
    let secret = credentials
        .iter()
        .find(|c| c.access_key == access_key)
        .map(|c| c.secret_key.as_str())
        .ok_or_else(|| S3Error::InvalidAccessKeyId { access_key: access_key.clone() })?;
    // A bucket's resource is `/bucket/`; clients sign a path-style
    // `/bucket` either way, so both are tried.
    let path = head.path();
    let bucket_only = path.len() > 1 && !path[1..].contains('/');
    let resources = if bucket_only { vec![path.to_string(), format!("{path}/")] } else { vec![path.to_string()] };
    let mut first = None;
    for resource in resources {
        let string_to_sign = string_to_sign(head, &date, &resource);
        let mut mac =
            Hmac::<Sha1>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
        mac.update(string_to_sign.as_bytes());
        if BASE64.encode(mac.finalize().into_bytes()) == signature {
            return Ok(());
        }
        first.get_or_insert(string_to_sign);
    }
    Err(S3Error::SignatureDoesNotMatch { string_to_sign: first.unwrap_or_default(), canonical_request: String::new() })
}

fn header(head: &RequestHead, name: &str) -> String {
    head.header(name).map(|value| String::from_utf8_lossy(value).trim().to_string()).unwrap_or_default()
}

/// Method, Content-MD5, Content-Type, date, `x-amz-*` headers, resource.
fn string_to_sign(head: &RequestHead, date: &str, resource: &str) -> String {
    let mut out = format!(
        "{}\n{}\n{}\n{date}\n",
        head.method.as_str(),
        header(head, "content-md5"),
        header(head, "content-type")
    );
    let mut amz: Vec<(String, String)> = head
        .headers()
        .filter(|(name, _)| name.to_ascii_lowercase().starts_with("x-amz-"))
        .map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(value).trim().to_string()))
        .collect();
    amz.sort();
    for (name, value) in amz {
        out.push_str(&format!("{name}:{value}\n"));
    }
    out.push_str(resource);
    let mut subresources: Vec<(String, Option<String>)> = head
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| {
            let (name, value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(url::decode(value).unwrap_or_else(|| value.to_string()))),
                None => (pair, None),
            };
            SUBRESOURCES.contains(&name).then(|| (name.to_string(), value))
        })
        .collect();
    subresources.sort_by(|a, b| a.0.cmp(&b.0));
    for (index, (name, value)) in subresources.iter().enumerate() {
        out.push(if index == 0 { '?' } else { '&' });
        out.push_str(name);
        if let Some(value) = value {
            out.push('=');
            out.push_str(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use stoat_http::{Limits, RequestParser};

    use super::*;

    fn parse(raw: &str) -> RequestParser {
        let mut parser = RequestParser::new(Limits { head_bytes_max: 8192, body_bytes_max: 0 });
        parser.parse(raw.replace('\n', "\r\n").as_bytes(), &mut Vec::new()).unwrap();
        parser
    }

    /// The shape of Amazon's SigV2 query example, with the signature
    /// computed independently (Python's hmac and hashlib).
    #[test]
    fn presigned_query_signature() {
        let credentials = vec![Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        }];
        let target = "/awsexamplebucket1/photos/puppy.jpg?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Expires=1141889120";
        let parser = parse(&format!("GET {target}&Signature=mi%2Bpm7K7iCx46UlaDc8X8pxyzFc%3D HTTP/1.1\nHost: h\n\n"));
        let query = url::parse_query(parser.head().query());
        assert_eq!(
            string_to_sign(parser.head(), "1141889120", parser.head().path()),
            "GET\n\n\n1141889120\n/awsexamplebucket1/photos/puppy.jpg"
        );
        assert_eq!(verify(parser.head(), &query, &credentials, 1_141_889_000), Ok(()));
        assert_eq!(
            verify(parser.head(), &query, &credentials, 1_141_889_121),
            Err(S3Error::AccessDenied("Request has expired".into()))
        );
        let parser = parse(&format!("GET {target}&Signature=AAAA HTTP/1.1\nHost: h\n\n"));
        let query = url::parse_query(parser.head().query());
        assert_eq!(
            verify(parser.head(), &query, &credentials, 1_141_889_000).unwrap_err().code(),
            "SignatureDoesNotMatch"
        );
    }

    #[test]
    fn subresources_are_signed_sorted() {
        let parser = parse("PUT /b/k?uploadId=x%2By&partNumber=2&other=1 HTTP/1.1\nHost: h\nx-amz-meta-A: 1\n\n");
        assert_eq!(
            string_to_sign(parser.head(), "0", parser.head().path()),
            "PUT\n\n\n0\nx-amz-meta-a:1\n/b/k?partNumber=2&uploadId=x+y"
        );
    }
}
