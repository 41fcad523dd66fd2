//! Benchmarks of the durable log's storage layer, printed as a table:
//! encoding and verifying batches, put-if-absent latency on the local disk,
//! and recovery time of a long log.
//!
//! `stoat-log-bench [DIRECTORY] [OBJECTS] [TRANSACTIONS_PER_OBJECT]`; the
//! directory (default: a fresh one under the system temp directory) must be
//! on the disk being measured. Run it in release mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stoat::commit::transaction::OperationRef;
use stoat::log::format::{BatchEncoder, BatchView, EncodedBatch};
use stoat::log::local::{LocalStore, LocalStoreOptions};
use stoat::log::names::batch_name;
use stoat::log::recovery::{recover, RecoveryConfig};
use stoat::log::store::{Blocking, ObjectOp, ObjectStore};

const KEY: [u8; 16] = *b"user/0000000042/";
const VALUE: [u8; 100] = [7u8; 100];

fn main() {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let directory = arguments
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("stoat-log-bench-{}", std::process::id())));
    let objects: u64 = arguments.get(1).and_then(|text| text.parse().ok()).unwrap_or(5_000);
    let per_object: u64 = arguments.get(2).and_then(|text| text.parse().ok()).unwrap_or(2_000);
    println!("| measurement | value |\n| --- | --- |");
    bench_format();
    bench_put_latency(&directory.join("latency"));
    bench_recovery(&directory.join("recovery"), objects, per_object);
    let _ = std::fs::remove_dir_all(&directory);
}

/// One transaction per version, each one write of a 16-byte key and a
/// 100-byte value.
fn encode_batch(prev_version: u64, count: u64) -> EncodedBatch {
    let mut encoder = BatchEncoder::with_capacity("bench-leader", prev_version, (count as usize) * 160);
    for version in prev_version + 1..=prev_version + count {
        encoder.push(
            version,
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            1_700_000_000_000,
            [OperationRef::Write { key: &KEY, value: &VALUE }],
        );
    }
    encoder.finish()
}

fn bench_format() {
    let rounds = 200u64;
    let per_batch = 1_000u64;
    let started = Instant::now();
    let mut bytes = 0usize;
    for round in 0..rounds {
        bytes += encode_batch(round * per_batch, per_batch).bytes.len();
    }
    let encode_ns = started.elapsed().as_nanos() as f64 / (rounds * per_batch) as f64;
    let batch = encode_batch(0, per_batch);
    let started = Instant::now();
    for _ in 0..rounds {
        let view = BatchView::parse(&batch.bytes).expect("valid");
        assert_eq!(view.transactions().count() as u64, per_batch);
    }
    let verify_ns = started.elapsed().as_nanos() as f64 / (rounds * per_batch) as f64;
    println!("| bytes per transaction (one 16 B key, 100 B value write) | {} |", bytes as u64 / (rounds * per_batch));
    println!("| encode (push + finish with checksum), ns per transaction | {encode_ns:.0} |");
    println!("| verify + iterate, ns per transaction | {verify_ns:.0} |");
}

fn bench_put_latency(directory: &std::path::Path) {
    let store = LocalStore::open(directory, LocalStoreOptions::default()).expect("open store");
    let blocking = Blocking::new(&store);
    let batch = encode_batch(0, 500); // about 80 KiB
    let mut latencies: Vec<Duration> = (0..100u64)
        .map(|index| {
            let started = Instant::now();
            blocking.put_if_absent(&batch_name(index + 1), batch.bytes.to_vec()).expect("put");
            started.elapsed()
        })
        .collect();
    latencies.sort_unstable();
    let size_kib = batch.bytes.len() / 1024;
    println!("| put-if-absent {size_kib} KiB, synced, one at a time: median µs | {} |", latencies[50].as_micros());
    println!("| put-if-absent {size_kib} KiB, synced, one at a time: p99 µs | {} |", latencies[98].as_micros());
    let (reply, completions) = crossbeam_channel::unbounded();
    let bytes = batch.bytes;
    let started = Instant::now();
    let count = 200u64;
    for index in 0..count {
        let op = ObjectOp::PutIfAbsent { name: batch_name(1_000 + index), bytes: Arc::clone(&bytes) };
        store.submit(index, op, &reply);
    }
    for _ in 0..count {
        completions.recv().expect("completion").result.expect("put");
    }
    let per_second = count as f64 / started.elapsed().as_secs_f64();
    println!("| put-if-absent {size_kib} KiB, synced, all in flight (2 IO threads): puts/s | {per_second:.0} |");
}

fn bench_recovery(directory: &std::path::Path, objects: u64, per_object: u64) {
    let options = LocalStoreOptions { sync: false, io_threads: 2, queue_depth: 64, ..LocalStoreOptions::default() };
    let store = LocalStore::open(directory, options).expect("open store");
    let (reply, completions) = crossbeam_channel::bounded(64);
    let started = Instant::now();
    for index in 0..objects {
        let batch = encode_batch(index * per_object, per_object);
        let op = ObjectOp::PutIfAbsent { name: batch_name(batch.first_version), bytes: batch.bytes };
        store.submit(index, op, &reply);
        if index >= 32 {
            completions.recv().expect("completion").result.expect("put");
        }
    }
    for _ in 0..objects.min(32) {
        completions.recv().expect("completion").result.expect("put");
    }
    let build_s = started.elapsed().as_secs_f64();
    drop(store);
    let started = Instant::now();
    let store = LocalStore::open(directory, LocalStoreOptions::default()).expect("reopen store");
    let config = RecoveryConfig { recent_transactions: 10_000, ..RecoveryConfig::default() };
    let recovered = recover(&store, &config).expect("recover");
    let recover_ms = started.elapsed().as_millis();
    assert_eq!(recovered.last_version, objects * per_object);
    println!("| log built: {objects} objects x {per_object} transactions (unsynced), s | {build_s:.1} |");
    println!("| recovery of that log (open, list, read tail, 10,000 request ids), ms | {recover_ms} |");
}
