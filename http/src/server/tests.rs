//! Tests of the general server through real loopback sockets: keep-alive
//! and pipelining in order, held (delayed) responses that block no thread,
//! dropped connections, 100-continue, refusals of malformed or oversized
//! requests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::*;

/// Echoes method, target and body length; `/sleep/N` holds the response
/// N ms; `/drop` closes without answering.
struct Echo;

impl Handler for Echo {
    fn handle(&self, request: Request<'_>) -> Response {
        let path = request.head.path().to_string();
        if path == "/panic" {
            panic!("a handler bug");
        }
        if path == "/drop" {
            let mut response = Response::new(500);
            response.drop_connection = true;
            return response;
        }
        let text = format!("{} {} {}", request.head.method.as_str(), request.head.target(), request.body.len());
        let mut response = Response::new(200).header("Content-Type", "text/plain").body(Body::Bytes(text.into_bytes()));
        if let Some(ms) = path.strip_prefix("/sleep/").and_then(|ms| ms.parse().ok()) {
            response.delay = Duration::from_millis(ms);
        }
        if path == "/big" {
            let data: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(vec![7u8; 3 * 1024 * 1024]);
            response.body = Body::Shared(data, 1..3 * 1024 * 1024);
        }
        response
    }
}

fn start() -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = ServerConfig {
        limits: Limits { head_bytes_max: 4096, body_bytes_max: 1024 },
        workers: 2,
        ..ServerConfig::default()
    };
    Server::start(listener, config, Arc::new(Echo)).unwrap()
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.local_addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Reads one response: status and body (Content-Length framed).
fn read_response(stream: &mut TcpStream) -> Option<(u16, Vec<u8>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8(head).unwrap();
    let status = text[9..12].parse().unwrap();
    let length: usize = text
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body).ok()?;
    Some((status, body))
}

#[test]
fn pipelined_requests_answered_in_order() {
    let server = start();
    let mut stream = connect(&server);
    stream
        .write_all(
            b"GET /sleep/50 HTTP/1.1\r\nHost: x\r\n\r\nPUT /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
              POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        )
        .unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"GET /sleep/50 0".to_vec()));
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"PUT /b 3".to_vec()));
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"POST /c 2".to_vec()));
}

/// Bytes that arrive while a response is held must neither close the
/// connection nor be lost: they are read when the response has gone out.
#[test]
fn events_while_a_response_is_held_keep_the_connection() {
    let server = start();
    let mut stream = connect(&server);
    for _ in 0..3 {
        stream.write_all(b"GET /sleep/150 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(40));
        stream.write_all(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).unwrap(), (200, b"GET /sleep/150 0".to_vec()));
        assert_eq!(read_response(&mut stream).unwrap(), (200, b"GET /next 0".to_vec()));
    }
}

#[test]
fn a_held_response_blocks_no_other_connection() {
    let server = start();
    let mut slow = connect(&server);
    slow.write_all(b"GET /sleep/400 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // More held requests than workers: none of them occupies a worker.
    let mut others: Vec<TcpStream> = (0..4).map(|_| connect(&server)).collect();
    for other in &mut others {
        other.write_all(b"GET /sleep/300 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    }
    let started = Instant::now();
    let mut fast = connect(&server);
    fast.write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut fast).unwrap().0, 200);
    assert!(started.elapsed() < Duration::from_millis(250), "{:?}", started.elapsed());
    assert_eq!(read_response(&mut slow).unwrap().0, 200);
    assert!(started.elapsed() >= Duration::from_millis(350));
}

#[test]
fn dropped_connection_gets_no_answer() {
    let server = start();
    let mut stream = connect(&server);
    stream.write_all(b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap(), 0);
}

#[test]
fn expect_continue_is_invited() {
    let server = start();
    let mut stream = connect(&server);
    stream.write_all(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"body").unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"PUT /e 4".to_vec()));
}

#[test]
fn oversized_and_malformed_requests_are_refused_and_closed() {
    let server = start();
    let mut stream = connect(&server);
    stream.write_all(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 413);
    assert!(read_response(&mut stream).is_none());
    let mut stream = connect(&server);
    stream.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 400);
    // The server still serves.
    let mut stream = connect(&server);
    stream.write_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 200);
}

#[test]
fn large_shared_bodies_are_written_whole_and_head_gets_none() {
    let server = start();
    let mut stream = connect(&server);
    stream.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\nHEAD /big HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (status, body) = read_response(&mut stream).unwrap();
    assert_eq!((status, body.len()), (200, 3 * 1024 * 1024 - 1));
    assert!(body.iter().all(|&b| b == 7));
    // HEAD: the length of the GET, no body; the connection stays usable.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(String::from_utf8(head).unwrap().contains(&format!("Content-Length: {}", 3 * 1024 * 1024 - 1)));
    stream.write_all(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"GET /after 0".to_vec()));
}

#[test]
fn a_panicking_handler_costs_one_request() {
    let server = start();
    let mut stream = connect(&server);
    for _ in 0..4 {
        stream.write_all(b"GET /panic HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream).unwrap().0, 500);
    }
    stream.write_all(b"GET /fine HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap(), (200, b"GET /fine 0".to_vec()));
}

#[test]
fn stop_joins_threads_and_closes() {
    let mut server = start();
    let mut stream = connect(&server);
    stream.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream).unwrap().0, 200);
    server.stop();
    let mut rest = Vec::new();
    assert_eq!(stream.read_to_end(&mut rest).unwrap_or(0), 0);
}
