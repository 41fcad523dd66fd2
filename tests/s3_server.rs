//! The real `stoat` binary on `--storage s3://...` against an in-process
//! fake_s3 that verifies SigV4: commits are durable in S3, a crash and
//! restart recover from S3, subscribers read history back from it; and bad
//! S3 settings are refused at start with exit code 2.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Instant;

use common::s3::{create_bucket, location};
use common::{Stoat, DEADLINE};
use fake_s3::{Config, FakeS3};
use stoat::log::names::LOG_PREFIX;
use stoat::log::s3::S3Store;
use stoat::log::store::Blocking;
use stoat::ops::metrics::S3Metrics;

const ACCESS_KEY: &str = "AKIDSTOAT";
const SECRET_KEY: &str = "secret key+/%é";

fn config(s3: &FakeS3) -> String {
    format!("[storage]\nurl = \"s3://stoat-bucket/cluster/one?endpoint={}&region=us-east-1\"\n", s3.url())
}

fn start(s3: &FakeS3) -> Stoat {
    let env = [("AWS_ACCESS_KEY_ID", ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", SECRET_KEY)];
    Stoat::start_with_env(&config(s3), &env)
}

fn commit(stoat: &Stoat, request_id: &str) -> u64 {
    let body =
        format!(r#"{{"request_id":"{request_id}","operations":[{{"type":"write","key":"aw==","value":"dmFsdWU="}}]}}"#);
    let response = stoat.connect().post("/v1/commit", &body);
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()["version"].as_u64().unwrap()
}

/// Reads `/v1/subscribe?after=0` until every id in `ids` has been seen.
fn subscribe_sees(addr: SocketAddr, ids: &[String]) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(b"GET /v1/subscribe?after=0 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut text = String::new();
    let mut chunk = [0u8; 65536];
    while !ids.iter().all(|id| text.contains(&format!("\"{id}\""))) {
        assert!(Instant::now() < deadline, "subscribe did not deliver every id: {text}");
        let read = stream.read(&mut chunk).unwrap();
        assert!(read > 0, "stream closed: {text}");
        text.push_str(&String::from_utf8_lossy(&chunk[..read]));
    }
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[test]
fn commits_are_durable_in_s3_and_survive_a_crash() {
    let s3 = FakeS3::start(Config::ephemeral().with_credentials(ACCESS_KEY, SECRET_KEY)).unwrap();
    create_bucket(&s3, "stoat-bucket", Some((ACCESS_KEY, SECRET_KEY)));
    let mut stoat = start(&s3);
    let ids: Vec<String> = (0..30).map(|index| format!("s3-e2e-{index}")).collect();
    let mut versions = Vec::new();
    for id in &ids[..20] {
        versions.push(commit(&stoat, id));
    }
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{versions:?}");
    subscribe_sees(stoat.addr, &ids[..20]);

    // The batches are in the bucket under the prefix, readable by a store
    // of our own.
    let reader = S3Store::open(
        location(&s3, "stoat-bucket", "cluster/one", Some((ACCESS_KEY, SECRET_KEY))),
        common::s3::fast_options(),
        S3Metrics::default(),
    )
    .unwrap();
    let batches = Blocking::new(&reader).list_all(LOG_PREFIX, None, 1000).unwrap();
    assert!(!batches.is_empty());

    stoat.crash();
    let stoat = start(&s3);
    let status = stoat.connect().get("/v1/status?request_id=s3-e2e-19");
    assert_eq!(status.status, 200, "{}", status.text());
    assert_eq!(status.json()["status"], "committed", "{}", status.text());
    assert_eq!(status.json()["version"].as_u64(), Some(versions[19]));
    for id in &ids[20..] {
        versions.push(commit(&stoat, id));
    }
    assert!(versions.windows(2).all(|pair| pair[0] < pair[1]), "{versions:?}");
    subscribe_sees(stoat.addr, &ids);
}

#[test]
fn bad_s3_settings_exit_with_code_2_and_one_line() {
    for (url, env, needle) in [
        ("s3://stoat-bucket/p?endpoint=https://s3.example.com", vec![], "https"),
        ("s3://stoat-bucket/p", vec![], "endpoint"),
        ("s3://stoat-bucket/p?endpoint=http://127.0.0.1:1/path", vec![], "no path"),
        ("s3://stoat-bucket/p?endpoint=http://127.0.0.1:1", vec![("AWS_ACCESS_KEY_ID", "only-one")], "together"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_stoat"))
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", url])
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .envs(env)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{url}: {stderr}");
        assert!(stderr.contains("storage.url") || stderr.contains("AWS_"), "{url}: {stderr}");
        assert!(stderr.contains(needle), "{url}: {stderr}");
    }
}
