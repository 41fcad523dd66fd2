//! Open-loop, paced commit load: latency at a chosen rate, which a
//! closed-loop tool like wrk cannot measure (it waits for each answer before
//! the next request, so a slow answer hides the requests that would have
//! queued behind it). The requests are those of `stoat-load`
//! (`stoat::loadgen`).
//!
//! One thread and a pool of `--connections` keep-alive connections (mio).
//! Request `k` is due at `start + k / rate`; a due request goes out on any
//! idle connection, and waits in a queue only while every connection is
//! busy, that is while the server holds `--connections` requests. Latency
//! is measured from the *due* time, so that wait counts (no coordinated
//! omission), but one late answer delays no request but its own as long as
//! other connections are idle. (A schedule per connection, as wrk2 keeps,
//! makes the requests behind a late answer on its connection wait too, and
//! at half load each connection is busy half the time: that measured the
//! client's queues as much as the server.) When the next request is due
//! within a millisecond the thread polls without sleeping, since a poll
//! timeout has millisecond resolution; run it on a core of its own.
//!
//! The workload is the commit workload of `bench/run`: 1 point_read + 1
//! write on random keys (a 12-byte prefix and a 4-byte big-endian integer
//! below `--keys`), `read_version` tracked from the answers. Prints one line:
//! offered and achieved rates, outcomes, latency percentiles in
//! milliseconds, and the most requests that waited for a connection.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
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
    /// Keep-alive connections in the pool.
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

/// How long to wait for the answers still outstanding at the end.
const DRAIN: Duration = Duration::from_secs(30);

struct Connection {
    stream: TcpStream,
    /// The request being sent and how much of it is written.
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    /// The due time of the request this connection waits on.
    due: Option<Instant>,
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
    match run(&args) {
        Ok((mut tally, waited_max)) => {
            let p = tally.percentiles_ms(&[50.0, 90.0, 99.0, 99.9, 100.0]);
            println!(
                "paced: offered {:.0}/s, achieved {:.0}/s, 200={} 409={} other={}, latency ms p50 {:.2} p90 {:.2} \
                 p99 {:.2} p99.9 {:.2} max {:.2}, waiting for a connection at most {}",
                args.rate,
                tally.count() as f64 / args.duration,
                tally.committed,
                tally.not_committed,
                tally.other,
                p[0],
                p[1],
                p[2],
                p[3],
                p[4],
                waited_max,
            );
        }
        Err(error) => {
            eprintln!("stoat-pace: {error}");
            std::process::exit(1);
        }
    }
}

/// Sends the schedule and returns the measured tally and the longest queue
/// of due requests waiting for a connection while measuring.
fn run(args: &Args) -> std::io::Result<(Tally, usize)> {
    let mut poll = Poll::new()?;
    let mut connections = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let stream = std::net::TcpStream::connect(args.addr)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)?;
        connections.push(Connection {
            stream,
            output: Vec::with_capacity(1024),
            written: 0,
            input: Vec::with_capacity(4096),
            due: None,
        });
    }
    let mut idle: Vec<usize> = (0..args.connections).rev().collect();
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    let mut waited_max = 0;
    let mut workload = Workload::new(Target::Stoat, Shape::Point, args.keys, 1);
    let mut tally = Tally::default();
    let mut scratch = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let mut events = Events::with_capacity(1024);

    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now() + Duration::from_millis(100);
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut next_due = start;
    let mut sent: u64 = 0;
    loop {
        let now = Instant::now();
        while next_due <= now && next_due < end {
            waiting.push_back(next_due);
            sent += 1;
            next_due = start + interval.mul_f64(sent as f64);
        }
        if now >= measure_from {
            waited_max = waited_max.max(waiting.len().saturating_sub(idle.len()));
        }
        while !waiting.is_empty() {
            let Some(index) = idle.pop() else { break };
            let due = waiting.pop_front().expect("not empty");
            let connection = &mut connections[index];
            connection.output.clear();
            workload.next_request(&mut connection.output);
            connection.written = 0;
            connection.due = Some(due);
            flush(connection)?;
        }
        let outstanding = connections.len() - idle.len();
        if next_due >= end && waiting.is_empty() && outstanding == 0 {
            return Ok((tally, waited_max));
        }
        if now > end + DRAIN {
            return Err(std::io::Error::new(ErrorKind::TimedOut, format!("{outstanding} answers never came")));
        }
        let timeout = if next_due >= end || !waiting.is_empty() {
            // Nothing more to send until an answer frees a connection.
            Some(Duration::from_millis(100))
        } else {
            let until = next_due.saturating_duration_since(Instant::now());
            Some(if until < Duration::from_millis(1) { Duration::ZERO } else { until - Duration::from_millis(1) })
        };
        poll.poll(&mut events, timeout)?;
        for event in &events {
            let index = event.token().0;
            let connection = &mut connections[index];
            if event.is_writable() {
                flush(connection)?;
            }
            if !event.is_readable() && !event.is_read_closed() {
                continue;
            }
            loop {
                match connection.stream.read(&mut chunk) {
                    Ok(0) => {
                        return Err(std::io::Error::new(ErrorKind::UnexpectedEof, "the server closed a connection"))
                    }
                    Ok(read) => connection.input.extend_from_slice(&chunk[..read]),
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                }
            }
            let Some(answer) = parse_answer(&connection.input, &mut scratch).map_err(std::io::Error::other)? else {
                continue;
            };
            let Some(due) = connection.due.take() else {
                return Err(std::io::Error::other("an answer to no request"));
            };
            let latency = due.elapsed();
            let body =
                if answer.chunked { &scratch[answer.body.clone()] } else { &connection.input[answer.body.clone()] };
            let outcome = workload.observe(answer.status, body);
            if due >= measure_from {
                // From the due time to the whole answer.
                tally.record(outcome, latency);
            }
            connection.input.drain(..answer.length);
            idle.push(index);
        }
    }
}

/// Writes what is left of the connection's request, as far as the socket
/// takes it (the rest goes on a writable event).
fn flush(connection: &mut Connection) -> std::io::Result<()> {
    while connection.written < connection.output.len() {
        match connection.stream.write(&connection.output[connection.written..]) {
            Ok(written) => connection.written += written,
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}
