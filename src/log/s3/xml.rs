//! The S3 XML documents the client reads: error bodies, ListObjectsV2 pages
//! and DeleteObjects results. Parsed with `quick-xml` into the few fields the
//! log needs; anything else in a document is ignored.
//!
//! Invariant: never panics on any input; a document that is not XML, or is
//! missing a field the log needs, is an error value.

use quick_xml::events::Event;
use quick_xml::Reader;

/// `<Error><Code>..</Code><Message>..</Message></Error>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// One page of `ListObjectsV2`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListResult {
    pub keys: Vec<String>,
    /// The size in bytes of each object of `keys`, in the same order.
    pub sizes: Vec<u64>,
    pub is_truncated: bool,
    pub next_continuation_token: Option<String>,
}

/// The `<Error>`s of a `DeleteObjects` result (the keys that failed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteResult {
    pub errors: Vec<(String, ErrorBody)>,
}

/// Calls `visit(path, text)` for every text node, with `path` the local
/// names of the enclosing elements joined by `/` (namespaces dropped), and
/// `visit(path, "")` when an element starts (so that repeated elements can
/// be told apart).
fn walk(xml: &[u8], mut visit: impl FnMut(&str, &str)) -> Result<(), String> {
    let mut reader = Reader::from_reader(xml);
    let mut path = String::new();
    let mut buffer = Vec::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(start)) => {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(&String::from_utf8_lossy(start.local_name().as_ref()));
                if path.len() > 4096 {
                    return Err("XML nested too deeply".into());
                }
                visit(&path, "");
            }
            Ok(Event::End(_)) => {
                let cut = path.rfind('/').unwrap_or(0);
                path.truncate(cut);
            }
            Ok(Event::Text(text)) => {
                let text = text.unescape().map_err(|error| error.to_string())?;
                if !text.trim().is_empty() {
                    visit(&path, &text);
                }
            }
            Ok(Event::CData(data)) => visit(&path, &String::from_utf8_lossy(&data)),
            Ok(Event::Eof) => return Ok(()),
            Ok(_) => {}
            Err(error) => return Err(format!("bad XML at byte {}: {error}", reader.buffer_position())),
        }
        buffer.clear();
    }
}

/// An S3 error body; `None` when the body is not one (empty, HTML, ...).
pub fn parse_error(body: &[u8]) -> Option<ErrorBody> {
    let mut error = ErrorBody::default();
    let mut seen = false;
    walk(body, |path, text| match path {
        "Error" => seen = true,
        "Error/Code" => error.code.push_str(text),
        "Error/Message" => error.message.push_str(text),
        _ => {}
    })
    .ok()?;
    (seen && !error.code.is_empty()).then_some(error)
}

pub fn parse_list(body: &[u8]) -> Result<ListResult, String> {
    let mut result = ListResult::default();
    let mut truncated_text = String::new();
    let mut size_texts: Vec<String> = Vec::new();
    let mut root_seen = false;
    walk(body, |path, text| match path {
        "ListBucketResult" => root_seen = true,
        "ListBucketResult/Contents" => {
            result.keys.push(String::new());
            size_texts.push(String::new());
        }
        "ListBucketResult/Contents/Key" => {
            if let Some(key) = result.keys.last_mut() {
                key.push_str(text);
            }
        }
        "ListBucketResult/Contents/Size" => {
            if let Some(size) = size_texts.last_mut() {
                size.push_str(text);
            }
        }
        "ListBucketResult/IsTruncated" => truncated_text.push_str(text),
        "ListBucketResult/NextContinuationToken" => {
            result.next_continuation_token.get_or_insert_with(String::new).push_str(text)
        }
        _ => {}
    })?;
    if !root_seen {
        return Err("not a ListBucketResult".into());
    }
    if result.keys.iter().any(String::is_empty) {
        return Err("a listed object has no key".into());
    }
    for text in &size_texts {
        let size = text.trim().parse().map_err(|_| format!("a listed object's Size is {text:?}"))?;
        result.sizes.push(size);
    }
    result.is_truncated = match truncated_text.trim() {
        "true" => true,
        "false" | "" => false,
        other => return Err(format!("IsTruncated is {other:?}")),
    };
    if result.next_continuation_token.as_deref() == Some("") {
        result.next_continuation_token = None;
    }
    Ok(result)
}

pub fn parse_delete(body: &[u8]) -> Result<DeleteResult, String> {
    let mut result = DeleteResult::default();
    let mut root_seen = false;
    walk(body, |path, text| match path {
        "DeleteResult" => root_seen = true,
        "DeleteResult/Error" => result.errors.push((String::new(), ErrorBody::default())),
        "DeleteResult/Error/Key" => result.errors.last_mut().into_iter().for_each(|e| e.0.push_str(text)),
        "DeleteResult/Error/Code" => result.errors.last_mut().into_iter().for_each(|e| e.1.code.push_str(text)),
        "DeleteResult/Error/Message" => result.errors.last_mut().into_iter().for_each(|e| e.1.message.push_str(text)),
        _ => {}
    })?;
    if !root_seen {
        return Err("not a DeleteResult".into());
    }
    Ok(result)
}

/// The body of a `DeleteObjects` request (quiet: only failures come back).
pub fn delete_request(keys: &[String]) -> Vec<u8> {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>");
    for key in keys {
        xml.push_str("<Object><Key>");
        xml.push_str(&quick_xml::escape::escape(key.as_str()));
        xml.push_str("</Key></Object>");
    }
    xml.push_str("</Delete>");
    xml.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_parse_and_non_errors_do_not() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchKey</Code><Message>The key &amp; more</Message><Key>a</Key></Error>"#;
        let error = parse_error(body).unwrap();
        assert_eq!((error.code.as_str(), error.message.as_str()), ("NoSuchKey", "The key & more"));
        for other in [&b""[..], b"<html>oops</html>", b"<Error><Code>", b"\xff\xfe<<"] {
            assert_eq!(parse_error(other), None);
        }
    }

    #[test]
    fn list_pages_parse() {
        let body = br#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
<Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount><MaxKeys>2</MaxKeys>
<IsTruncated>true</IsTruncated><NextContinuationToken>tok+/=</NextContinuationToken>
<Contents><Key>p/a &lt;1&gt;</Key><Size>3</Size></Contents><Contents><Key>p/b</Key><Size>0</Size></Contents>
</ListBucketResult>"#;
        let page = parse_list(body).unwrap();
        assert_eq!(page.keys, ["p/a <1>", "p/b"]);
        assert_eq!(page.sizes, [3, 0]);
        assert!(page.is_truncated);
        assert_eq!(page.next_continuation_token.as_deref(), Some("tok+/="));
        let empty = parse_list(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>").unwrap();
        assert_eq!(empty, ListResult::default());
        assert!(parse_list(b"<Other/>").is_err());
        assert!(parse_list(b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>").is_err());
        assert!(parse_list(b"<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>").is_err());
        assert!(parse_list(b"<ListBucketResult><Contents><Key>a</Key></Contents></ListBucketResult>").is_err());
        assert!(parse_list(b"<ListBucketResult><Contents><Key>a</Key><Size>-1</Size></Contents></ListBucketResult>")
            .is_err());
    }

    #[test]
    fn delete_results_and_requests() {
        let body = b"<DeleteResult><Deleted><Key>a</Key></Deleted><Error><Key>b</Key><Code>AccessDenied</Code>\
<Message>no</Message></Error></DeleteResult>";
        let result = parse_delete(body).unwrap();
        assert_eq!(result.errors.len(), 1);
        assert_eq!((result.errors[0].0.as_str(), result.errors[0].1.code.as_str()), ("b", "AccessDenied"));
        let request = String::from_utf8(delete_request(&["a&b".to_string()])).unwrap();
        assert!(request.contains("<Key>a&amp;b</Key>"), "{request}");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_error(&bytes);
            let _ = parse_list(&bytes);
            let _ = parse_delete(&bytes);
        }
    }
}
