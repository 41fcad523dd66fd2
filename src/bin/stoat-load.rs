//! Closed-loop commit load for `bench/run`: `--connections` keep-alive
//! connections on one thread (one epoll), each sending its next request as
//! soon as the answer to the last one is read, for Stoat, etcd, or a server
//! answering a fixed body (nginx), with the workloads of [`stoat::loadgen`].
//!
//! It exists because the client must not be what is measured: wrk builds
//! each request in Lua and hands every answer to Lua, which on one core of
//! the benchmark machine tops out at about 25-30k requests/s against nginx,
//! below what the servers can do. Here a request costs a `write` and an
//! answer a `read` or two, with no allocation.
//!
//! Prints one line:
//! `load: <requests/s> requests/s, latency ms p50 <a> p90 <b> p99 <c> max <d>, committed=<n> not_committed=<m> other=<k>`

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use stoat::loadgen::{parse_answer, Shape, Tally, Target, Workload};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum TargetArg {
    Stoat,
    Etcd,
    Fixed,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ShapeArg {
    Point,
    Large,
}

#[derive(Parser, Debug)]
#[command(about = "Closed-loop commit load on one thread; prints requests/s, latency percentiles and outcomes")]
struct Args {
    /// The server, e.g. 127.0.0.1:7474.
    #[arg(long)]
    addr: SocketAddr,
    /// What the server is: stoat (POST /v1/commit), etcd (POST /v3/kv/txn),
    /// fixed (Stoat's requests to a server answering a fixed body).
    #[arg(long, value_enum, default_value = "stoat")]
    target: TargetArg,
    /// point: 1 point read + 1 write; large: 10 range reads + 20 writes.
    #[arg(long, value_enum, default_value = "point")]
    shape: ShapeArg,
    /// Keep-alive connections, each with one request outstanding.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load not measured, first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keys are drawn from this many.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u32,
}

struct Connection {
    stream: TcpStream,
    workload: Workload,
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    sent_at: Instant,
}

fn main() {
    let args = Args::parse();
    let positive = |value: f64| value.is_finite() && value > 0.0;
    if args.connections == 0 || !positive(args.duration) || !(args.warmup == 0.0 || positive(args.warmup)) {
        eprintln!("stoat-load: --connections and --duration must be positive, --warmup at least 0");
        std::process::exit(2);
    }
    match run(&args) {
        Ok(tally) => report(&args, tally),
        Err(error) => {
            eprintln!("stoat-load: {error}");
            std::process::exit(1);
        }
    }
}

fn run(args: &Args) -> io::Result<Tally> {
    let target = match args.target {
        TargetArg::Stoat => Target::Stoat,
        TargetArg::Etcd => Target::Etcd,
        TargetArg::Fixed => Target::Fixed,
    };
    let shape = match args.shape {
        ShapeArg::Point => Shape::Point,
        ShapeArg::Large => Shape::Large,
    };
    let mut poll = Poll::new()?;
    let mut connections = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        let std_stream = std::net::TcpStream::connect(args.addr)?;
        std_stream.set_nodelay(true)?;
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        poll.registry().register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)?;
        connections.push(Connection {
            stream,
            workload: Workload::new(target, shape, args.keys, index as u64),
            output: Vec::with_capacity(4096),
            written: 0,
            input: Vec::with_capacity(4096),
            sent_at: Instant::now(),
        });
    }
    let measure_from = Instant::now() + Duration::from_secs_f64(args.warmup);
    let end = measure_from + Duration::from_secs_f64(args.duration);
    let mut tally = Tally::default();
    let mut scratch = Vec::new();
    for connection in &mut connections {
        send_next(connection)?;
    }
    let mut events = Events::with_capacity(1024);
    let mut chunk = vec![0u8; 65536];
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(100)))?;
        for event in &events {
            let connection = &mut connections[event.token().0];
            if event.is_writable() {
                flush(connection)?;
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                match connection.stream.read(&mut chunk) {
                    Ok(0) => {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed a connection"))
                    }
                    Ok(read) => connection.input.extend_from_slice(&chunk[..read]),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                    Err(error) => return Err(error),
                }
            }
            let Some(answer) = parse_answer(&connection.input, &mut scratch).map_err(io::Error::other)? else {
                continue;
            };
            let now = Instant::now();
            let body =
                if answer.chunked { &scratch[answer.body.clone()] } else { &connection.input[answer.body.clone()] };
            let outcome = connection.workload.observe(answer.status, body);
            if connection.sent_at >= measure_from && now < end {
                tally.record(outcome, now.duration_since(connection.sent_at));
            }
            if connection.input.len() > answer.length {
                return Err(io::Error::other("an answer arrived that no request asked for"));
            }
            connection.input.clear();
            send_next(connection)?;
        }
    }
    Ok(tally)
}

fn send_next(connection: &mut Connection) -> io::Result<()> {
    connection.output.clear();
    connection.written = 0;
    connection.workload.next_request(&mut connection.output);
    connection.sent_at = Instant::now();
    flush(connection)
}

fn flush(connection: &mut Connection) -> io::Result<()> {
    while connection.written < connection.output.len() {
        match connection.stream.write(&connection.output[connection.written..]) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "the server stopped reading")),
            Ok(written) => connection.written += written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn report(args: &Args, mut tally: Tally) {
    let p = tally.percentiles_ms(&[50.0, 90.0, 99.0, 100.0]);
    println!(
        "load: {:.0} requests/s, latency ms p50 {:.3} p90 {:.3} p99 {:.3} max {:.3}, committed={} not_committed={} \
         other={}",
        tally.count() as f64 / args.duration,
        p[0],
        p[1],
        p[2],
        p[3],
        tally.committed,
        tally.not_committed,
        tally.other,
    );
}
