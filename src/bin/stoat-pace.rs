//! Open-loop, paced commit load: latency at a chosen rate, which a
//! closed-loop tool like wrk cannot measure (it waits for each answer before
//! the next request, so a slow answer hides the requests that would have
//! queued behind it).
//!
//! Each of `--connections` threads owns one keep-alive connection and sends
//! on a fixed schedule (`connections / rate` seconds apart, staggered across
//! threads). Latency is measured from the *scheduled* send time, so time a
//! request spends waiting for an earlier answer on its connection counts
//! (no coordinated omission). The workload is the commit workload of
//! `bench/run`: 1 point_read + 1 write on random keys (a 12-byte prefix and
//! a 4-byte big-endian integer below `--keys`), `read_version` tracked from
//! the answers. Prints one line: offered and achieved rates, outcomes, and
//! latency percentiles in milliseconds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Parser;
use stoat::random::SplitMix64;

#[derive(Parser, Debug)]
#[command(about = "Open-loop paced commits against a Stoat server; prints latency percentiles")]
struct Args {
    /// The server, e.g. 127.0.0.1:7474.
    #[arg(long)]
    addr: SocketAddr,
    /// Commits per second offered, over all connections.
    #[arg(long)]
    rate: f64,
    /// Keep-alive connections, one thread each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent but not measured, first.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Keys are drawn from this many.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u32,
}

#[derive(Default)]
struct Tally {
    /// Microseconds from the scheduled send to the whole answer.
    latencies_us: Vec<u64>,
    committed: u64,
    conflicts: u64,
    other: u64,
}

fn main() {
    let args = Args::parse();
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if !positive(args.rate)
        || args.connections == 0
        || !positive(args.duration)
        || !(args.warmup == 0.0 || positive(args.warmup))
    {
        eprintln!("stoat-pace: --rate, --connections and --duration must be positive");
        std::process::exit(2);
    }
    let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let threads: Vec<_> = (0..args.connections)
        .map(|index| {
            let (addr, keys, connections) = (args.addr, args.keys, args.connections);
            let first = start + interval.mul_f64(index as f64 / connections as f64);
            std::thread::spawn(move || run_connection(addr, keys, index as u64, first, interval, measure_from, end))
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        match thread.join() {
            Ok(Ok(tally)) => {
                total.latencies_us.extend(tally.latencies_us);
                total.committed += tally.committed;
                total.conflicts += tally.conflicts;
                total.other += tally.other;
            }
            Ok(Err(error)) => {
                eprintln!("stoat-pace: a connection failed: {error}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    total.latencies_us.sort_unstable();
    let count = total.latencies_us.len();
    let percentile = |p: f64| -> f64 {
        if count == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * count as f64).ceil() as usize;
        total.latencies_us[rank.clamp(1, count) - 1] as f64 / 1000.0
    };
    println!(
        "paced: offered {:.0}/s, achieved {:.0}/s, 200={} 409={} other={}, latency ms p50 {:.2} p90 {:.2} p99 {:.2} \
         p99.9 {:.2} max {:.2}",
        args.rate,
        count as f64 / args.duration,
        total.committed,
        total.conflicts,
        total.other,
        percentile(50.0),
        percentile(90.0),
        percentile(99.0),
        percentile(99.9),
        percentile(100.0),
    );
}

fn run_connection(
    addr: SocketAddr,
    keys: u32,
    seed: u64,
    first: Instant,
    interval: Duration,
    measure_from: Instant,
    end: Instant,
) -> std::io::Result<Tally> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut random = SplitMix64::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5eed);
    let mut tally = Tally::default();
    let mut read_version = 0u64;
    let mut buffer = Vec::with_capacity(4096);
    let mut scheduled = first;
    while scheduled < end {
        let now = Instant::now();
        if now < scheduled {
            std::thread::sleep(scheduled - now);
        }
        let body = format!(
            r#"{{"read_version":{read_version},"preconditions":[{{"type":"point_read","key":"{}"}}],"operations":[{{"type":"write","key":"{}","value":"dmFsdWU="}}]}}"#,
            key(&mut random, keys),
            key(&mut random, keys),
        );
        let request = format!(
            "POST /v1/commit HTTP/1.1\r\nHost: stoat\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let (status, version) = read_answer(&mut stream, &mut buffer)?;
        let latency = scheduled.elapsed();
        if scheduled >= measure_from {
            tally.latencies_us.push(latency.as_micros() as u64);
            match status {
                200 => tally.committed += 1,
                409 => tally.conflicts += 1,
                _ => tally.other += 1,
            }
        }
        if let Some(version) = version {
            read_version = read_version.max(version);
        }
        scheduled += interval;
    }
    Ok(tally)
}

/// `stoat-bench-` and a 4-byte big-endian integer below `keys`, in base64.
fn key(random: &mut SplitMix64, keys: u32) -> String {
    let mut bytes = *b"stoat-bench-\0\0\0\0";
    let n = (random.next_u64() % u64::from(keys.max(1))) as u32;
    bytes[12..].copy_from_slice(&n.to_be_bytes());
    STANDARD.encode(bytes)
}

/// Reads one answer (Content-Length framed): its status and the `version`
/// in its body, if any.
fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<(u16, Option<u64>)> {
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before an answer"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head.get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed inside an answer"));
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = &buffer[head_end..head_end + length];
    let version = find(body, b"\"version\":").map(|at| {
        body[at + 10..].iter().take_while(|byte| byte.is_ascii_digit()).fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'))
    });
    Ok((status, version))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
