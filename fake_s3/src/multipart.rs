//! Multipart uploads: create, upload part (and part copy), list parts,
//! list uploads, complete (ETag `<md5 of part md5s>-N`), abort.

use stoat_http::server::Response;

use crate::api::{self, xml_response};
use crate::error::S3Error;
use crate::range::{self, RangeRequest};
use crate::service::Context;
use crate::store::Store;
use crate::time::iso8601;
use crate::xml::{self, XmlWriter};

const PART_NUMBER_MAX: u32 = 10_000;

fn upload_id<'a>(context: &'a Context<'_>) -> Result<&'a str, S3Error> {
    context.param("uploadId").filter(|id| !id.is_empty()).ok_or(S3Error::NoSuchUpload)
}

fn part_number(context: &Context<'_>) -> Result<u32, S3Error> {
    context
        .param("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=PART_NUMBER_MAX).contains(n))
        .ok_or_else(|| S3Error::InvalidArgument("Part number must be an integer between 1 and 10000, inclusive".into()))
}

pub fn create(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    let id = store.create_upload(&context.bucket, &context.key, api::new_object(context))?;
    let mut writer = XmlWriter::new("InitiateMultipartUploadResult");
    writer.element("Bucket", &context.bucket).element("Key", &context.key).element("UploadId", &id);
    let mut response = xml_response(200, writer.finish("InitiateMultipartUploadResult"));
    if let Some(algorithm) = context.header("x-amz-checksum-algorithm") {
        response = response.header("x-amz-checksum-algorithm", algorithm);
    }
    Ok(response)
}

pub fn upload_part(store: &Store, context: &mut Context<'_>) -> Result<Response, S3Error> {
    let number = part_number(context)?;
    let id = upload_id(context)?.to_string();
    let data = std::mem::take(&mut context.body);
    let checksum = api::verify_checksums(context, &data)?;
    let md5 = store.upload_part(&id, &context.bucket, &context.key, number, data, checksum.clone())?;
    let mut response = Response::new(200).header("ETag", format!("\"{}\"", hex::encode(md5)));
    if let Some(checksum) = checksum {
        response = response.header(checksum.algorithm.header(), checksum.value);
    }
    Ok(response)
}

pub fn upload_part_copy(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    let number = part_number(context)?;
    let id = upload_id(context)?.to_string();
    let (source_bucket, source_key) = api::copy_source(context)?;
    let (source, data) = store.get_object(&source_bucket, &source_key, true)?;
    api::check_copy_source_conditions(context, &source)?;
    let data = data.unwrap_or_default();
    let bytes = match context.head.header("x-amz-copy-source-range") {
        None => data.as_slice(),
        Some(header) => match range::resolve(header, source.size) {
            Ok(RangeRequest::Part { start, end }) => &data[start as usize..end as usize],
            _ => {
                return Err(S3Error::InvalidArgument(
                    "The x-amz-copy-source-range value must be of the form bytes=first-last".into(),
                ))
            }
        },
    };
    let md5 = store.upload_part(&id, &context.bucket, &context.key, number, bytes.to_vec(), None)?;
    let mut writer = XmlWriter::new("CopyPartResult");
    writer
        .element("LastModified", &iso8601(crate::time::now_ms()))
        .element("ETag", &format!("\"{}\"", hex::encode(md5)));
    Ok(xml_response(200, writer.finish("CopyPartResult")))
}

pub fn complete(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    let id = upload_id(context)?.to_string();
    let root = xml::parse(&context.body)?;
    if root.name != "CompleteMultipartUpload" {
        return Err(S3Error::MalformedXml);
    }
    let parts: Vec<(u32, String)> = root
        .children_named("Part")
        .map(|part| {
            let number =
                part.child("PartNumber").and_then(|n| n.text.trim().parse().ok()).ok_or(S3Error::MalformedXml)?;
            let etag = part.child("ETag").map(|e| e.text.clone()).ok_or(S3Error::MalformedXml)?;
            Ok((number, etag))
        })
        .collect::<Result<_, S3Error>>()?;
    let condition = api::write_condition(context)?;
    let meta = store.complete_upload(&id, &context.bucket, &context.key, &parts, &condition)?;
    let mut writer = XmlWriter::new("CompleteMultipartUploadResult");
    writer
        .element("Location", &format!("/{}/{}", context.bucket, crate::url::encode_key(&context.key)))
        .element("Bucket", &context.bucket)
        .element("Key", &context.key)
        .element("ETag", &format!("\"{}\"", meta.etag));
    Ok(xml_response(200, writer.finish("CompleteMultipartUploadResult")))
}

pub fn abort(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    store.abort_upload(upload_id(context)?, &context.bucket, &context.key)?;
    Ok(Response::new(204))
}

pub fn list_parts(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    let id = upload_id(context)?;
    let parts = store.list_parts(id, &context.bucket, &context.key)?;
    let marker: u32 = context.param("part-number-marker").and_then(|m| m.parse().ok()).unwrap_or(0);
    let max_parts: usize = context.param("max-parts").and_then(|m| m.parse().ok()).unwrap_or(1000).min(1000);
    let after: Vec<_> = parts.iter().filter(|part| part.number > marker).collect();
    let page = &after[..after.len().min(max_parts)];
    let mut writer = XmlWriter::new("ListPartsResult");
    writer
        .element("Bucket", &context.bucket)
        .element("Key", &context.key)
        .element("UploadId", id)
        .element("PartNumberMarker", &marker.to_string())
        .element("MaxParts", &max_parts.to_string())
        .element("IsTruncated", if page.len() < after.len() { "true" } else { "false" });
    if let (true, Some(last)) = (page.len() < after.len(), page.last()) {
        writer.element("NextPartNumberMarker", &last.number.to_string());
    }
    for part in page {
        writer
            .open("Part")
            .element("PartNumber", &part.number.to_string())
            .element("LastModified", &iso8601(part.last_modified_ms))
            .element("ETag", &format!("\"{}\"", hex::encode(part.md5)))
            .element("Size", &part.data.len().to_string())
            .close("Part");
    }
    Ok(xml_response(200, writer.finish("ListPartsResult")))
}

pub fn list_uploads(store: &Store, context: &Context<'_>) -> Result<Response, S3Error> {
    let uploads = store.list_uploads(&context.bucket)?;
    let prefix = context.param("prefix").unwrap_or("");
    let mut writer = XmlWriter::new("ListMultipartUploadsResult");
    writer.element("Bucket", &context.bucket).element("Prefix", prefix).element("IsTruncated", "false");
    for upload in uploads.iter().filter(|upload| upload.key.starts_with(prefix)) {
        writer
            .open("Upload")
            .element("Key", &upload.key)
            .element("UploadId", &upload.upload_id)
            .element("Initiated", &iso8601(upload.initiated_ms))
            .element("StorageClass", "STANDARD")
            .close("Upload");
    }
    Ok(xml_response(200, writer.finish("ListMultipartUploadsResult")))
}
