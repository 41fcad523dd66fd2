//! Bucket and object operations: request headers and parameters in, store
//! calls, S3's responses out.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN_BASE64;
use base64::Engine;
use stoat_http::server::{Body, Response};

use crate::checksum::{self, Checksum, ChecksumAlgorithm, ALGORITHMS};
use crate::error::S3Error;
use crate::range::{self, RangeRequest};
use crate::service::Context;
use crate::store::{etag_matches, ListingQuery, NewObject, ObjectMeta, Store, WriteCondition};
use crate::time::{http_date, iso8601, parse_http_date};
use crate::url;
use crate::xml::XmlWriter;

/// Headers stored with an object and returned on GET/HEAD.
const STORED_HEADERS: &[&str] =
    &["cache-control", "content-disposition", "content-encoding", "content-language", "expires"];
const LIST_KEYS_MAX: usize = 1000;
const DELETE_KEYS_MAX: usize = 1000;

pub fn xml_response(status: u16, document: Vec<u8>) -> Response {
    Response::new(status).header("Content-Type", "application/xml").body(Body::Bytes(document))
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// S3's bucket naming rules (the strict, DNS-compatible ones).
pub fn validate_bucket_name(name: &str) -> Result<(), S3Error> {
    let bytes = name.as_bytes();
    let valid = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err();
    if valid {
        Ok(())
    } else {
        Err(S3Error::InvalidBucketName { bucket: name.to_string() })
    }
}

pub fn list_buckets(store: &Store) -> Result<Response, S3Error> {
    let mut writer = XmlWriter::new("ListAllMyBucketsResult");
    writer.open("Owner").element("ID", "fake-s3").element("DisplayName", "fake-s3").close("Owner");
    writer.open("Buckets");
    for (name, created_ms) in store.list_buckets() {
        writer.open("Bucket").element("Name", &name).element("CreationDate", &iso8601(created_ms)).close("Bucket");
    }
    writer.close("Buckets");
    Ok(xml_response(200, writer.finish("ListAllMyBucketsResult")))
}

pub fn create_bucket(store: &Store, context: &Context<'_>, region: &str) -> Result<Response, S3Error> {
    validate_bucket_name(&context.bucket)?;
    if !context.body.trim_ascii().is_empty() {
        let root = crate::xml::parse(&context.body)?;
        if root.name != "CreateBucketConfiguration" {
            return Err(S3Error::MalformedXml);
        }
    }
    match store.create_bucket(&context.bucket) {
        // S3's legacy answer in us-east-1 to re-creating a bucket you own.
        Err(S3Error::BucketAlreadyOwnedByYou { .. }) if region == "us-east-1" => {}
        other => other?,
    }
    Ok(Response::new(200).header("Location", format!("/{}", context.bucket)))
}

pub fn head_bucket(store: &Store, context: &Context<'_>, region: &str) -> Result<Response, S3Error> {
    if !store.bucket_exists(&context.bucket) {
        return Err(S3Error::NoSuchBucket { bucket: context.bucket.clone() });
    }
    Ok(Response::new(200).header("x-amz-bucket-region", region))
}

pub fn delete_bucket(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    store.delete_bucket(&context.bucket)?;
    Ok(Response::new(204))
}

pub fn bucket_location(store: &Store, context: &Context<'_>, region: &str) -> Result<Response, S3Error> {
    if !store.bucket_exists(&context.bucket) {
        return Err(S3Error::NoSuchBucket { bucket: context.bucket.clone() });
    }
    // us-east-1 is the empty constraint, as S3 answers it.
    let constraint = if region == "us-east-1" { "" } else { region };
    let mut writer = XmlWriter::bare("LocationConstraint xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"");
    writer.text(constraint);
    Ok(xml_response(200, writer.finish("LocationConstraint")))
}

/// The request's object headers: content type, stored headers, user metadata.
pub fn new_object(context: &Context<'_>) -> NewObject {
    let headers = STORED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = context.header(name)?;
            if *name == "content-encoding" {
                // aws-chunked is the transfer framing, not the object's encoding.
                let codings: Vec<&str> =
                    value.split(',').map(str::trim).filter(|c| !c.eq_ignore_ascii_case("aws-chunked")).collect();
                return (!codings.is_empty()).then(|| (name.to_string(), codings.join(", ")));
            }
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    let metadata = context
        .head
        .headers()
        .filter_map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            let suffix = lower.strip_prefix("x-amz-meta-")?;
            Some((suffix.to_string(), String::from_utf8_lossy(value).trim().to_string()))
        })
        .collect();
    NewObject { content_type: context.header("content-type").map(str::to_string), headers, metadata, checksum: None }
}

/// Checks Content-MD5 and every `x-amz-checksum-*` sent (as header or
/// trailer); returns the checksum to keep with the object.
pub fn verify_checksums(context: &Context<'_>, data: &[u8]) -> Result<Option<Checksum>, S3Error> {
    if let Some(md5) = context.head.header("content-md5") {
        checksum::verify_content_md5(data, md5)?;
    }
    let mut kept = None;
    for algorithm in ALGORITHMS {
        if let Some(value) = context.header_or_trailer(algorithm.header()) {
            algorithm.verify(data, value)?;
            kept.get_or_insert(Checksum { algorithm, value: value.to_string() });
        }
    }
    if kept.is_none() {
        // Asked for an algorithm but sent no value: S3 computes it.
        let asked =
            context.header("x-amz-checksum-algorithm").or_else(|| context.header("x-amz-sdk-checksum-algorithm"));
        if let Some(algorithm) = asked.and_then(ChecksumAlgorithm::from_name) {
            kept = Some(Checksum { algorithm, value: algorithm.compute(data) });
        }
    }
    Ok(kept)
}

/// `If-None-Match: *` and `If-Match` of a write.
pub fn write_condition(context: &Context<'_>) -> Result<WriteCondition, S3Error> {
    let if_none_match_any = match context.header("if-none-match") {
        None => false,
        Some("*") => true,
        Some(_) => return Err(S3Error::NotImplemented("If-None-Match on writes supports only '*'".into())),
    };
    Ok(WriteCondition { if_none_match_any, if_match: context.header("if-match").map(str::to_string) })
}

pub fn put_object(store: &Store, context: &mut Context<'_>) -> Result<Response, S3Error> {
    let data = std::mem::take(&mut context.body);
    let checksum = verify_checksums(context, &data)?;
    let condition = write_condition(context)?;
    let new = NewObject { checksum: checksum.clone(), ..new_object(context) };
    let meta = store.put_object(&context.bucket, &context.key, data, new, &condition)?;
    let mut response = Response::new(200).header("ETag", quoted(&meta.etag));
    if let Some(checksum) = checksum {
        response = response.header(checksum.algorithm.header(), checksum.value);
    }
    Ok(response)
}

/// `x-amz-copy-source`: `[/]bucket/key[?versionId=...]`, URL-encoded.
pub fn copy_source(context: &Context<'_>) -> Result<(String, String), S3Error> {
    let raw = context.header("x-amz-copy-source").unwrap_or("");
    let raw = raw.split_once("?versionId=").map_or(raw, |(path, _)| path);
    let decoded = url::decode(raw).ok_or_else(|| S3Error::InvalidArgument("Invalid copy source encoding".into()))?;
    let decoded = decoded.strip_prefix('/').unwrap_or(&decoded);
    match decoded.split_once('/') {
        Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => Ok((bucket.to_string(), key.to_string())),
        _ => Err(S3Error::InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey".into(),
        )),
    }
}

/// `x-amz-copy-source-if-*` against the source object: 412 when not met.
pub fn check_copy_source_conditions(context: &Context<'_>, meta: &ObjectMeta) -> Result<(), S3Error> {
    let seconds = meta.last_modified_ms / 1000;
    let failed = S3Error::PreconditionFailed { condition: "x-amz-copy-source-If-*" };
    if let Some(tags) = context.header("x-amz-copy-source-if-match") {
        if !etag_matches(tags, &meta.etag) {
            return Err(failed);
        }
    } else if let Some(since) = context.head.header("x-amz-copy-source-if-unmodified-since").and_then(parse_http_date) {
        if seconds > since {
            return Err(failed);
        }
    }
    if let Some(tags) = context.header("x-amz-copy-source-if-none-match") {
        if etag_matches(tags, &meta.etag) {
            return Err(failed);
        }
    } else if let Some(since) = context.head.header("x-amz-copy-source-if-modified-since").and_then(parse_http_date) {
        if seconds <= since {
            return Err(failed);
        }
    }
    Ok(())
}

pub fn copy_object(store: &Store, context: &mut Context<'_>) -> Result<Response, S3Error> {
    let (source_bucket, source_key) = copy_source(context)?;
    let (source, data) = store.get_object(&source_bucket, &source_key, true)?;
    check_copy_source_conditions(context, &source)?;
    let replace = match context.header("x-amz-metadata-directive") {
        None | Some("COPY") => false,
        Some("REPLACE") => true,
        Some(_) => return Err(S3Error::InvalidArgument("Unknown metadata directive.".into())),
    };
    if !replace && source_bucket == context.bucket && source_key == context.key {
        return Err(S3Error::InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the \
             object's metadata, storage class, website redirect location or encryption attributes."
                .into(),
        ));
    }
    let new = if replace {
        new_object(context)
    } else {
        NewObject {
            content_type: source.content_type.clone(),
            headers: source.headers.clone(),
            metadata: source.metadata.clone(),
            checksum: source.checksum.clone(),
        }
    };
    let data = data.map(|data| data.as_ref().clone()).unwrap_or_default();
    let condition = write_condition(context)?;
    let meta = store.put_object(&context.bucket, &context.key, data, new, &condition)?;
    let mut writer = XmlWriter::new("CopyObjectResult");
    writer.element("LastModified", &iso8601(meta.last_modified_ms)).element("ETag", &quoted(&meta.etag));
    Ok(xml_response(200, writer.finish("CopyObjectResult")))
}

/// What the read preconditions decide: go on, 304, or 412.
fn read_preconditions(context: &Context<'_>, meta: &ObjectMeta) -> Result<bool, S3Error> {
    let seconds = meta.last_modified_ms / 1000;
    if let Some(tags) = context.header("if-match") {
        if !etag_matches(tags, &meta.etag) {
            return Err(S3Error::PreconditionFailed { condition: "If-Match" });
        }
    } else if let Some(since) = context.head.header("if-unmodified-since").and_then(parse_http_date) {
        if seconds > since {
            return Err(S3Error::PreconditionFailed { condition: "If-Unmodified-Since" });
        }
    }
    if let Some(tags) = context.header("if-none-match") {
        return Ok(!etag_matches(tags, &meta.etag));
    }
    if let Some(since) = context.head.header("if-modified-since").and_then(parse_http_date) {
        return Ok(seconds > since);
    }
    Ok(true)
}

/// The headers of an object on GET and HEAD.
fn object_headers(mut response: Response, meta: &ObjectMeta) -> Response {
    response = response
        .header("ETag", quoted(&meta.etag))
        .header("Last-Modified", http_date(meta.last_modified_ms))
        .header("Accept-Ranges", "bytes")
        .header("Content-Type", meta.content_type.clone().unwrap_or_else(|| "binary/octet-stream".into()));
    for (name, value) in &meta.headers {
        response = response.header(name, value.clone());
    }
    for (name, value) in &meta.metadata {
        response = response.header(&format!("x-amz-meta-{name}"), value.clone());
    }
    if let Some(parts) = meta.parts_count {
        response = response.header("x-amz-mp-parts-count", parts.to_string());
    }
    response
}

/// `response-content-type` and friends override stored headers on GET.
fn apply_overrides(mut response: Response, context: &Context<'_>) -> Response {
    for (parameter, header) in [
        ("response-content-type", "Content-Type"),
        ("response-content-language", "Content-Language"),
        ("response-expires", "Expires"),
        ("response-cache-control", "Cache-Control"),
        ("response-content-disposition", "Content-Disposition"),
        ("response-content-encoding", "Content-Encoding"),
    ] {
        if let Some(value) = context.param(parameter) {
            response.headers.retain(|(name, _)| !name.eq_ignore_ascii_case(header));
            response = response.header(header, value.replace(['\r', '\n'], " "));
        }
    }
    response
}

pub fn get_object(store: &Store, context: &Context<'_>, head_only: bool) -> Result<Response, S3Error> {
    let (meta, data) = store.get_object(&context.bucket, &context.key, !head_only)?;
    if !read_preconditions(context, &meta)? {
        return Ok(Response::new(304)
            .header("ETag", quoted(&meta.etag))
            .header("Last-Modified", http_date(meta.last_modified_ms)));
    }
    let range = match context.head.header("range") {
        Some(header) => range::resolve(header, meta.size)?,
        None => RangeRequest::Whole,
    };
    let (status, start, end) = match range {
        RangeRequest::Whole => (200, 0, meta.size),
        RangeRequest::Part { start, end } => (206, start, end),
    };
    let mut response = object_headers(Response::new(status), &meta);
    if status == 206 {
        response = response.header("Content-Range", format!("bytes {start}-{}/{}", end - 1, meta.size));
    }
    let checksum_mode = context.header("x-amz-checksum-mode").is_some_and(|mode| mode.eq_ignore_ascii_case("ENABLED"));
    if let (true, 200, Some(checksum)) = (checksum_mode, status, &meta.checksum) {
        response = response
            .header(checksum.algorithm.header(), checksum.value.clone())
            .header("x-amz-checksum-type", "FULL_OBJECT");
    }
    response = apply_overrides(response, context);
    response.content_length = Some(end - start);
    if let Some(data) = data {
        let shared: Arc<dyn AsRef<[u8]> + Send + Sync> = data;
        response.body = Body::Shared(shared, start as usize..end as usize);
    }
    Ok(response)
}

pub fn delete_object(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    store.delete_object(&context.bucket, &context.key)?;
    Ok(Response::new(204))
}

pub fn delete_objects(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    if let Some(md5) = context.head.header("content-md5") {
        checksum::verify_content_md5(&context.body, md5)?;
    }
    verify_checksums(context, &context.body)?;
    let root = crate::xml::parse(&context.body)?;
    if root.name != "Delete" {
        return Err(S3Error::MalformedXml);
    }
    let quiet = root.child("Quiet").is_some_and(|quiet| quiet.text.trim().eq_ignore_ascii_case("true"));
    let keys: Vec<&str> = root
        .children_named("Object")
        .map(|object| object.child("Key").map(|key| key.text.as_str()).ok_or(S3Error::MalformedXml))
        .collect::<Result<_, _>>()?;
    if keys.is_empty() || keys.len() > DELETE_KEYS_MAX {
        return Err(S3Error::MalformedXml);
    }
    if !store.bucket_exists(&context.bucket) {
        return Err(S3Error::NoSuchBucket { bucket: context.bucket.clone() });
    }
    let mut writer = XmlWriter::new("DeleteResult");
    for key in keys {
        match store.delete_object(&context.bucket, key) {
            Ok(()) if quiet => {}
            Ok(()) => {
                writer.open("Deleted").element("Key", key).close("Deleted");
            }
            Err(error) => {
                writer
                    .open("Error")
                    .element("Key", key)
                    .element("Code", error.code())
                    .element("Message", &error.to_string())
                    .close("Error");
            }
        }
    }
    Ok(xml_response(200, writer.finish("DeleteResult")))
}

/// ListObjectsV2 (`v2`) and ListObjects (V1).
pub fn list_objects(store: &Store, context: &Context<'_>, v2: bool) -> Result<Response, S3Error> {
    let prefix = context.param("prefix").unwrap_or("");
    let delimiter = context.param("delimiter").unwrap_or("");
    let url_encoding = match context.param("encoding-type") {
        None => false,
        Some(kind) if kind.eq_ignore_ascii_case("url") => true,
        Some(_) => return Err(S3Error::InvalidArgument("Invalid Encoding Method specified in Request".into())),
    };
    let max_keys = match context.param("max-keys") {
        None => LIST_KEYS_MAX,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| S3Error::InvalidArgument("Provided max-keys not an integer or within integer range".into()))?
            .min(LIST_KEYS_MAX as i64) as usize,
    };
    let token = context.param("continuation-token");
    let token_marker = match token {
        Some(token) if v2 => Some(decode_token(token)?),
        _ => None,
    };
    let start_after = if v2 { context.param("start-after") } else { context.param("marker") };
    let after = token_marker.as_deref().or(start_after.filter(|s| !s.is_empty()));
    let query = ListingQuery { prefix, delimiter, after, max_keys };
    let listing = store.list_objects(&context.bucket, &query)?;
    let encode = |text: &str| if url_encoding { url::encode_key(text) } else { text.to_string() };

    let mut writer = XmlWriter::new("ListBucketResult");
    writer.element("Name", &context.bucket).element("Prefix", &encode(prefix));
    if v2 {
        if let Some(start_after) = start_after {
            writer.element("StartAfter", &encode(start_after));
        }
        if let Some(token) = token {
            writer.element("ContinuationToken", token);
        }
        if let (true, Some(last)) = (listing.truncated, &listing.last) {
            writer.element("NextContinuationToken", &TOKEN_BASE64.encode(last));
        }
        writer.element("KeyCount", &(listing.objects.len() + listing.prefixes.len()).to_string());
    } else {
        writer.element("Marker", &encode(start_after.unwrap_or("")));
        if let (true, Some(last)) = (listing.truncated, &listing.last) {
            writer.element("NextMarker", &encode(last));
        }
    }
    writer.element("MaxKeys", &max_keys.to_string());
    if !delimiter.is_empty() {
        writer.element("Delimiter", &encode(delimiter));
    }
    if url_encoding {
        writer.element("EncodingType", "url");
    }
    writer.element("IsTruncated", if listing.truncated { "true" } else { "false" });
    let owner = !v2 || context.param("fetch-owner") == Some("true");
    for meta in &listing.objects {
        write_contents(&mut writer, meta, &encode(&meta.key), owner);
    }
    for common in &listing.prefixes {
        writer.open("CommonPrefixes").element("Prefix", &encode(common)).close("CommonPrefixes");
    }
    Ok(xml_response(200, writer.finish("ListBucketResult")))
}

fn write_contents(writer: &mut XmlWriter, meta: &ObjectMeta, key: &str, owner: bool) {
    writer
        .open("Contents")
        .element("Key", key)
        .element("LastModified", &iso8601(meta.last_modified_ms))
        .element("ETag", &quoted(&meta.etag))
        .element("Size", &meta.size.to_string())
        .element("StorageClass", "STANDARD");
    if let Some(checksum) = &meta.checksum {
        writer.element("ChecksumAlgorithm", checksum.algorithm.name());
    }
    if owner {
        writer.open("Owner").element("ID", "fake-s3").element("DisplayName", "fake-s3").close("Owner");
    }
    writer.close("Contents");
}

fn decode_token(token: &str) -> Result<String, S3Error> {
    let bytes = TOKEN_BASE64.decode(token.trim()).map_err(|_| S3Error::InvalidToken)?;
    String::from_utf8(bytes).map_err(|_| S3Error::InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for good in ["abc", "my-bucket.data", "a1b", &"a".repeat(63)] {
            assert_eq!(validate_bucket_name(good), Ok(()), "{good}");
        }
        for bad in ["ab", "Abc", "-abc", "abc-", "a..b", "192.168.1.1", "a_b", &"a".repeat(64), ""] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_round_trip() {
        let key = "a/ü b+c%2F";
        assert_eq!(decode_token(&TOKEN_BASE64.encode(key)).unwrap(), key);
        assert_eq!(decode_token("!!!"), Err(S3Error::InvalidToken));
    }

    #[test]
    fn store_etag_matching() {
        assert!(crate::store::etag_matches("\"abc\"", "abc"));
        assert!(crate::store::etag_matches("W/\"abc\", \"def\"", "def"));
        assert!(crate::store::etag_matches("*", "x"));
        assert!(!crate::store::etag_matches("\"abd\"", "abc"));
    }
}
