//! Stoat benchmarks that print tables: `stoat-bench conflict` runs FoundationDB's resolver
//! workload on the conflict set, a `BTreeMap` baseline and the naive reference.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::{Duration, Instant};
use stoat::random::SplitMix64;

use clap::{Parser, Subcommand};
use stoat::commit::conflict::reference::ReferenceConflictSet;
use stoat::commit::conflict::{ConflictSet, KeyRange, Outcome, ReadOutcome, ReadRange, TransactionRef};

#[derive(Parser, Debug)]
#[command(about = "Stoat benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// FoundationDB's resolver benchmark (skipListTest) plus microbenchmarks.
    Conflict(ConflictArgs),
}

#[derive(clap::Args, Debug)]
struct ConflictArgs {
    /// Batches of the resolver workload (FoundationDB: 500).
    #[arg(long, default_value_t = 500)]
    batches: usize,
    /// Transactions per batch (FoundationDB: 2,500).
    #[arg(long, default_value_t = 2_500)]
    transactions_per_batch: usize,
    /// Timed runs of the full workload per implementation; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Batches given to the quadratic reference (and to the conflict set again for the ratio).
    #[arg(long, default_value_t = 20)]
    reference_batches: usize,
    /// Boundaries per chunk of the conflict set.
    #[arg(long, default_value_t = stoat::commit::conflict::DEFAULT_CHUNK_CAPACITY)]
    chunk_capacity: usize,
    /// Skip the BTreeMap baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Operations per microbenchmark.
    #[arg(long, default_value_t = 1_000_000)]
    micro_operations: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead of the report, compare chunk capacities and prefetch lookaheads (interleaved
    /// runs, medians).
    #[arg(long)]
    tune: bool,
}

fn main() {
    match Cli::parse().command {
        Command::Conflict(args) => conflict::run(&args),
    }
}

/// The conflict-set implementations compared by the benchmark.
trait Resolver {
    fn set_oldest_version(&mut self, oldest_version: u64);
    fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome>;
}

impl<const CAP: usize> Resolver for ConflictSet<CAP> {
    fn set_oldest_version(&mut self, oldest_version: u64) {
        ConflictSet::<CAP>::set_oldest_version(self, oldest_version);
    }
    fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome> {
        ConflictSet::<CAP>::check_batch(self, batch)
    }
}

impl Resolver for ReferenceConflictSet {
    fn set_oldest_version(&mut self, oldest_version: u64) {
        ReferenceConflictSet::set_oldest_version(self, oldest_version);
    }
    fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome> {
        ReferenceConflictSet::check_batch(self, batch)
    }
}

mod btree_baseline {
    //! The simplest fast candidate: std `BTreeMap<key, version of [key, next key)>`, no
    //! max-version augmentation, garbage collected incrementally from a cursor key.

    use super::*;

    pub struct BTreeConflictSet {
        boundaries: BTreeMap<Vec<u8>, u64>,
        oldest_version: u64,
        gc_cursor: Vec<u8>,
    }

    impl BTreeConflictSet {
        pub fn new(oldest_version: u64) -> Self {
            let boundaries = BTreeMap::from([(Vec::new(), 0)]);
            BTreeConflictSet { boundaries, oldest_version, gc_cursor: Vec::new() }
        }

        fn version_at(&self, key: &[u8]) -> u64 {
            *self.boundaries.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back().unwrap().1
        }

        fn any_newer_than(&self, range: &KeyRange<'_>, read_version: u64) -> bool {
            if range.is_empty() {
                return false;
            }
            self.version_at(range.begin) > read_version
                || (self.boundaries)
                    .range::<[u8], _>((Bound::Excluded(range.begin), Bound::Excluded(range.end)))
                    .any(|(_, &version)| version > read_version)
        }

        fn write(&mut self, range: &KeyRange<'_>, version: u64) {
            let version_at_end = self.version_at(range.end);
            let covered: Vec<Vec<u8>> = (self.boundaries)
                .range::<[u8], _>((Bound::Included(range.begin), Bound::Included(range.end)))
                .map(|(key, _)| key.clone())
                .collect();
            for key in covered {
                self.boundaries.remove(&key);
            }
            self.boundaries.insert(range.begin.to_vec(), version);
            self.boundaries.insert(range.end.to_vec(), version_at_end);
        }

        /// Examines up to `budget` boundaries after the cursor, forgetting versions at or below
        /// the oldest version and dropping boundaries that repeat their predecessor's version.
        fn collect_garbage(&mut self, budget: usize) {
            let oldest = self.oldest_version;
            let effective = |version: u64| if version <= oldest { 0 } else { version };
            let mut previous = (self.boundaries)
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(self.gc_cursor.as_slice())))
                .next_back()
                .map(|(_, &version)| effective(version));
            let examined: Vec<(Vec<u8>, u64)> = (self.boundaries)
                .range::<[u8], _>((Bound::Included(self.gc_cursor.as_slice()), Bound::Unbounded))
                .take(budget)
                .map(|(key, &version)| (key.clone(), version))
                .collect();
            for (key, version) in &examined {
                let version = effective(*version);
                if previous == Some(version) && !key.is_empty() {
                    self.boundaries.remove(key);
                } else {
                    self.boundaries.insert(key.clone(), version);
                    previous = Some(version);
                }
            }
            self.gc_cursor = match examined.len() < budget {
                true => Vec::new(),
                false => examined.last().map(|(key, _)| key.clone()).unwrap_or_default(),
            };
        }
    }

    impl Resolver for BTreeConflictSet {
        fn set_oldest_version(&mut self, oldest_version: u64) {
            self.oldest_version = self.oldest_version.max(oldest_version);
        }

        fn check_batch(&mut self, batch: &[(TransactionRef<'_>, u64)]) -> Vec<Outcome> {
            let latest_read_version = batch.first().map_or(0, |(_, version)| version - 1);
            let mut outcomes = Vec::with_capacity(batch.len());
            for (transaction, version) in batch {
                if transaction.reads.iter().any(|read| read.read_version < self.oldest_version) {
                    outcomes.push(Outcome::TooOld);
                    continue;
                }
                let read_indices: Vec<usize> = (0..transaction.reads.len())
                    .filter(|&index| {
                        let read = &transaction.reads[index];
                        self.any_newer_than(&read.range, read.read_version.min(latest_read_version))
                    })
                    .collect();
                if read_indices.is_empty() {
                    for write in transaction.writes.iter().filter(|write| !write.is_empty()) {
                        self.write(write, *version);
                    }
                    self.collect_garbage(16 * transaction.writes.len());
                    outcomes.push(Outcome::Committed);
                } else {
                    outcomes.push(Outcome::Conflict { read_indices });
                }
            }
            outcomes
        }
    }
}

mod conflict {
    //! The resolver workload of FoundationDB's `skipListTest` (fdbserver/SkipList.cpp).

    use super::btree_baseline::BTreeConflictSet;
    use super::*;

    const KEY_BYTES: usize = 16;
    const KEY_SPACE: u64 = 20_000_000;
    /// Versions per batch: each transaction of a batch gets its own version.
    const BATCH_VERSIONS: u64 = 4_096;
    /// FoundationDB commits batch `i` at version `i + 50` with reads at `i`.
    const COMMIT_LAG_BATCHES: u64 = 50;

    type Key = [u8; KEY_BYTES];

    /// FoundationDB's `setK`: twelve '.' then the integer big-endian.
    fn key_of(value: u64) -> Key {
        let mut key = [b'.'; KEY_BYTES];
        key[KEY_BYTES - 4..].copy_from_slice(&(value as u32).to_be_bytes());
        key
    }

    /// One batch: per transaction, a read range then a write range.
    struct Batch {
        ranges: Vec<(Key, Key)>,
    }

    fn generate(args: &ConflictArgs) -> Vec<Batch> {
        let mut random = SplitMix64::new(args.seed);
        let ranges_per_batch = 2 * args.transactions_per_batch;
        (0..args.batches)
            .map(|_| Batch {
                ranges: (0..ranges_per_batch)
                    .map(|_| {
                        let begin = random.below(KEY_SPACE);
                        let end = begin + 1 + random.below(10);
                        (key_of(begin), key_of(end))
                    })
                    .collect(),
            })
            .collect()
    }

    struct RunResult {
        elapsed: Duration,
        transactions: usize,
        conflicts: usize,
        /// Median time of one batch once the history window is full: robust to the bursts of
        /// interference of a shared machine, so it is what tuning compares.
        steady_batch_median: Duration,
        transactions_per_batch: usize,
    }

    impl RunResult {
        fn transactions_per_second(&self) -> f64 {
            self.transactions as f64 / self.elapsed.as_secs_f64()
        }

        fn steady_transactions_per_second(&self) -> f64 {
            self.transactions_per_batch as f64 / self.steady_batch_median.as_secs_f64()
        }
    }

    /// Runs `batches` through `resolver` the way FoundationDB's benchmark does.
    fn run_workload(resolver: &mut dyn Resolver, batches: &[Batch]) -> RunResult {
        let mut conflicts = 0;
        let mut transactions = 0;
        let mut elapsed = Duration::ZERO;
        let mut batch_times = Vec::with_capacity(batches.len());
        for (index, batch) in batches.iter().enumerate() {
            let read_version = index as u64 * BATCH_VERSIONS;
            let first_commit_version = (index as u64 + COMMIT_LAG_BATCHES) * BATCH_VERSIONS;
            let reads: Vec<[ReadRange<'_>; 1]> = (batch.ranges.chunks_exact(2))
                .map(|pair| [ReadRange { range: KeyRange::new(&pair[0].0, &pair[0].1), read_version }])
                .collect();
            let writes: Vec<[KeyRange<'_>; 1]> =
                batch.ranges.chunks_exact(2).map(|pair| [KeyRange::new(&pair[1].0, &pair[1].1)]).collect();
            let transactions_in_batch: Vec<(TransactionRef<'_>, u64)> = (reads.iter().zip(&writes))
                .enumerate()
                .map(|(position, (reads, writes))| {
                    (TransactionRef { reads, writes }, first_commit_version + position as u64)
                })
                .collect();
            let start = Instant::now();
            resolver.set_oldest_version(read_version);
            let outcomes = resolver.check_batch(&transactions_in_batch);
            let batch_time = start.elapsed();
            elapsed += batch_time;
            if index as u64 >= COMMIT_LAG_BATCHES {
                batch_times.push(batch_time);
            }
            transactions += outcomes.len();
            conflicts += outcomes.iter().filter(|outcome| **outcome != Outcome::Committed).count();
        }
        batch_times.sort();
        let steady_batch_median = match batch_times.is_empty() {
            true => elapsed / batches.len().max(1) as u32,
            false => batch_times[batch_times.len() / 2],
        };
        RunResult {
            elapsed,
            transactions,
            conflicts,
            steady_batch_median,
            transactions_per_batch: transactions / batches.len().max(1),
        }
    }

    fn median_run(runs: usize, mut make: impl FnMut() -> Box<dyn Resolver>, batches: &[Batch]) -> RunResult {
        let mut results: Vec<RunResult> = (0..runs.max(1)).map(|_| run_workload(make().as_mut(), batches)).collect();
        results.sort_by_key(|result| result.elapsed);
        let conflicts = results[0].conflicts;
        assert!(results.iter().all(|result| result.conflicts == conflicts), "runs disagree");
        results.swap_remove(results.len() / 2)
    }

    fn print_row(name: &str, batches: usize, result: &RunResult) {
        let steady = match batches as u64 > COMMIT_LAG_BATCHES {
            true => format!("{:.0}", result.steady_transactions_per_second()),
            false => "-".to_string(),
        };
        println!(
            "{name:<34} {batches:>7} {:>12} {:>10} {:>9.3} {:>12.0} {steady:>14}",
            result.transactions,
            result.conflicts,
            result.elapsed.as_secs_f64(),
            result.transactions_per_second(),
        );
    }

    pub fn run(args: &ConflictArgs) {
        match args.chunk_capacity {
            16 => run_sized::<16>(args),
            32 => run_sized::<32>(args),
            48 => run_sized::<48>(args),
            64 => run_sized::<64>(args),
            96 => run_sized::<96>(args),
            128 => run_sized::<128>(args),
            other => panic!("--chunk-capacity {other}: choose 16, 32, 48, 64, 96 or 128"),
        }
    }

    fn run_sized<const CAP: usize>(args: &ConflictArgs) {
        let batches = generate(args);
        if args.tune {
            return tune(args, &batches);
        }
        let capacity = args.chunk_capacity;
        println!(
            "resolver workload: {} batches x {} transactions, 1 read + 1 write range each, 16-byte keys, median of {} runs",
            args.batches, args.transactions_per_batch, args.runs
        );
        println!(
            "{:<34} {:>7} {:>12} {:>10} {:>9} {:>12} {:>14}",
            "implementation", "batches", "transactions", "conflicts", "seconds", "txn/s", "steady txn/s"
        );
        println!("(txn/s: all transactions over the total time; steady: the median batch once 50 batches of history are kept)");
        let chunked = median_run(args.runs, || Box::new(ConflictSet::<CAP>::with_oldest_version(0)), &batches);
        print_row(&format!("conflict set (chunks of {capacity})"), batches.len(), &chunked);
        if !args.skip_baseline {
            let baseline = median_run(args.runs, || Box::new(BTreeConflictSet::new(0)), &batches);
            assert_eq!(baseline.conflicts, chunked.conflicts, "baseline disagrees with the conflict set");
            print_row("BTreeMap baseline", batches.len(), &baseline);
            println!(
                "  conflict set / BTreeMap baseline: {:.2}x",
                chunked.transactions_per_second() / baseline.transactions_per_second()
            );
        }
        compare_with_reference::<CAP>(args, &batches);
        microbenchmarks::<CAP>(args, &batches);
        println!("conflict-set: {:.0} txn/s on the FoundationDB resolver workload", chunked.transactions_per_second());
    }

    /// Runs every (chunk capacity, prefetch lookahead) setting `runs` times, interleaved so
    /// that machine noise spreads evenly, and prints the median of each.
    fn tune(args: &ConflictArgs, batches: &[Batch]) {
        let capacities = [32, 64, 96];
        let lookaheads = [0, 1, 2];
        let settings: Vec<(usize, usize)> = (capacities.iter())
            .flat_map(|&capacity| lookaheads.iter().map(move |&lookahead| (capacity, lookahead)))
            .collect();
        let mut seconds = vec![Vec::new(); settings.len()];
        for _ in 0..args.runs.max(1) {
            for (setting, &(capacity, lookahead)) in settings.iter().enumerate() {
                let elapsed = match capacity {
                    32 => time_workload::<32>(lookahead, batches),
                    48 => time_workload::<48>(lookahead, batches),
                    64 => time_workload::<64>(lookahead, batches),
                    _ => time_workload::<96>(lookahead, batches),
                };
                seconds[setting].push(elapsed.as_secs_f64());
            }
        }
        let transactions = args.transactions_per_batch as f64;
        for (setting, &(capacity, lookahead)) in settings.iter().enumerate() {
            seconds[setting].sort_by(f64::total_cmp);
            let (best, median) = (seconds[setting][0], seconds[setting][seconds[setting].len() / 2]);
            println!(
                "chunk capacity {capacity:>3}, prefetch lookahead {lookahead:>2}: steady state median {:>9.0} txn/s, best {:>9.0} txn/s",
                transactions / median,
                transactions / best
            );
        }
    }

    /// Steady-state seconds per batch.
    fn time_workload<const CAP: usize>(lookahead: usize, batches: &[Batch]) -> Duration {
        let mut set = ConflictSet::<CAP>::with_oldest_version(0);
        set.set_prefetch_lookahead(lookahead);
        run_workload(&mut set, batches).steady_batch_median
    }

    /// The reference is quadratic, so both run only the first batches: the ratio compares
    /// like with like (the same, smaller history), unlike the full-workload figure above.
    fn compare_with_reference<const CAP: usize>(args: &ConflictArgs, batches: &[Batch]) {
        let reduced = &batches[..args.reference_batches.min(batches.len())];
        let reference = median_run(1, || Box::new(ReferenceConflictSet::new(0)), reduced);
        let chunked = median_run(args.runs, || Box::new(ConflictSet::<CAP>::with_oldest_version(0)), reduced);
        assert_eq!(reference.conflicts, chunked.conflicts, "reference disagrees with the conflict set");
        println!("reduced to the first {} batches for the quadratic reference:", reduced.len());
        print_row("naive reference (reduced)", reduced.len(), &reference);
        print_row("conflict set (reduced)", reduced.len(), &chunked);
        println!(
            "  conflict set / reference on the same batches: {:.0}x",
            chunked.transactions_per_second() / reference.transactions_per_second()
        );
    }

    /// Point read, range read and point write on a set warmed up by the resolver workload.
    fn microbenchmarks<const CAP: usize>(args: &ConflictArgs, batches: &[Batch]) {
        let warmup = &batches[..batches.len().min(100)];
        let mut set = ConflictSet::<CAP>::with_oldest_version(0);
        run_workload(&mut set, warmup);
        let mut random = SplitMix64::new(args.seed ^ 0xdead_beef);
        let operations = args.micro_operations;
        let points: Vec<(Vec<u8>, Vec<u8>)> = (0..operations).map(|_| point(random.below(KEY_SPACE))).collect();
        let ranges: Vec<(Vec<u8>, Vec<u8>)> = (0..operations)
            .map(|_| {
                let begin = random.below(KEY_SPACE);
                let end = begin + 1 + random.below(10);
                (key_of(begin).to_vec(), key_of(end).to_vec())
            })
            .collect();
        println!(
            "microbenchmarks on the set after 100 batches ({} boundaries, {} KiB), {operations} operations each, ns/op:",
            set.boundary_count(),
            set.memory_bytes() / 1024
        );
        println!("  {:<12} {:>10} {:>10}", "", "one call", "batched");
        let reads = [("point read", &points), ("range read", &ranges)];
        for (name, ranges) in reads {
            let single = read_nanoseconds(&set, ranges);
            let batched = batch_nanoseconds(&mut set, ranges, false);
            println!("  {name:<12} {single:>10.1} {batched:>10.1}");
        }
        let single = write_nanoseconds(&mut set, &points);
        let batched = batch_nanoseconds(&mut set, &points, true);
        println!("  {:<12} {single:>10.1} {batched:>10.1}", "point write");
        println!("  (one call: check_read / add_writes per range; batched: check_batch of 2,500 one-range transactions, which prefetches; writes include garbage collection)");
    }

    fn read_nanoseconds<const CAP: usize>(set: &ConflictSet<CAP>, ranges: &[(Vec<u8>, Vec<u8>)]) -> f64 {
        let read_version = set.newest_version().unwrap_or(0);
        let start = Instant::now();
        let mut conflicts = 0usize;
        for (begin, end) in ranges {
            let read = ReadRange { range: KeyRange::new(begin, end), read_version };
            conflicts += usize::from(set.check_read(&read) != ReadOutcome::Ok);
        }
        assert_eq!(conflicts, 0);
        start.elapsed().as_nanos() as f64 / ranges.len() as f64
    }

    fn write_nanoseconds<const CAP: usize>(set: &mut ConflictSet<CAP>, ranges: &[(Vec<u8>, Vec<u8>)]) -> f64 {
        let first_version = set.newest_version().unwrap_or(0) + 1;
        let start = Instant::now();
        for (offset, (begin, end)) in ranges.iter().enumerate() {
            set.add_writes(&[KeyRange::new(begin, end)], first_version + offset as u64);
        }
        start.elapsed().as_nanos() as f64 / ranges.len() as f64
    }

    /// One-range transactions through `check_batch`, 2,500 per batch: reads with no writes, or
    /// blind writes.
    fn batch_nanoseconds<const CAP: usize>(
        set: &mut ConflictSet<CAP>,
        ranges: &[(Vec<u8>, Vec<u8>)],
        writes: bool,
    ) -> f64 {
        let key_ranges: Vec<KeyRange<'_>> = ranges.iter().map(|(begin, end)| KeyRange::new(begin, end)).collect();
        let read_version = set.newest_version().unwrap_or(0);
        let reads: Vec<ReadRange<'_>> =
            (key_ranges.iter()).map(|range| ReadRange { range: *range, read_version }).collect();
        let mut elapsed = Duration::ZERO;
        let mut next_version = read_version + 1;
        for (reads, writes_chunk) in reads.chunks(2_500).zip(key_ranges.chunks(2_500)) {
            let batch: Vec<(TransactionRef<'_>, u64)> = (0..reads.len())
                .map(|index| {
                    let transaction = match writes {
                        true => TransactionRef { reads: &[], writes: &writes_chunk[index..=index] },
                        false => TransactionRef { reads: &reads[index..=index], writes: &[] },
                    };
                    (transaction, next_version + index as u64)
                })
                .collect();
            next_version += reads.len() as u64;
            let start = Instant::now();
            let outcomes = set.check_batch(&batch);
            elapsed += start.elapsed();
            assert!(outcomes.iter().all(|outcome| *outcome == Outcome::Committed));
        }
        elapsed.as_nanos() as f64 / ranges.len() as f64
    }

    /// The point range `[k, k\x00)`.
    fn point(value: u64) -> (Vec<u8>, Vec<u8>) {
        let key = key_of(value).to_vec();
        let mut end = key.clone();
        end.push(0);
        (key, end)
    }
}
