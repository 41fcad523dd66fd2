//! Which batch objects a truncation round may delete, pure.
//!
//! A batch named by start version `s` (its `prev_version + 1`) and followed
//! in the listing by a batch starting at `n` covers versions `s..n`. It may
//! be deleted when every one of them is older than the smallest policy
//! version (`n <= min_policy_version`); the log then continues from `n - 1`,
//! the new oldest version. The newest listed batch is never deleted (no
//! successor is known), so the log's tail, which recovery needs to find the
//! committed version, is never removed.
//!
//! Invariants: deletions are planned oldest first and contiguous from the
//! first listed batch, so deleting them in order never leaves a hole; the
//! oldest version of each step is below the smallest policy version.

/// One planned deletion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deletion {
    /// The start version (name) of the batch to delete.
    pub start_version: u64,
    /// The start version of the batch after it: the deleted batch must end
    /// at `next_start_version - 1` (checked against its header first).
    pub next_start_version: u64,
    /// The oldest version to publish before the delete.
    pub oldest_version: u64,
}

/// The deletions of one round: the oldest batches of `start_versions` (the
/// start versions of the log's oldest listed batches, ascending), at most
/// `max_objects`, none with a version at or after `min_policy_version`.
pub fn plan(start_versions: &[u64], min_policy_version: Option<u64>, max_objects: usize) -> Vec<Deletion> {
    let Some(min_policy_version) = min_policy_version else {
        return Vec::new();
    };
    start_versions
        .windows(2)
        .take(max_objects)
        .take_while(|pair| pair[0] < pair[1] && pair[1] <= min_policy_version)
        .map(|pair| Deletion { start_version: pair[0], next_start_version: pair[1], oldest_version: pair[1] - 1 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_policy_nothing_is_deleted() {
        assert_eq!(plan(&[1, 5, 9], None, 10), vec![]);
    }

    #[test]
    fn whole_batches_older_than_the_smallest_policy_go_oldest_first() {
        // Batches cover 1..=4, 5..=8, 9..=12, 13..
        let starts = [1, 5, 9, 13];
        assert_eq!(plan(&starts, Some(4), 10), vec![], "version 4 is pinned: its batch stays");
        let one = plan(&starts, Some(5), 10);
        assert_eq!(one, vec![Deletion { start_version: 1, next_start_version: 5, oldest_version: 4 }]);
        let oldest: Vec<u64> = plan(&starts, Some(12), 10).iter().map(|d| d.oldest_version).collect();
        assert_eq!(oldest, [4, 8]);
        assert_eq!(plan(&starts, Some(u64::MAX), 10).len(), 3, "the newest batch is never deleted");
        assert_eq!(plan(&starts, Some(u64::MAX), 2).len(), 2, "bounded per round");
    }

    #[test]
    fn a_plan_never_reaches_the_policy_and_is_contiguous() {
        let seed = 7u64;
        let mut random = crate::random::SplitMix64::new(seed);
        for round in 0..500 {
            let mut starts = Vec::new();
            let mut start = 1u64;
            for _ in 0..random.below(12) {
                starts.push(start);
                start += 1 + random.below(5);
            }
            let min = random.below(start + 2);
            let max = 1 + random.below(6) as usize;
            let deletions = plan(&starts, Some(min), max);
            assert!(deletions.len() <= max && deletions.len() < starts.len().max(1));
            for (index, deletion) in deletions.iter().enumerate() {
                assert_eq!(deletion.start_version, starts[index], "contiguous from the oldest");
                assert!(deletion.oldest_version < min, "seed {seed} round {round}: {deletion:?} reaches {min}");
            }
            let reference = starts.windows(2).take_while(|pair| pair[1] <= min).count().min(max);
            assert_eq!(deletions.len(), reference, "every deletable batch within the bound is planned");
        }
    }
}
