//! How the log stays one chain while a leader keeps several batch writes in
//! flight, and how readers find a batch in it. Pure: no IO (readers pass a
//! function that reads a batch's versions).
//!
//! A batch is named by the version it continues from, so two leaders
//! extending the log from the same version collide on put-if-absent and one
//! of them is fenced. With one write in flight that is the whole story. With
//! several, a fenced leader's later batches may still land after the one it
//! lost: such an *orphan* continues a history that never happened, under a
//! name the winner does not use. Two rules keep orphans harmless:
//!
//! 1. **Batches in flight stay near the durable version.** Stage 2 writes a
//!    batch while earlier ones are still in flight only if it ends at most
//!    [`VERSION_WINDOW`] past the durable version, and only once this leader
//!    has made a batch durable ([`may_write_alongside`]); any other batch
//!    waits until every batch before it is durable and is written alone. A
//!    leader fenced at name `F` (its batch continuing from `F - 1` lost)
//!    never made anything after `F - 1` durable, so every batch it wrote
//!    while that one was in flight, orphans included, lies within versions
//!    `F ..= F - 1 + VERSION_WINDOW`.
//! 2. **A new leader starts past that window.** Its first version is
//!    `VERSION_WINDOW` past the recovered log ([`first_version_after`]), so
//!    its first batch, named `F`, covers `F ..= F + VERSION_WINDOW` and more.
//!    That batch is written alone (rule 1), so if it loses, it leaves no
//!    orphans.
//!
//! Hence every orphan is *strictly inside* the batch that beat its writer: its
//! name lies in `first + 1 ..= last` of a batch with a smaller name. No
//! batch of the log is ever strictly inside another, and a batch has at most
//! [`ORPHANS_PER_BATCH_MAX`] orphans inside it (the fenced leader's other
//! writes in flight). Readers that walk the log by name (the batch after one
//! ending at `v` is named `v + 1`) never meet an orphan; readers that start
//! from a listing use [`locate`] or [`inside`] to skip them.
//!
//! A crashed leader's batches behind a hole (its write of the batch before
//! them never landed) are orphans of the same kind: the next leader's first
//! batch takes the hole's name and covers them.

use super::format::BatchVersions;

/// How far past the durable version stage 1 may assign versions while a
/// batch is in flight, and how far past the recovered log a new leader
/// starts. Far above what a window of batches in flight uses (at most
/// `BATCH_WRITES_IN_FLIGHT_MAX` batches of `commit.batch_transactions_max`
/// versions, plus the versions of transactions that did not commit).
pub const VERSION_WINDOW: u64 = 1 << 20;

/// Batch writes a leader keeps in flight at most (the `persist.batch_writes_in_flight`
/// setting is checked against it). Readers rely on it: see
/// [`ORPHANS_PER_BATCH_MAX`].
pub const BATCH_WRITES_IN_FLIGHT_MAX: usize = 16;

/// Orphans inside one batch at most: a fenced leader's writes in flight
/// after the one that lost.
pub const ORPHANS_PER_BATCH_MAX: usize = BATCH_WRITES_IN_FLIGHT_MAX - 1;

/// Whether a batch ending at `last_version` may be written while earlier
/// batches of this leader are still in flight (rule 1 above). Otherwise it
/// waits until they are durable.
pub fn may_write_alongside(last_version: u64, durable_version: u64, made_a_batch_durable: bool) -> bool {
    made_a_batch_durable && last_version <= durable_version.saturating_add(VERSION_WINDOW)
}

/// The version a new leader's first transaction gets when the recovered log
/// ends at `recovered_last`: [`VERSION_WINDOW`] further on, past anything a
/// fenced or crashed leader can still have in flight. An empty log has no
/// earlier leader whose writes could be in flight (a leader's first batch is
/// written alone), so it starts at 1. Clients see the jump as a gap in
/// versions after each start of a leader.
pub fn first_version_after(recovered_last: u64) -> u64 {
    if recovered_last == 0 {
        1
    } else {
        recovered_last.saturating_add(VERSION_WINDOW).saturating_add(1)
    }
}

/// Whether each batch of `window` (ascending, with the versions read from
/// its header; its start version is `prev_version + 1`) lies strictly
/// inside an earlier batch of the window, and so is an orphan. A batch whose
/// container lies below the window is reported as not inside: the answer is
/// exact for entries with at least [`ORPHANS_PER_BATCH_MAX`] entries below
/// them (or when the window starts at the log's first batch), and never
/// wrongly `true`.
pub fn inside(window: &[BatchVersions]) -> Vec<bool> {
    let mut reach: Option<u64> = None;
    window
        .iter()
        .map(|versions| {
            let is_inside = reach.is_some_and(|last| last > versions.prev_version);
            reach = Some(reach.map_or(versions.last_version, |last| last.max(versions.last_version)));
            is_inside
        })
        .collect()
}

/// The start version of the log's batch holding `version`, given the start
/// versions of a listing (ascending): the greatest start at or below
/// `version` that is not an orphan. `None` when every listed batch starts
/// after `version`. The batch found may end before `version` (the version is
/// past the log's end); callers check. Reads the versions of the at most
/// [`ORPHANS_PER_BATCH_MAX`] batches below the candidate (an orphan's
/// container is that close) in one call of `versions_of`, which answers for
/// each start it is given, in order (`None` for a batch gone since the
/// listing, which is skipped).
pub fn locate<E>(
    starts: &[u64],
    version: u64,
    mut versions_of: impl FnMut(&[u64]) -> Result<Vec<Option<BatchVersions>>, E>,
) -> Result<Option<u64>, E> {
    let mut candidate = starts.partition_point(|&start| start <= version);
    if candidate == 0 {
        return Ok(None);
    }
    candidate -= 1;
    // A container is never itself inside another, so this ends after at most
    // one step down; the loop guards against a damaged log all the same.
    'check: loop {
        let below = candidate.saturating_sub(ORPHANS_PER_BATCH_MAX);
        let versions = versions_of(&starts[below..candidate])?;
        for (index, versions) in (below..candidate).zip(versions).rev() {
            if versions.is_some_and(|versions| versions.last_version >= starts[candidate]) {
                candidate = index;
                continue 'check;
            }
        }
        return Ok(Some(starts[candidate]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn versions(prev: u64, first: u64, last: u64) -> BatchVersions {
        BatchVersions { prev_version: prev, first_version: first, last_version: last }
    }

    /// A log 1..=10, 11..=20, then a new leader's first batch 21..=2_000_000
    /// with orphans of the fenced leader inside it at 31 and 41, then
    /// 2_000_001..=2_000_010.
    fn log_with_orphans() -> HashMap<u64, BatchVersions> {
        let mut batches = HashMap::new();
        batches.insert(1, versions(0, 1, 10));
        batches.insert(11, versions(10, 11, 20));
        batches.insert(21, versions(20, 21 + VERSION_WINDOW, 2_000_000));
        batches.insert(31, versions(30, 31, 40));
        batches.insert(41, versions(40, 41, 45));
        batches.insert(2_000_001, versions(2_000_000, 2_000_001, 2_000_010));
        batches
    }

    fn starts(batches: &HashMap<u64, BatchVersions>) -> Vec<u64> {
        let mut starts: Vec<u64> = batches.keys().copied().collect();
        starts.sort_unstable();
        starts
    }

    #[test]
    fn locate_skips_orphans_inside_a_batch() {
        let batches = log_with_orphans();
        let starts = starts(&batches);
        let mut reads = 0;
        let mut find = |version| {
            locate(&starts, version, |asked: &[u64]| {
                reads += asked.len();
                Ok::<_, ()>(asked.iter().map(|start| batches.get(start).copied()).collect())
            })
            .unwrap()
        };
        assert_eq!(find(0), None);
        assert_eq!(find(1), Some(1));
        assert_eq!(find(15), Some(11));
        assert_eq!(find(21), Some(21));
        for version in [31, 35, 41, 44, 100, 2_000_000] {
            assert_eq!(find(version), Some(21), "version {version}");
        }
        assert_eq!(find(2_000_001), Some(2_000_001));
        assert_eq!(find(u64::MAX), Some(2_000_001), "past the end: the caller checks the last version");
        assert!(reads > 0);
    }

    #[test]
    fn locate_reads_only_a_bounded_number_of_batches() {
        let mut batches = HashMap::new();
        for index in 0..1000u64 {
            batches.insert(index * 10 + 1, versions(index * 10, index * 10 + 1, index * 10 + 10));
        }
        let starts = starts(&batches);
        let mut reads = 0;
        let mut calls = 0;
        let found = locate(&starts, 9_995, |asked: &[u64]| {
            calls += 1;
            reads += asked.len();
            Ok::<_, ()>(asked.iter().map(|start| batches.get(start).copied()).collect())
        });
        assert_eq!(found, Ok(Some(9_991)));
        assert_eq!((calls, reads), (1, ORPHANS_PER_BATCH_MAX), "one call for all of them");
    }

    #[test]
    fn locate_skips_unreadable_batches_and_passes_errors_on() {
        let batches = log_with_orphans();
        let starts = starts(&batches);
        // The container gone (deleted since the listing): the orphan is the
        // best answer left, and its reader finds it does not chain.
        let found = locate(&starts, 35, |asked: &[u64]| {
            Ok::<_, ()>(asked.iter().map(|&start| batches.get(&start).copied().filter(|_| start != 21)).collect())
        });
        assert_eq!(found, Ok(Some(31)));
        assert_eq!(locate(&starts, 35, |_: &[u64]| Err("down")), Err("down"));
    }

    #[test]
    fn inside_marks_exactly_the_orphans() {
        let batches = log_with_orphans();
        let window: Vec<BatchVersions> = starts(&batches).into_iter().map(|start| batches[&start]).collect();
        assert_eq!(inside(&window), vec![false, false, false, true, true, false]);
        // Batches behind a hole chain among themselves and are not inside
        // anything: the hole check finds them.
        let hole = [versions(0, 1, 10), versions(20, 21, 30), versions(30, 31, 31)];
        assert_eq!(inside(&hole), vec![false, false, false]);
    }

    #[test]
    fn only_batches_near_the_durable_version_are_written_alongside_others() {
        assert!(may_write_alongside(100 + VERSION_WINDOW, 100, true));
        assert!(!may_write_alongside(101 + VERSION_WINDOW, 100, true));
        // A leader's first batch is always written alone.
        assert!(!may_write_alongside(101, 100, false));
        // A new leader's first batch is past the window of the log it
        // recovered, so it is written alone whatever else is true.
        assert!(!may_write_alongside(first_version_after(100), 100, true));
    }

    #[test]
    fn a_new_leader_starts_past_anything_a_fenced_leader_has_in_flight() {
        assert_eq!(first_version_after(0), 1);
        let recovered = 1_000;
        // The fenced leader's durable version is at most `recovered`, so
        // its versions end at `recovered + VERSION_WINDOW` at most.
        let fenced_highest = recovered + VERSION_WINDOW;
        assert!(first_version_after(recovered) > fenced_highest);
        assert!(may_write_alongside(fenced_highest, recovered, true));
        assert!(!may_write_alongside(fenced_highest + 1, recovered, true));
    }
}
