//! A `GET /v1/subscribe` stream read over raw TCP, event by event.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::Value;

use super::DEADLINE;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u64>,
    pub kind: String,
    pub data: Value,
}

/// A subscribe stream read over raw TCP.
pub struct Stream {
    stream: TcpStream,
    pub buffer: Vec<u8>,
}

impl Stream {
    /// Opens `/v1/subscribe?{query}` with extra header lines; returns the
    /// status and head, and the stream when it is 200.
    pub fn open(addr: SocketAddr, query: &str, headers: &str) -> (u16, String, Stream) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let request = format!("GET /v1/subscribe?{query} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut this = Stream { stream, buffer: Vec::new() };
        let head_end = loop {
            if let Some(end) = this.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            assert!(this.fill(), "closed before a response head");
        };
        let head = String::from_utf8(this.buffer.drain(..head_end).collect()).unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head, this)
    }

    pub fn subscribe(addr: SocketAddr, query: &str) -> Stream {
        let (status, head, stream) = Stream::open(addr, query, "");
        assert_eq!(status, 200, "{head}{}", String::from_utf8_lossy(&stream.buffer));
        assert!(head.contains("Content-Type: text/event-stream\r\n"), "{head}");
        stream
    }

    /// Reads more; false at end of stream.
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(read) => {
                self.buffer.extend_from_slice(&chunk[..read]);
                true
            }
            // A server that ends a stream may reset it with bytes unread.
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => false,
            Err(error) => panic!("stream read failed: {error}"),
        }
    }

    /// The next event, or `None` when the server closed the stream.
    pub fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let text = String::from_utf8(self.buffer.drain(..end + 2).collect()).unwrap();
                let mut event = Event { id: None, kind: "message".into(), data: Value::Null };
                for line in text.lines().filter(|line| !line.is_empty()) {
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => event.id = Some(value.parse().unwrap()),
                        "event" => event.kind = value.to_string(),
                        "data" => event.data = serde_json::from_str(value).unwrap(),
                        _ => panic!("unexpected line {line:?}"),
                    }
                }
                return Some(event);
            }
            if !self.fill() {
                assert!(self.buffer.is_empty(), "stream ended mid-event: {:?}", String::from_utf8_lossy(&self.buffer));
                return None;
            }
        }
    }

    /// The next transaction event, skipping checkpoints.
    pub fn next_transaction(&mut self) -> Value {
        loop {
            let event = self.next().expect("a transaction event before the stream ends");
            match event.kind.as_str() {
                "checkpoint" => continue,
                "transaction" => {
                    assert_eq!(event.id, event.data["version"].as_u64(), "id is the version");
                    return event.data;
                }
                other => panic!("unexpected event {other}: {}", event.data),
            }
        }
    }

    /// The next checkpoint, skipping transactions.
    pub fn next_checkpoint(&mut self) -> Value {
        loop {
            let event = self.next().expect("a checkpoint before the stream ends");
            if event.kind == "checkpoint" {
                return event.data;
            }
        }
    }
}
