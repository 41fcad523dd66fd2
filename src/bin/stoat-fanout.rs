//! `stoat-fanout`: subscribe fan-out load. Opens N subscribers (Stoat SSE
//! streams or Redis pub/sub), drives a steady stream of publications
//! (Stoat commits or Redis PUBLISH, closed loop from a few connections),
//! and reports delivered events per second and delivery latency.
//!
//! Latency: every publication carries its send time (nanoseconds since this
//! process started, in the value), and a sample of subscribers decode it on
//! arrival. Every subscriber counts the events it receives.
//!
//! The last line printed is the result:
//! `fanout TARGET: delivered N/s published N/s p50 X ms p99 Y ms bytes/event B subscribers S lost L`

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Parser, ValueEnum};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Stoat,
    Redis,
}

#[derive(Parser, Debug)]
#[command(about = "Subscribe fan-out benchmark: Stoat SSE or Redis pub/sub")]
struct Args {
    #[arg(long, value_enum)]
    target: Target,
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Publishing connections, each closed loop (send, wait for the answer).
    #[arg(long, default_value_t = 16)]
    publishers: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Redis message size in bytes (set it to Stoat's bytes/event for a like
    /// for like comparison).
    #[arg(long, default_value_t = 230)]
    payload_bytes: usize,
    /// Subscribers that decode latency from every event.
    #[arg(long, default_value_t = 8)]
    sampled: usize,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn main() {
    let args = Args::parse();
    epoch();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));

    if args.target == Target::Stoat {
        wait_until_ready(args.addr);
    }
    let mut subscribers = Subscribers::connect(&args).unwrap_or_else(|error| {
        eprintln!("stoat-fanout: cannot open subscribers: {error}");
        std::process::exit(1);
    });
    // Let every subscription settle before publishing.
    subscribers.pump(Duration::from_millis(500), false);
    if subscribers.refused > 0 {
        eprintln!("stoat-fanout: {} subscriptions were refused", subscribers.refused);
        std::process::exit(1);
    }

    let publishers: Vec<_> = (0..args.publishers)
        .map(|index| {
            let (stop, published, measuring) = (stop.clone(), published.clone(), measuring.clone());
            let (target, addr, payload) = (args.target, args.addr, args.payload_bytes);
            std::thread::spawn(move || publish(target, addr, index, payload, &stop, &published, &measuring))
        })
        .collect();

    subscribers.pump(Duration::from_secs(args.warmup), false);
    measuring.store(true, Ordering::Release);
    let started = Instant::now();
    subscribers.pump(Duration::from_secs(args.duration), true);
    let elapsed = started.elapsed().as_secs_f64();
    measuring.store(false, Ordering::Release);
    stop.store(true, Ordering::Release);
    for publisher in publishers {
        let _ = publisher.join();
    }

    let mut latencies = std::mem::take(&mut subscribers.latencies_ns);
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index] as f64 / 1e6
    };
    let events = subscribers.events_measured;
    let target = match args.target {
        Target::Stoat => "stoat",
        Target::Redis => "redis",
    };
    println!(
        "fanout {target}: delivered {:.0}/s published {:.0}/s p50 {:.2} ms p99 {:.2} ms bytes/event {:.0} \
         subscribers {} lost {}",
        events as f64 / elapsed,
        published.load(Ordering::Acquire) as f64 / elapsed,
        percentile(0.50),
        percentile(0.99),
        subscribers.bytes_measured as f64 / events.max(1) as f64,
        args.subscribers,
        subscribers.lost,
    );
}

/// Waits (up to 30 s) for `GET /readyz` to answer 200: subscribing before
/// the log is recovered is refused.
fn wait_until_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buffer = Vec::new();
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            if stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: b\r\n\r\n").is_ok()
                && read_answer(Target::Stoat, &mut stream, &mut buffer)
                && buffer.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("stoat-fanout: {addr} is not ready");
    std::process::exit(1);
}

/// One closed-loop publisher.
fn publish(
    target: Target,
    addr: SocketAddr,
    index: usize,
    payload_bytes: usize,
    stop: &AtomicBool,
    published: &AtomicU64,
    measuring: &AtomicBool,
) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        eprintln!("publisher {index}: cannot connect");
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut buffer = Vec::with_capacity(4096);
    let mut sequence = 0u64;
    while !stop.load(Ordering::Acquire) {
        let sent_ns = now_ns();
        let request = match target {
            Target::Stoat => {
                let key = STANDARD.encode(format!("p{index}/{}", sequence % 1024));
                let value = STANDARD.encode(sent_ns.to_le_bytes());
                let body = format!(r#"{{"operations":[{{"type":"write","key":"{key}","value":"{value}"}}]}}"#);
                format!("POST /v1/commit HTTP/1.1\r\nHost: b\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            }
            Target::Redis => {
                let mut payload = format!("{sent_ns:020}");
                payload.extend(std::iter::repeat_n('x', payload_bytes.saturating_sub(payload.len())));
                format!("*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n${}\r\n{payload}\r\n", payload.len())
            }
        };
        if stream.write_all(request.as_bytes()).is_err() || !read_answer(target, &mut stream, &mut buffer) {
            eprintln!("publisher {index}: connection failed");
            return;
        }
        sequence += 1;
        if measuring.load(Ordering::Acquire) {
            published.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// Reads one answer: an HTTP response (Content-Length) or a RESP integer.
fn read_answer(target: Target, stream: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let complete = match target {
            Target::Redis => buffer.ends_with(b"\r\n"),
            Target::Stoat => buffer.windows(4).position(|w| w == b"\r\n\r\n").is_some_and(|head_end| {
                let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                buffer.len() >= head_end + 4 + length
            }),
        };
        if complete {
            return true;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
}

struct Subscriber {
    stream: MioStream,
    /// The response head (Stoat) or subscribe confirmation (Redis) was seen.
    confirmed: bool,
    /// Bytes not yet scanned completely (a marker may straddle reads).
    carry: Vec<u8>,
    sampled: bool,
}

struct Subscribers {
    target: Target,
    poll: Poll,
    subscribers: Vec<Subscriber>,
    events_measured: u64,
    bytes_measured: u64,
    latencies_ns: Vec<u64>,
    lost: usize,
    /// Subscriptions answered with anything but a stream.
    refused: usize,
    scratch: Vec<u8>,
}

impl Subscribers {
    fn connect(args: &Args) -> io::Result<Subscribers> {
        let poll = Poll::new()?;
        let mut subscribers = Vec::with_capacity(args.subscribers);
        for index in 0..args.subscribers {
            let mut stream = TcpStream::connect(args.addr)?;
            stream.set_nodelay(true)?;
            let request: &[u8] = match args.target {
                Target::Stoat => b"GET /v1/subscribe HTTP/1.1\r\nHost: b\r\n\r\n",
                Target::Redis => b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n",
            };
            stream.write_all(request)?;
            stream.set_nonblocking(true)?;
            let mut stream = MioStream::from_std(stream);
            poll.registry().register(&mut stream, Token(index), Interest::READABLE)?;
            subscribers.push(Subscriber { stream, confirmed: false, carry: Vec::new(), sampled: index < args.sampled });
        }
        Ok(Subscribers {
            target: args.target,
            poll,
            subscribers,
            events_measured: 0,
            bytes_measured: 0,
            latencies_ns: Vec::new(),
            lost: 0,
            refused: 0,
            scratch: vec![0; 256 * 1024],
        })
    }

    /// Reads from every ready subscriber for `duration`.
    fn pump(&mut self, duration: Duration, measure: bool) {
        let deadline = Instant::now() + duration;
        let mut events = Events::with_capacity(1024);
        while Instant::now() < deadline {
            let timeout = deadline.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
            if self.poll.poll(&mut events, Some(timeout)).is_err() {
                continue;
            }
            for event in events.iter() {
                self.read(event.token().0, measure);
            }
        }
    }

    fn read(&mut self, index: usize, measure: bool) {
        loop {
            let subscriber = &mut self.subscribers[index];
            match subscriber.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.lost += 1;
                    let _ = self.poll.registry().deregister(&mut subscriber.stream);
                    return;
                }
                Ok(read) => {
                    subscriber.carry.extend_from_slice(&self.scratch[..read]);
                    if !subscriber.confirmed {
                        let expected: &[u8] = match self.target {
                            Target::Stoat => b"HTTP/1.1 200 ",
                            Target::Redis => b"*3\r\n$9\r\nsubscribe\r\n",
                        };
                        if subscriber.carry.len() < expected.len() {
                            continue;
                        }
                        if !subscriber.carry.starts_with(expected) {
                            if self.refused == 0 {
                                let answer =
                                    String::from_utf8_lossy(&subscriber.carry[..subscriber.carry.len().min(300)]);
                                eprintln!("stoat-fanout: a subscription was answered {answer:?}");
                            }
                            self.refused += 1;
                            let _ = self.poll.registry().deregister(&mut subscriber.stream);
                            return;
                        }
                        subscriber.confirmed = true;
                    }
                    let (count, latencies) = scan(self.target, &mut subscriber.carry, subscriber.sampled);
                    if measure {
                        self.events_measured += count;
                        self.bytes_measured += read as u64;
                        self.latencies_ns.extend(latencies);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.lost += 1;
                    return;
                }
            }
        }
    }
}

/// Counts the complete events in `carry` (keeping an incomplete tail) and,
/// if `sampled`, decodes each one's send time into a latency.
fn scan(target: Target, carry: &mut Vec<u8>, sampled: bool) -> (u64, Vec<u64>) {
    let now = now_ns();
    let mut count = 0;
    let mut latencies = Vec::new();
    let mut consumed = 0;
    match target {
        Target::Stoat => {
            // Events end with a blank line; transaction events name themselves.
            while let Some(end) = find(&carry[consumed..], b"\n\n") {
                let event = &carry[consumed..consumed + end];
                if find(event, b"event: transaction").is_some() {
                    count += 1;
                    if sampled {
                        if let Some(at) = find(event, b"\"value\":\"") {
                            let start = at + 9;
                            if let Some(encoded) = event.get(start..start + 12) {
                                if let Ok(bytes) = STANDARD.decode(encoded) {
                                    if let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice()) {
                                        latencies.push(now.saturating_sub(u64::from_le_bytes(bytes)));
                                    }
                                }
                            }
                        }
                    }
                }
                consumed += end + 2;
            }
        }
        Target::Redis => {
            // *3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$N\r\n<payload>\r\n
            const MARKER: &[u8] = b"$7\r\nmessage\r\n$5\r\nbench\r\n$";
            while let Some(at) = find(&carry[consumed..], MARKER) {
                let length_start = consumed + at + MARKER.len();
                let Some(line_end) = find(&carry[length_start..], b"\r\n") else { break };
                let length: usize = std::str::from_utf8(&carry[length_start..length_start + line_end])
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0);
                let payload_start = length_start + line_end + 2;
                if carry.len() < payload_start + length + 2 {
                    break;
                }
                count += 1;
                if sampled {
                    let digits = &carry[payload_start..payload_start + 20.min(length)];
                    if let Some(sent) = std::str::from_utf8(digits).ok().and_then(|t| t.parse::<u64>().ok()) {
                        latencies.push(now.saturating_sub(sent));
                    }
                }
                consumed = payload_start + length + 2;
            }
        }
    }
    carry.drain(..consumed);
    (count, latencies)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
