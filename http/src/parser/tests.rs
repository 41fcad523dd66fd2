//! Tests of the request parser: bytes in, requests out, at every split.

use super::*;
use proptest::prelude::*;

const LIMITS: Limits = Limits { head_bytes_max: 1024, body_bytes_max: 64 };

/// A request as the tests see it: method, target, body, keep-alive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    method: Method,
    target: String,
    body: Vec<u8>,
    keep_alive: bool,
}

/// Feeds `chunks` one after another, as a connection would receive them,
/// and collects every complete request, or the first error.
fn feed(chunks: &[&[u8]], limits: Limits) -> Result<Vec<Parsed>, HttpError> {
    let mut parser = RequestParser::new(limits);
    let mut pending: Vec<u8> = Vec::new();
    let mut body = Vec::new();
    let mut requests = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let (used, progress) = parser.parse(&pending, &mut body)?;
            pending.drain(..used);
            match progress {
                Progress::NeedMore => break,
                Progress::HeadReady => continue,
                Progress::Complete => {
                    let head = parser.head();
                    requests.push(Parsed {
                        method: head.method,
                        target: head.target().to_string(),
                        body: body.clone(),
                        keep_alive: head.keep_alive,
                    });
                }
            }
        }
    }
    Ok(requests)
}

fn split_at_every_byte(input: &[u8], limits: Limits) -> Vec<Result<Vec<Parsed>, HttpError>> {
    (0..=input.len())
        .map(|at| {
            let (first, second) = input.split_at(at);
            feed(&[first, second], limits)
        })
        .collect()
}

fn one_byte_at_a_time(input: &[u8], limits: Limits) -> Result<Vec<Parsed>, HttpError> {
    let chunks: Vec<&[u8]> = input.chunks(1).collect();
    feed(&chunks, limits)
}

fn get(target: &str) -> Parsed {
    Parsed { method: Method::Get, target: target.into(), body: vec![], keep_alive: true }
}

const PIPELINE: &[u8] = b"GET /v1/version HTTP/1.1\r\nHost: a\r\n\r\n\
POST /v1/commit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
POST /x?q=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: t\r\n\r\n\
GET /last HTTP/1.1\r\nConnection: close\r\n\r\n";

fn pipeline_expected() -> Vec<Parsed> {
    vec![
        get("/v1/version"),
        Parsed { method: Method::Post, target: "/v1/commit".into(), body: b"hello".to_vec(), keep_alive: true },
        Parsed { method: Method::Post, target: "/x?q=1".into(), body: b"abcde".to_vec(), keep_alive: true },
        Parsed { method: Method::Get, target: "/last".into(), body: vec![], keep_alive: false },
    ]
}

#[test]
fn pipelined_requests_parse_identically_at_every_split() {
    for (at, result) in split_at_every_byte(PIPELINE, LIMITS).into_iter().enumerate() {
        assert_eq!(result, Ok(pipeline_expected()), "split at byte {at}");
    }
}

#[test]
fn pipelined_requests_parse_one_byte_at_a_time() {
    assert_eq!(one_byte_at_a_time(PIPELINE, LIMITS), Ok(pipeline_expected()));
}

#[test]
fn bare_lf_line_endings_are_accepted() {
    let input = b"GET /a HTTP/1.1\nHost: x\n\nPOST /b HTTP/1.1\nTransfer-Encoding: chunked\n\n1\nz\n0\n\n";
    for result in split_at_every_byte(input, LIMITS) {
        let requests = result.unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].body, b"z");
    }
}

#[test]
fn absolute_form_targets_are_reduced_to_their_path() {
    let requests =
        feed(&[b"GET http://example.com:80/v1/version?x=1 HTTP/1.1\r\n\r\nGET https://h HTTP/1.1\r\n\r\n"], LIMITS);
    assert_eq!(requests.unwrap(), vec![get("/v1/version?x=1"), get("/")]);
}

#[test]
fn leading_blank_lines_are_ignored() {
    let requests = feed(&[b"\r\n\r\nGET /a HTTP/1.1\r\n\r\n"], LIMITS).unwrap();
    assert_eq!(requests, vec![get("/a")]);
}

#[test]
fn http_1_0_closes_unless_keep_alive_is_asked() {
    let requests =
        feed(&[b"GET /a HTTP/1.0\r\n\r\nGET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"], LIMITS).unwrap();
    assert!(!requests[0].keep_alive);
    assert!(requests[1].keep_alive);
}

#[test]
fn head_accessors_split_path_and_query_and_find_headers() {
    let mut parser = RequestParser::new(LIMITS);
    let mut body = Vec::new();
    let input = b"GET /v1/status?request_id=abc HTTP/1.1\r\nX-Request-Id: r-1\r\n\r\n";
    assert_eq!(parser.parse(input, &mut body), Ok((input.len(), Progress::Complete)));
    let head = parser.head();
    assert_eq!(head.path(), "/v1/status");
    assert_eq!(head.query(), Some("request_id=abc"));
    assert_eq!(head.header("x-request-id"), Some(&b"r-1"[..]));
    assert_eq!(head.header("missing"), None);
    // Only the first `?` splits; the rest belongs to the query.
    for (target, path, query) in
        [("/v1/version", "/v1/version", None), ("/x?", "/x", Some("")), ("/a?b?c=d", "/a", Some("b?c=d"))]
    {
        let mut parser = RequestParser::new(LIMITS);
        let input = format!("GET {target} HTTP/1.1\r\n\r\n");
        assert_eq!(parser.parse(input.as_bytes(), &mut body), Ok((input.len(), Progress::Complete)));
        assert_eq!((parser.head().path(), parser.head().query()), (path, query), "{target}");
    }
}

#[test]
fn expect_continue_is_reported_before_the_body() {
    let mut parser = RequestParser::new(LIMITS);
    let mut body = Vec::new();
    let head = b"POST /c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(parser.parse(head, &mut body), Ok((head.len(), Progress::HeadReady)));
    assert!(parser.head().expect_continue);
    assert_eq!(parser.parse(b"ok", &mut body), Ok((2, Progress::Complete)));
    assert_eq!(body, b"ok");
}

#[test]
fn head_over_the_limit_is_431_with_or_without_its_end() {
    let limits = Limits { head_bytes_max: 64, body_bytes_max: 64 };
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(100));
    assert_eq!(feed(&[long.as_bytes()], limits), Err(HttpError::HeadTooLarge { limit: 64 }));
    let unterminated = format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(100));
    assert_eq!(feed(&[unterminated.as_bytes()], limits), Err(HttpError::HeadTooLarge { limit: 64 }));
}

#[test]
fn declared_length_over_the_limit_is_413_before_the_body() {
    let mut parser = RequestParser::new(LIMITS);
    let mut body = Vec::new();
    let head = b"POST /c HTTP/1.1\r\nContent-Length: 65\r\nX-Request-Id: big\r\n\r\n";
    assert_eq!(parser.parse(head, &mut body), Err(HttpError::PayloadTooLarge { limit: 64 }));
    // The head stays readable so the error response can echo X-Request-Id.
    assert_eq!(parser.head().header("x-request-id"), Some(&b"big"[..]));
}

#[test]
fn chunked_total_over_the_limit_is_413_when_the_chunk_size_arrives() {
    let input = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n";
    let mut parser = RequestParser::new(LIMITS);
    let mut body = Vec::new();
    let (used, _) = parser.parse(input, &mut body).unwrap();
    assert_eq!(parser.parse(&input[used..], &mut body).map(|(_, p)| p), Ok(Progress::NeedMore));
    let mut parser = RequestParser::new(LIMITS);
    let second = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n20\r\n";
    let mut all = second.to_vec();
    all.extend_from_slice(&[b'x'; 32]);
    all.extend_from_slice(b"\r\n21\r\n");
    assert_eq!(feed_error_after_head(&mut parser, &all), HttpError::PayloadTooLarge { limit: 64 });
}

fn feed_error_after_head(parser: &mut RequestParser, input: &[u8]) -> HttpError {
    let mut body = Vec::new();
    let mut offset = 0;
    loop {
        match parser.parse(&input[offset..], &mut body) {
            Ok((used, Progress::HeadReady)) => offset += used,
            Ok((used, progress)) => panic!("expected an error, got {progress:?} after {used}"),
            Err(error) => return error,
        }
    }
}

#[test]
fn malformed_requests_are_400_with_a_reason() {
    let cases: &[&[u8]] = &[
        b"\x00\x01\x02garbage\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ];
    for case in cases {
        match feed(&[case], LIMITS) {
            Err(HttpError::BadRequest(message)) => assert!(!message.is_empty()),
            other => panic!("{:?}: expected 400, got {other:?}", String::from_utf8_lossy(case)),
        }
    }
}

#[test]
fn overlong_chunk_size_line_is_400_not_unbounded() {
    let mut input = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1".to_vec();
    input.extend(std::iter::repeat_n(b'0', 2000));
    assert!(matches!(feed(&[&input], LIMITS), Err(HttpError::BadRequest(_))));
}

#[test]
fn in_progress_tracks_partial_requests() {
    let mut parser = RequestParser::new(LIMITS);
    let mut body = Vec::new();
    assert!(!parser.in_progress());
    parser.parse(b"GET / HT", &mut body).unwrap();
    assert!(parser.in_progress());
    parser.parse(b"GET / HTTP/1.1\r\n\r\n", &mut body).unwrap();
    assert!(!parser.in_progress());
}

proptest! {
    /// Any chunking of a valid pipeline parses to the same requests.
    #[test]
    fn any_chunking_parses_the_same(cuts in proptest::collection::vec(0..PIPELINE.len(), 0..12)) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&PIPELINE[start..cut]);
            start = cut;
        }
        chunks.push(&PIPELINE[start..]);
        prop_assert_eq!(feed(&chunks, LIMITS), Ok(pipeline_expected()));
    }

    /// Arbitrary bytes never panic and never hold more than the limits allow.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = feed(&[&data], LIMITS);
        let chunks: Vec<&[u8]> = data.chunks(7).collect();
        let _ = feed(&chunks, LIMITS);
    }
}

/// Fragments that steer a mutated request into the parser's corners.
const TOKENS: &[&[u8]] = &[
    b"http://",
    b"https://h",
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 18446744073709551616\r\n",
    b"Content-Length: 3\r\n",
    b"Expect: 100-continue\r\n",
    b"ffffffffffffffff\r\n",
    b";ext=\"x\"",
    b"0\r\n\r\n",
    b" HTTP/1.0",
    b"?",
    b"\x00",
    b"\xff",
];

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, u8),
    Insert(usize, usize),
    Delete(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace(at, byte)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(at, token)| Mutation::Insert(at, token)),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete(at, len)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Valid requests with a few mutations never panic, and every request
    /// that parses stays within the limits.
    #[test]
    fn mutated_requests_never_panic(mutations in proptest::collection::vec(mutation(), 1..8), split in any::<usize>()) {
        let mut input = PIPELINE.to_vec();
        for mutation in mutations {
            let len = input.len().max(1);
            match mutation {
                Mutation::Replace(at, byte) => { if !input.is_empty() { input[at % len] = byte; } }
                Mutation::Insert(at, token) => { let at = at % (input.len() + 1); input.splice(at..at, TOKENS[token].iter().copied()); }
                Mutation::Delete(at, count) => { let at = at % len; let end = (at + count).min(input.len()); input.drain(at.min(end)..end); }
            }
        }
        let at = split % (input.len() + 1);
        if let Ok(requests) = feed(&[&input[..at], &input[at..]], LIMITS) {
            for request in requests {
                prop_assert!(request.body.len() as u64 <= LIMITS.body_bytes_max);
                prop_assert!(request.target.starts_with('/'));
            }
        }
    }
}
