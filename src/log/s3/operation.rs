//! One store operation carried out over S3: which request to send next, and
//! what a response (or a failed attempt) means for it. Pure: the client's
//! event loop does the IO and the timing.
//!
//! Invariants: a 412 (or 409 `ConditionalRequestConflict`) on a conditional
//! put is final, never retried, and reported as `AlreadyExists` so that the
//! persister reads the object back; every retry decision is made here, on
//! the status and the S3 error code, never on message text; redirects are
//! refused, not followed.

use std::ops::Range;

use super::request::{Request, Target};
use super::response::Response;
use super::xml;
use crate::log::store::{validate_name, ListPage, ObjectBytes, ObjectOp, OpOutput, StoreError};

/// Most keys one ListObjectsV2 or DeleteObjects request carries (S3's limit).
pub const KEYS_PER_REQUEST_MAX: usize = 1000;

/// What the operation needs.
#[derive(Debug)]
enum Work {
    Put {
        name: String,
        bytes: ObjectBytes,
        if_absent: bool,
    },
    Get {
        name: String,
        range: Option<Range<u64>>,
    },
    List {
        prefix: String,
        start_after: Option<String>,
        limit: usize,
        names: Vec<String>,
        sizes: Vec<u64>,
        token: Option<String>,
    },
    Delete {
        remaining: Vec<String>,
    },
}

/// What to do after a response.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The operation is over.
    Complete(Result<OpOutput, StoreError>),
    /// Send this operation's next request (the next page or batch).
    Continue,
    /// The attempt failed in a way that may pass: try it again after a
    /// backoff. `code` labels the failure for metrics.
    Retry { reason: String, code: String },
}

#[derive(Debug)]
pub struct Operation {
    work: Work,
    /// The request of the current step, built once and re-signed per attempt.
    request: Option<Request>,
}

impl Operation {
    /// Checks the operation's names; an invalid one fails at once.
    pub fn new(op: ObjectOp) -> Result<Operation, StoreError> {
        let work = match op {
            ObjectOp::PutIfAbsent { name, bytes } => {
                validate_name(&name)?;
                Work::Put { name, bytes, if_absent: true }
            }
            ObjectOp::Put { name, bytes } => {
                validate_name(&name)?;
                Work::Put { name, bytes, if_absent: false }
            }
            ObjectOp::Get { name, range } => {
                validate_name(&name)?;
                Work::Get { name, range }
            }
            ObjectOp::List { prefix, start_after, limit } => {
                if limit == 0 {
                    return Err(StoreError::permanent("list limit must be at least 1"));
                }
                let limit = limit.min(KEYS_PER_REQUEST_MAX);
                Work::List { prefix, start_after, limit, names: Vec::new(), sizes: Vec::new(), token: None }
            }
            ObjectOp::Delete { names } => {
                names.iter().try_for_each(|name| validate_name(name))?;
                Work::Delete { remaining: names }
            }
        };
        Ok(Operation { work, request: None })
    }

    /// An operation with nothing to send (an empty delete) completes at once.
    pub fn is_empty(&self) -> bool {
        matches!(&self.work, Work::Delete { remaining } if remaining.is_empty())
    }

    /// The S3 operation name, for metrics.
    pub fn kind(&self) -> &'static str {
        match self.work {
            Work::Put { .. } => "PutObject",
            Work::Get { .. } => "GetObject",
            Work::List { .. } => "ListObjectsV2",
            Work::Delete { .. } => "DeleteObjects",
        }
    }

    /// A conditional put, whose 412 is an answer, not a failure.
    pub fn is_put_if_absent(&self) -> bool {
        matches!(self.work, Work::Put { if_absent: true, .. })
    }

    /// The request for the current step (the same one on every retry).
    pub fn request(&mut self, target: &Target) -> &Request {
        let work = &self.work;
        self.request.get_or_insert_with(|| match work {
            Work::Put { name, bytes, if_absent } => target.put(name, bytes.clone(), *if_absent),
            Work::Get { name, range } => {
                // An empty range still asks for a byte, so that a missing
                // object is reported; the answer is cut to nothing.
                let inclusive = range.as_ref().map(|range| (range.start, range.end.max(range.start + 1) - 1));
                target.get(name, inclusive)
            }
            Work::List { prefix, start_after, limit, names, token, .. } => {
                let wanted = (*limit - names.len()).max(1);
                let start_after = if token.is_some() { None } else { start_after.as_deref() };
                target.list(prefix, start_after, token.as_deref(), wanted)
            }
            Work::Delete { remaining } => {
                target.delete_objects(&remaining[..remaining.len().min(KEYS_PER_REQUEST_MAX)])
            }
        })
    }

    /// Decides what a complete response means.
    pub fn on_response(&mut self, target: &Target, response: Response) -> Step {
        let status = response.status;
        if (200..300).contains(&status) || (status == 416 && matches!(self.work, Work::Get { .. })) {
            return self.on_success(target, response);
        }
        let error = xml::parse_error(&response.body).unwrap_or_default();
        let code = if error.code.is_empty() { format!("HTTP{status}") } else { error.code.clone() };
        let detail = format!("S3 answered {status} {code}: {}", error.message);
        match (status, code.as_str()) {
            (412, _) | (409, "ConditionalRequestConflict") if self.is_put_if_absent() => {
                Step::Complete(Err(StoreError::AlreadyExists { name: self.name().to_owned() }))
            }
            (404, "NoSuchKey") | (404, "HTTP404") if matches!(self.work, Work::Get { .. }) => {
                Step::Complete(Err(StoreError::NotFound { name: self.name().to_owned() }))
            }
            (300..=399, _) => Step::Complete(Err(StoreError::permanent(format!(
                "{detail} (redirects are refused: check the endpoint and region{})",
                response.header("location").map(|location| format!("; Location: {location}")).unwrap_or_default()
            )))),
            (500..=599, _) | (408, _) | (429, _) => Step::Retry { reason: detail, code },
            (_, "RequestTimeout" | "SlowDown" | "InternalError" | "ServiceUnavailable") => {
                Step::Retry { reason: detail, code }
            }
            _ => Step::Complete(Err(StoreError::permanent(detail))),
        }
    }

    fn name(&self) -> &str {
        match &self.work {
            Work::Put { name, .. } | Work::Get { name, .. } => name,
            Work::List { prefix, .. } => prefix,
            Work::Delete { remaining } => remaining.first().map_or("", String::as_str),
        }
    }

    fn on_success(&mut self, target: &Target, response: Response) -> Step {
        match &mut self.work {
            Work::Put { .. } => Step::Complete(Ok(OpOutput::Created)),
            Work::Get { range, .. } => Step::Complete(Ok(OpOutput::Bytes(cut_to_range(response, range.as_ref())))),
            Work::List { .. } => self.on_list_page(target, &response.body),
            Work::Delete { remaining } => {
                let result = match xml::parse_delete(&response.body) {
                    Ok(result) => result,
                    Err(error) => {
                        return Step::Retry {
                            reason: format!("unreadable DeleteObjects result: {error}"),
                            code: "BadXml".into(),
                        }
                    }
                };
                if let Some((key, error)) = result.errors.first() {
                    let detail = format!("deleting {key:?}: {} {}", error.code, error.message);
                    return match error.code.as_str() {
                        "InternalError" | "SlowDown" | "ServiceUnavailable" => {
                            Step::Retry { reason: detail, code: error.code.clone() }
                        }
                        _ => Step::Complete(Err(StoreError::permanent(detail))),
                    };
                }
                remaining.drain(..remaining.len().min(KEYS_PER_REQUEST_MAX));
                self.request = None;
                if remaining.is_empty() {
                    Step::Complete(Ok(OpOutput::Deleted))
                } else {
                    Step::Continue
                }
            }
        }
    }

    fn on_list_page(&mut self, target: &Target, body: &[u8]) -> Step {
        let Work::List { prefix, limit, names, sizes, token, .. } = &mut self.work else {
            return Step::Complete(Err(StoreError::permanent("internal: not a list")));
        };
        let page = match xml::parse_list(body) {
            Ok(page) => page,
            Err(error) => {
                return Step::Retry {
                    reason: format!("unreadable ListObjectsV2 result: {error}"),
                    code: "BadXml".into(),
                }
            }
        };
        if page.sizes.len() != page.keys.len() {
            return Step::Retry { reason: "a ListObjectsV2 page without sizes".into(), code: "BadXml".into() };
        }
        for (key, size) in page.keys.iter().zip(&page.sizes) {
            let Some(name) = target.name(key) else { continue };
            if !name.starts_with(prefix.as_str()) || names.last().is_some_and(|last| name <= last.as_str()) {
                // Out of prefix or out of order: a store that breaks the
                // byte-order contract must not reach the log's recovery.
                return Step::Complete(Err(StoreError::permanent(format!(
                    "ListObjectsV2 returned {key:?} out of order or outside the prefix"
                ))));
            }
            names.push(name.to_owned());
            sizes.push(*size);
        }
        let more = page.is_truncated && page.next_continuation_token.is_some();
        if names.len() >= *limit || !more {
            let truncated = more || names.len() > *limit;
            names.truncate(*limit);
            sizes.truncate(*limit);
            let page = ListPage { names: std::mem::take(names), sizes: std::mem::take(sizes), truncated };
            return Step::Complete(Ok(OpOutput::Listed(page)));
        }
        *token = page.next_continuation_token;
        self.request = None;
        Step::Continue
    }
}

/// The bytes of a range; a server that ignored `Range` (200 with the whole
/// object) is cut here, and an unsatisfiable range (416) is empty.
fn cut_to_range(response: Response, range: Option<&Range<u64>>) -> Vec<u8> {
    let Some(range) = range else { return response.body };
    let mut body = response.body;
    if response.status == 416 || range.end <= range.start {
        return Vec::new();
    }
    if response.status == 200 {
        let start = (range.start as usize).min(body.len());
        let end = (range.end as usize).clamp(start, body.len());
        return body[start..end].to_vec();
    }
    body.truncate((range.end - range.start) as usize);
    body
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn target() -> Target {
        Target {
            host: "h:1".into(),
            bucket: "b".into(),
            key_prefix: "p/".into(),
            region: "us-east-1".into(),
            credentials: None,
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response { status, headers: Vec::new(), body: body.as_bytes().to_vec(), keep_alive: true }
    }

    fn put() -> Operation {
        Operation::new(ObjectOp::PutIfAbsent { name: "log/a".into(), bytes: Arc::new(vec![1]) }).unwrap()
    }

    #[test]
    fn conditional_put_outcomes() {
        let t = target();
        assert_eq!(put().on_response(&t, response(200, "")), Step::Complete(Ok(OpOutput::Created)));
        let mut overwrite = Operation::new(ObjectOp::Put { name: "p".into(), bytes: Arc::new(vec![1]) }).unwrap();
        assert!(overwrite.request(&t).headers.is_empty());
        assert!(matches!(
            overwrite.on_response(&t, response(412, "")),
            Step::Complete(Err(StoreError::Permanent { .. }))
        ));
        assert_eq!(put().request(&t).headers, [("if-none-match".to_string(), "*".to_string())]);
        let taken = Step::Complete(Err(StoreError::AlreadyExists { name: "log/a".into() }));
        assert_eq!(put().on_response(&t, response(412, "<Error><Code>PreconditionFailed</Code></Error>")), taken);
        assert_eq!(
            put().on_response(&t, response(409, "<Error><Code>ConditionalRequestConflict</Code></Error>")),
            taken
        );
        assert!(
            matches!(put().on_response(&t, response(503, "<Error><Code>SlowDown</Code></Error>")), Step::Retry { code, .. } if code == "SlowDown")
        );
        assert!(
            matches!(put().on_response(&t, response(500, "garbage")), Step::Retry { code, .. } if code == "HTTP500")
        );
        assert!(matches!(
            put().on_response(&t, response(403, "<Error><Code>SignatureDoesNotMatch</Code></Error>")),
            Step::Complete(Err(StoreError::Permanent { .. }))
        ));
        assert!(
            matches!(put().on_response(&t, response(301, "")), Step::Complete(Err(StoreError::Permanent { message })) if message.contains("redirect"))
        );
    }

    #[test]
    fn gets_map_missing_objects_and_ranges() {
        let t = target();
        let get = |range| Operation::new(ObjectOp::Get { name: "log/a".into(), range }).unwrap();
        let missing = get(None).on_response(&t, response(404, "<Error><Code>NoSuchKey</Code></Error>"));
        assert_eq!(missing, Step::Complete(Err(StoreError::NotFound { name: "log/a".into() })));
        let bucket = get(None).on_response(&t, response(404, "<Error><Code>NoSuchBucket</Code></Error>"));
        assert!(matches!(bucket, Step::Complete(Err(StoreError::Permanent { .. }))));
        assert_eq!(
            get(Some(2..4)).on_response(&t, response(200, "abcdef")),
            Step::Complete(Ok(OpOutput::Bytes(b"cd".to_vec())))
        );
        assert_eq!(
            get(Some(2..4)).on_response(&t, response(206, "cd")),
            Step::Complete(Ok(OpOutput::Bytes(b"cd".to_vec())))
        );
        assert_eq!(
            get(Some(9..12)).on_response(&t, response(416, "")),
            Step::Complete(Ok(OpOutput::Bytes(Vec::new())))
        );
        assert_eq!(
            get(Some(3..3)).on_response(&t, response(206, "d")),
            Step::Complete(Ok(OpOutput::Bytes(Vec::new())))
        );
        assert_eq!(get(Some(3..3)).request(&t).headers, [("range".to_string(), "bytes=3-3".to_string())]);
    }

    #[test]
    fn lists_follow_continuations_and_check_order() {
        let t = target();
        let mut list = Operation::new(ObjectOp::List { prefix: "log/".into(), start_after: None, limit: 3 }).unwrap();
        let first = "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>n</NextContinuationToken>\
<Contents><Key>p/log/1</Key><Size>1</Size></Contents></ListBucketResult>";
        assert_eq!(list.on_response(&t, response(200, first)), Step::Continue);
        assert!(list.request(&t).target.contains("continuation-token=n"));
        assert!(list.request(&t).target.contains("max-keys=2"));
        let second =
            "<ListBucketResult><IsTruncated>true</IsTruncated><NextContinuationToken>m</NextContinuationToken>\
<Contents><Key>p/log/2</Key><Size>2</Size></Contents><Contents><Key>p/log/3</Key><Size>3</Size></Contents>\
</ListBucketResult>";
        let names = vec!["log/1".into(), "log/2".into(), "log/3".into()];
        let page = ListPage { names, sizes: vec![1, 2, 3], truncated: true };
        assert_eq!(list.on_response(&t, response(200, second)), Step::Complete(Ok(OpOutput::Listed(page))));

        let mut unordered = Operation::new(ObjectOp::List { prefix: "".into(), start_after: None, limit: 5 }).unwrap();
        let body = "<ListBucketResult><Contents><Key>p/b</Key><Size>1</Size></Contents>\
<Contents><Key>p/a</Key><Size>1</Size></Contents></ListBucketResult>";
        assert!(matches!(
            unordered.on_response(&t, response(200, body)),
            Step::Complete(Err(StoreError::Permanent { .. }))
        ));
        let mut bad = Operation::new(ObjectOp::List { prefix: "".into(), start_after: None, limit: 5 }).unwrap();
        assert!(matches!(bad.on_response(&t, response(200, "<nope")), Step::Retry { .. }));
    }

    #[test]
    fn deletes_go_in_batches_of_a_thousand() {
        let t = target();
        let names: Vec<String> = (0..2500).map(|index| format!("log/{index:05}")).collect();
        let mut delete = Operation::new(ObjectOp::Delete { names }).unwrap();
        let ok = "<DeleteResult></DeleteResult>";
        for _ in 0..2 {
            let body = String::from_utf8(delete.request(&t).body.to_vec()).unwrap();
            assert_eq!(body.matches("<Object>").count(), 1000);
            assert_eq!(delete.on_response(&t, response(200, ok)), Step::Continue);
        }
        assert_eq!(delete.on_response(&t, response(200, ok)), Step::Complete(Ok(OpOutput::Deleted)));
        assert!(Operation::new(ObjectOp::Delete { names: vec![] }).unwrap().is_empty());
        assert!(Operation::new(ObjectOp::Delete { names: vec!["../x".into()] }).is_err());
    }
}
