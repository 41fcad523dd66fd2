//! Which batch objects a truncation round may delete, pure.
//!
//! Truncation goes oldest first, one batch at a time. The oldest listed
//! batch, ending at `last` (read from its header), is deleted when every one
//! of its versions is older than the smallest policy version and the listing
//! shows the batch after it (named `last + 1`); the log then continues from
//! `last`, the new oldest version. Listed batches named inside it
//! (`start <= last`) are a fenced leader's orphans (see `log::chain`) and go
//! with it, before it, so that no orphan is ever left without the batch
//! that contains it. The newest batch is never deleted (no successor is
//! listed), so the log's tail, which recovery needs, is never removed.
//!
//! Invariants: a deletion's batch ends right before a listed batch starts,
//! so deleting in order never leaves a hole; its oldest version is below
//! the smallest policy version.

use crate::log::format::BatchVersions;

/// One planned deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// The start version (name) of the batch to delete.
    pub start_version: u64,
    /// Orphans named inside it, to delete first.
    pub orphans: Vec<u64>,
    /// The start version of the batch after it.
    pub next_start_version: u64,
    /// The oldest version to publish before the delete: the batch's last.
    pub oldest_version: u64,
}

/// The deletion of the oldest listed batch, `start_versions[0]`, whose
/// header says `versions`, if truncation may take it: `start_versions` are
/// the listed start versions from it on, ascending. `None` stops the round.
pub fn next_deletion(start_versions: &[u64], versions: BatchVersions, min_policy_version: u64) -> Option<Deletion> {
    let (&start_version, later) = start_versions.split_first()?;
    if versions.prev_version + 1 != start_version {
        return None;
    }
    let inside = later.partition_point(|&start| start <= versions.last_version);
    let &next_start_version = later.get(inside)?;
    let chains = next_start_version == versions.last_version + 1;
    (chains && next_start_version <= min_policy_version).then(|| Deletion {
        start_version,
        orphans: later[..inside].to_vec(),
        next_start_version,
        oldest_version: versions.last_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(prev: u64, last: u64) -> BatchVersions {
        BatchVersions { prev_version: prev, first_version: prev + 1, last_version: last }
    }

    #[test]
    fn whole_batches_older_than_the_smallest_policy_go() {
        // Batches cover 1..=4, 5..=8, 9..
        let starts = [1, 5, 9];
        assert_eq!(next_deletion(&starts, versions(0, 4), 4), None, "version 4 is pinned: its batch stays");
        let deletion = next_deletion(&starts, versions(0, 4), 5).unwrap();
        assert_eq!(deletion, Deletion { start_version: 1, orphans: vec![], next_start_version: 5, oldest_version: 4 });
        assert_eq!(next_deletion(&starts[2..], versions(8, 12), u64::MAX), None, "the newest batch stays");
        assert_eq!(next_deletion(&[], versions(0, 4), u64::MAX), None);
    }

    #[test]
    fn orphans_inside_a_batch_go_with_it_and_anything_else_stops_the_round() {
        // A new leader's first batch 5..=1_000_000 with a fenced leader's
        // batches 7 and 20 inside it.
        let starts = [5, 7, 20, 1_000_001];
        let deletion = next_deletion(&starts, versions(4, 1_000_000), u64::MAX).unwrap();
        assert_eq!(deletion.orphans, [7, 20]);
        assert_eq!((deletion.next_start_version, deletion.oldest_version), (1_000_001, 1_000_000));
        // Not ending where the next listed batch starts (a hole, or the
        // listing page ends among the orphans): stop.
        assert_eq!(next_deletion(&starts[..3], versions(4, 1_000_000), u64::MAX), None);
        assert_eq!(next_deletion(&[1, 7], versions(0, 4), u64::MAX), None);
        // A header that does not match its name: stop.
        assert_eq!(next_deletion(&[1, 5], versions(1, 4), u64::MAX), None);
    }
}
