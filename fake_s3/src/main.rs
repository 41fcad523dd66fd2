//! The `fake-s3` binary: flags into a `Config`, then serve until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use fake_s3::{Config, FakeS3, FaultConfig, FaultRule, Latency};

/// An S3-compatible server for tests and local use, with seeded fault injection.
///
/// Fault flags take OP=VALUE, where OP is an S3 operation name (PutObject,
/// GetObject, ...) or '*'; each flag adds one rule. A running server's faults
/// are read and replaced at /_fake_s3/faults (GET, PUT with JSON, DELETE);
/// /_fake_s3/stats counts requests and injected faults.
#[derive(Debug, Parser)]
#[command(name = "fake-s3", version)]
struct Flags {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Keep objects on disk here (atomic writes, kept across restarts).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// With --secret-key: verify every request's SigV4 signature.
    #[arg(long, requires = "secret_key")]
    access_key: Option<String>,
    /// The secret of --access-key.
    #[arg(long, requires = "access_key")]
    secret_key: Option<String>,
    /// The region reported by HeadBucket and GetBucketLocation (any region is accepted in signatures).
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Largest request body accepted, in bytes (bodies are held in memory).
    #[arg(long, default_value_t = 1024 * 1024 * 1024)]
    max_object_bytes: u64,
    /// Smallest part of a multipart upload but the last, in bytes.
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    min_part_bytes: u64,
    /// Threads that run requests.
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// The whole fault configuration as JSON (or @FILE); other fault flags add rules to it.
    #[arg(long)]
    faults: Option<String>,
    /// Seed of the fault draws.
    #[arg(long)]
    fault_seed: Option<u64>,
    /// Added latency: OP=MS, OP=MIN..MAX (uniform) or OP=exp:MEAN (exponential), in ms.
    #[arg(long, value_name = "OP=SPEC")]
    latency: Vec<String>,
    /// Probability of 500 InternalError: OP=RATE.
    #[arg(long, value_name = "OP=RATE")]
    error_rate: Vec<String>,
    /// Probability of 503 SlowDown: OP=RATE.
    #[arg(long, value_name = "OP=RATE")]
    slowdown_rate: Vec<String>,
    /// Probability of closing the connection without acting: OP=RATE.
    #[arg(long, value_name = "OP=RATE")]
    drop_rate: Vec<String>,
    /// Probability of acting, then closing without answering: OP=RATE.
    #[arg(long, value_name = "OP=RATE")]
    drop_after_rate: Vec<String>,
    /// Stall: OP=RATE:MS (no answer for MS, then the connection is closed).
    #[arg(long, value_name = "OP=RATE:MS")]
    stall: Vec<String>,
}

fn split_op(text: &str) -> Result<(String, &str), String> {
    let (op, value) = text.split_once('=').ok_or_else(|| format!("{text:?}: expected OP=VALUE"))?;
    Ok((op.to_string(), value))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    text.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| format!("{text:?}: not a rate in 0..1"))
}

fn parse_latency(text: &str) -> Result<Latency, String> {
    let number = |s: &str| s.trim().parse::<u64>().map_err(|_| format!("{text:?}: not milliseconds"));
    if let Some(mean) = text.strip_prefix("exp:") {
        return Ok(Latency::ExponentialMeanMs(number(mean)?));
    }
    if let Some((low, high)) = text.split_once("..") {
        return Ok(Latency::UniformMs(number(low)?, number(high)?));
    }
    Ok(Latency::FixedMs(number(text)?))
}

/// A `FaultRule` builder method that sets one rate.
type SetRate = fn(FaultRule, f64) -> FaultRule;

fn fault_config(flags: &Flags) -> Result<FaultConfig, String> {
    let mut config = match &flags.faults {
        Some(text) => {
            let json = match text.strip_prefix('@') {
                Some(path) => std::fs::read(path).map_err(|e| format!("--faults {path}: {e}"))?,
                None => text.as_bytes().to_vec(),
            };
            FaultConfig::from_json(&json).map_err(|e| format!("--faults: {e}"))?
        }
        None => FaultConfig::default(),
    };
    if let Some(seed) = flags.fault_seed {
        config.seed = seed;
    }
    for text in &flags.latency {
        let (op, value) = split_op(text)?;
        config.rules.push(FaultRule::for_operations([op]).latency(parse_latency(value)?));
    }
    let rated: [(&Vec<String>, SetRate); 4] = [
        (&flags.error_rate, FaultRule::error_rate),
        (&flags.slowdown_rate, FaultRule::slowdown_rate),
        (&flags.drop_rate, FaultRule::drop_rate),
        (&flags.drop_after_rate, FaultRule::drop_after_rate),
    ];
    for (values, set) in rated {
        for text in values {
            let (op, value) = split_op(text)?;
            config.rules.push(set(FaultRule::for_operations([op]), parse_rate(value)?));
        }
    }
    for text in &flags.stall {
        let (op, value) = split_op(text)?;
        let (rate, ms) = value.split_once(':').ok_or_else(|| format!("--stall {text:?}: expected OP=RATE:MS"))?;
        let ms = ms.parse().map_err(|_| format!("--stall {text:?}: not milliseconds"))?;
        config.rules.push(FaultRule::for_operations([op]).stall(parse_rate(rate)?, ms));
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let faults = match fault_config(&flags) {
        Ok(faults) => faults,
        Err(error) => {
            eprintln!("fake-s3: {error}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config {
        listen: flags.listen,
        data_dir: flags.data_dir.clone(),
        region: flags.region.clone(),
        faults,
        max_object_bytes: flags.max_object_bytes,
        min_part_bytes: flags.min_part_bytes,
        workers: flags.workers,
        ..Config::default()
    };
    if let (Some(access_key), Some(secret_key)) = (&flags.access_key, &flags.secret_key) {
        config = config.with_credentials(access_key, secret_key);
    }
    let server = match FakeS3::start(config) {
        Ok(server) => server,
        Err(error) => {
            eprintln!("fake-s3: cannot start: {error}");
            return ExitCode::from(1);
        }
    };
    // Tests read this line to learn the port when listening on port 0.
    eprintln!("fake-s3 listening on {}", server.url());
    loop {
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("fake-s3").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn fault_flags_become_rules() {
        let config = fault_config(&flags(&[
            "--fault-seed",
            "9",
            "--latency",
            "PutObject=50",
            "--latency",
            "GetObject=10..20",
            "--latency",
            "*=exp:5",
            "--error-rate",
            "GetObject=0.25",
            "--stall",
            "HeadObject=0.5:1500",
        ]))
        .unwrap();
        assert_eq!(config.seed, 9);
        assert_eq!(config.rules[0], FaultRule::for_operations(["PutObject"]).latency(Latency::FixedMs(50)));
        assert_eq!(config.rules[1].latency, Some(Latency::UniformMs(10, 20)));
        assert_eq!(config.rules[2].latency, Some(Latency::ExponentialMeanMs(5)));
        assert_eq!(config.rules[3], FaultRule::for_operations(["GetObject"]).error_rate(0.25));
        assert_eq!(config.rules[4], FaultRule::for_operations(["HeadObject"]).stall(0.5, 1500));
    }

    #[test]
    fn faults_json_and_bad_values() {
        let config = fault_config(&flags(&["--faults", r#"{"seed": 3, "rules": [{"drop_rate": 0.1}]}"#])).unwrap();
        assert_eq!((config.seed, config.rules[0].drop_rate), (3, 0.1));
        for bad in [
            &["--error-rate", "GetObject=2"][..],
            &["--latency", "PutObject"],
            &["--latency", "PutObject=fast"],
            &["--stall", "GetObject=0.5"],
            &["--faults", "{not json"],
        ] {
            assert!(fault_config(&flags(bad)).is_err(), "{bad:?}");
        }
        assert!(Flags::try_parse_from(["fake-s3", "--access-key", "AK"]).is_err());
    }
}
