//! fake-s3 used in-process, as Rust tests of the S3 storage will use it:
//! started on an ephemeral port, spoken to over real loopback TCP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fake_s3::faults::SplitMix64;
use fake_s3::sigv4::{self, Credentials};
use fake_s3::{Config, FakeS3, FaultConfig, FaultRule};

/// One keep-alive connection that sends requests and reads whole responses.
struct Client {
    stream: TcpStream,
    host: String,
    credentials: Option<Credentials>,
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Client {
    fn new(s3: &FakeS3) -> Client {
        let stream = TcpStream::connect(s3.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client { stream, host: s3.addr().to_string(), credentials: None }
    }

    fn signed(s3: &FakeS3, access_key: &str, secret_key: &str) -> Client {
        let credentials = Credentials { access_key: access_key.into(), secret_key: secret_key.into() };
        Client { credentials: Some(credentials), ..Client::new(s3) }
    }

    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.try_send(method, target, headers, body).expect("connection closed")
    }

    fn try_send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Option<Reply> {
        let mut all: Vec<(String, String)> = headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        if let Some(credentials) = &self.credentials {
            let (path, query) = target.split_once('?').map_or((target, None), |(p, q)| (p, Some(q)));
            let mut signed: Vec<(&str, &str)> = vec![("host", &self.host)];
            signed.extend(headers.iter().map(|(n, v)| (*n, *v)));
            let payload = fake_s3::checksum::sha256_hex(body);
            let amz_date = sigv4::client::amz_date_now();
            all.extend(sigv4::client::sign(
                credentials,
                "us-east-1",
                method,
                path,
                query,
                &signed,
                &payload,
                &amz_date,
            ));
        }
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n", self.host, body.len());
        for (name, value) in &all {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).ok()?;
        read_reply(&mut self.stream, method == "HEAD")
    }
}

fn read_reply(stream: &mut TcpStream, head_only: bool) -> Option<Reply> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':').map(|(n, v)| (n.trim().to_string(), v.trim().to_string())))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; if head_only { 0 } else { length }];
    stream.read_exact(&mut body).ok()?;
    Some(Reply { status, headers, body })
}

#[test]
fn objects_round_trip_in_process() {
    let s3 = FakeS3::start(Config::ephemeral()).unwrap();
    assert!(s3.url().starts_with("http://127.0.0.1:"));
    let mut client = Client::new(&s3);
    assert_eq!(client.send("PUT", "/bucket", &[], b"").status, 200);
    let put = client.send("PUT", "/bucket/a%20b/c%2Bd", &[("Content-Type", "text/plain")], b"hello");
    assert_eq!(put.status, 200);
    assert_eq!(put.header("ETag"), Some("\"5d41402abc4b2a76b9719d911017c592\""));
    let get = client.send("GET", "/bucket/a%20b/c%2Bd", &[], b"");
    assert_eq!((get.status, get.body.as_slice()), (200, &b"hello"[..]));
    assert_eq!(get.header("Content-Type"), Some("text/plain"));
    let ranged = client.send("GET", "/bucket/a%20b/c%2Bd", &[("Range", "bytes=-3")], b"");
    assert_eq!((ranged.status, ranged.body.as_slice()), (206, &b"llo"[..]));
    let head = client.send("HEAD", "/bucket/a%20b/c%2Bd", &[], b"");
    assert_eq!((head.status, head.header("Content-Length")), (200, Some("5")));
    let list = client.send("GET", "/bucket?list-type=2", &[], b"");
    assert!(list.text().contains("<Key>a b/c+d</Key>"), "{}", list.text());
    let missing = client.send("GET", "/bucket/nope", &[], b"");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("<Code>NoSuchKey</Code>"));
    assert_eq!(client.send("DELETE", "/bucket/a%20b/c%2Bd", &[], b"").status, 204);
    assert_eq!(client.send("DELETE", "/bucket", &[], b"").status, 204);
}

#[test]
fn signatures_are_checked_when_keys_are_configured() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials("AK", "SK")).unwrap();
    let mut good = Client::signed(&s3, "AK", "SK");
    assert_eq!(good.send("PUT", "/signed", &[], b"").status, 200);
    assert_eq!(good.send("PUT", "/signed/k%2Fx?x-id=PutObject", &[("x-amz-meta-a", "1")], b"data").status, 200);
    let wrong = Client::signed(&s3, "AK", "nope").send("GET", "/signed/k%2Fx", &[], b"");
    assert_eq!(wrong.status, 403);
    assert!(wrong.text().contains("SignatureDoesNotMatch"));
    let unknown = Client::signed(&s3, "WHO", "SK").send("GET", "/signed/k%2Fx", &[], b"");
    assert!(unknown.text().contains("InvalidAccessKeyId"));
    let anonymous = Client::new(&s3).send("GET", "/signed/k%2Fx", &[], b"");
    assert_eq!(anonymous.status, 403);
}

/// Eight connections race to create each key with If-None-Match: *.
#[test]
fn exactly_one_of_eight_racing_conditional_writers_wins() {
    const WRITERS: usize = 8;
    let s3 = Arc::new(FakeS3::start(Config::ephemeral()).unwrap());
    Client::new(&s3).send("PUT", "/race", &[], b"");
    for round in 0..40 {
        let barrier = Arc::new(Barrier::new(WRITERS));
        let statuses: Vec<u16> = (0..WRITERS)
            .map(|writer| {
                let (s3, barrier) = (s3.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let mut client = Client::new(&s3);
                    barrier.wait();
                    let body = format!("writer {writer}");
                    client.send("PUT", &format!("/race/k{round}"), &[("If-None-Match", "*")], body.as_bytes()).status
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|handle| handle.join().unwrap())
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "round {round}: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 412).count(), WRITERS - 1, "round {round}: {statuses:?}");
        let winner = statuses.iter().position(|s| *s == 200).unwrap();
        let got = Client::new(&s3).send("GET", &format!("/race/k{round}"), &[], b"");
        assert_eq!(got.body, format!("writer {winner}").into_bytes());
    }
}

#[test]
fn injected_put_latency_and_errors() {
    let s3 = FakeS3::start(Config::ephemeral()).unwrap();
    let mut client = Client::new(&s3);
    client.send("PUT", "/faults", &[], b"");
    s3.set_faults(FaultConfig::put_latency_ms(1, 50));
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(client.send("PUT", "/faults/k", &[], b"x").status, 200);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
    // Reads are not delayed (the fastest of three, so that a loaded machine
    // cannot make this fail).
    let fastest_get = (0..3)
        .map(|_| {
            let started = Instant::now();
            assert_eq!(client.send("GET", "/faults/k", &[], b"").status, 200);
            started.elapsed()
        })
        .min()
        .unwrap();
    assert!(fastest_get < Duration::from_millis(50), "{fastest_get:?}");
    assert_eq!(s3.fault_stats().delayed, 3);

    s3.set_faults(FaultConfig::new(2).rule(FaultRule::for_operations(["GetObject"]).error_rate(1.0)));
    let failed = client.send("GET", "/faults/k", &[], b"");
    assert_eq!(failed.status, 500);
    assert!(failed.text().contains("<Code>InternalError</Code>"));
    s3.set_faults(FaultConfig::new(2).rule(FaultRule::for_operations(["*"]).slowdown_rate(1.0)));
    let slow = client.send("PUT", "/faults/other", &[], b"x");
    assert_eq!((slow.status, slow.header("Retry-After")), (503, Some("1")));
    s3.set_faults(FaultConfig::default());
    assert_eq!(client.send("GET", "/faults/other", &[], b"").status, 404, "an injected error must not act");

    s3.set_faults(FaultConfig::new(3).rule(FaultRule::for_operations(["PutObject"]).drop_after_rate(1.0)));
    assert!(client.try_send("PUT", "/faults/lost-reply", &[], b"landed").is_none());
    s3.set_faults(FaultConfig::default());
    assert_eq!(Client::new(&s3).send("GET", "/faults/lost-reply", &[], b"").body, b"landed");
}

#[test]
fn data_dir_keeps_objects_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let etag = {
        let s3 = FakeS3::start(Config::ephemeral().with_data_dir(dir.path())).unwrap();
        let mut client = Client::new(&s3);
        client.send("PUT", "/kept", &[], b"");
        client
            .send("PUT", "/kept/%E2%82%AC/x", &[("x-amz-meta-owner", "me")], b"persisted")
            .header("ETag")
            .unwrap()
            .to_string()
    };
    let s3 = FakeS3::start(Config::ephemeral().with_data_dir(dir.path())).unwrap();
    let got = Client::new(&s3).send("GET", "/kept/%E2%82%AC/x", &[], b"");
    assert_eq!((got.status, got.body.as_slice()), (200, &b"persisted"[..]));
    assert_eq!(got.header("ETag"), Some(etag.as_str()));
    assert_eq!(got.header("x-amz-meta-owner"), Some("me"));
}

/// Method, target, headers, body, and the status expected.
type Case = (&'static str, &'static str, &'static [(&'static str, &'static str)], &'static [u8], u16);

/// Malformed and random requests are answered (4xx) or closed, never a
/// crash: afterwards the server still serves.
#[test]
fn hostile_input_never_takes_the_server_down() {
    let s3 = FakeS3::start(Config { max_object_bytes: 1024, ..Config::ephemeral() }).unwrap();
    let mut client = Client::new(&s3);
    client.send("PUT", "/hostile", &[], b"");
    let cases: [Case; 8] = [
        ("PUT", "/hostile/%ff%fe", &[], b"x", 400),
        ("POST", "/hostile?delete", &[], b"<Delete><Object>", 400),
        ("GET", "/hostile/k", &[("Range", "bytes=99999999999999999999-")], b"", 404),
        ("PUT", "/hostile/k", &[("Content-MD5", "!!")], b"x", 400),
        ("PUT", "/hostile/k", &[("x-amz-content-sha256", "STREAMING-UNSIGNED-PAYLOAD-TRAILER")], b"zz\r\n", 400),
        ("PUT", "/hostile/k?partNumber=0&uploadId=x", &[], b"", 400),
        ("GET", "/hostile?list-type=2&max-keys=-1", &[], b"", 400),
        ("PUT", "/hostile/big", &[], &[0u8; 2048], 400),
    ];
    for (method, target, headers, body, status) in cases {
        let mut client = Client::new(&s3);
        let reply = client.send(method, target, headers, body);
        assert_eq!(reply.status, status, "{method} {target}: {}", reply.text());
        assert!(reply.text().contains("<Error>"), "{}", reply.text());
    }
    let mut random = SplitMix64::new(7);
    for _ in 0..200 {
        let length = (random.next_u64() % 300) as usize;
        let mut garbage: Vec<u8> = (0..length).map(|_| random.next_u64() as u8).collect();
        if random.next_u64().is_multiple_of(2) {
            garbage.splice(0..0, b"PUT /h/".iter().copied());
        }
        garbage.extend_from_slice(b"\r\n\r\n");
        let mut stream = TcpStream::connect(s3.addr()).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = stream.write_all(&garbage);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
    }
    assert_eq!(client.send("PUT", "/hostile/still-alive", &[], b"yes").status, 200);
}
