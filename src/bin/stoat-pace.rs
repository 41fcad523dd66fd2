//! Open-loop, paced commit load: latency at a chosen rate, which a
//! closed-loop tool like wrk cannot measure (it waits for each answer before
//! the next request, so a slow answer hides the requests that would have
//! queued behind it). The requests are those of `stoat-load`
//! (`stoat::loadgen`).
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

use clap::Parser;
use stoat::loadgen::{parse_answer, Shape, Tally, Target, Workload};

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
            Ok(Ok(tally)) => total.merge(tally),
            Ok(Err(error)) => {
                eprintln!("stoat-pace: a connection failed: {error}");
                std::process::exit(1);
            }
            Err(_) => std::process::exit(1),
        }
    }
    let p = total.percentiles_ms(&[50.0, 90.0, 99.0, 99.9, 100.0]);
    println!(
        "paced: offered {:.0}/s, achieved {:.0}/s, 200={} 409={} other={}, latency ms p50 {:.2} p90 {:.2} p99 {:.2} \
         p99.9 {:.2} max {:.2}",
        args.rate,
        total.count() as f64 / args.duration,
        total.committed,
        total.not_committed,
        total.other,
        p[0],
        p[1],
        p[2],
        p[3],
        p[4],
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
    let mut workload = Workload::new(Target::Stoat, Shape::Point, keys, seed);
    let mut tally = Tally::default();
    let (mut request, mut input, mut scratch) = (Vec::with_capacity(1024), Vec::with_capacity(4096), Vec::new());
    let mut chunk = [0u8; 4096];
    let mut scheduled = first;
    while scheduled < end {
        let now = Instant::now();
        if now < scheduled {
            std::thread::sleep(scheduled - now);
        }
        request.clear();
        workload.next_request(&mut request);
        stream.write_all(&request)?;
        input.clear();
        let answer = loop {
            if let Some(answer) = parse_answer(&input, &mut scratch).map_err(std::io::Error::other)? {
                break answer;
            }
            let read = stream.read(&mut chunk)?;
            if read == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before an answer"));
            }
            input.extend_from_slice(&chunk[..read]);
        };
        let latency = scheduled.elapsed();
        let body = if answer.chunked { &scratch[answer.body] } else { &input[answer.body] };
        let outcome = workload.observe(answer.status, body);
        if scheduled >= measure_from {
            // From the scheduled send to the whole answer.
            tally.record(outcome, latency);
        }
        scheduled += interval;
    }
    Ok(tally)
}
