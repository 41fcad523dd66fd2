//! The samples of the boundary map's top level, in Eytzinger (breadth-first) order, searched
//! without data-dependent branches.
//!
//! A search descends `node = 2 * node + (sample <= head)`: the comparison feeds an addition, not
//! a branch or a select, so nothing is mispredicted whatever the keys (a plain binary search over
//! a run-time length became a branch even with `select_unpredictable`, mispredicting about half
//! its steps). The first levels, which every search reads, share a few cache lines.
//!
//! Invariants (checked by `assert_matches` in tests): `tree[1..]` holds the samples in Eytzinger
//! order (node `n`'s children are `2n` and `2n + 1`; an in-order walk gives them sorted), and
//! `ranks[n]` is the sorted position of `tree[n]`. Slot 0 of both is unused.

/// Sorted samples, laid out for a branch-free search.
#[derive(Debug)]
pub(super) struct Samples {
    tree: Vec<u128>,
    ranks: Vec<u32>,
    /// The inverse of `ranks`: the node of the sample of each sorted position.
    nodes: Vec<u32>,
}

impl Samples {
    /// `sorted` must be sorted and non-empty.
    pub(super) fn new(sorted: impl ExactSizeIterator<Item = u128>) -> Self {
        let mut samples = Samples { tree: Vec::new(), ranks: Vec::new(), nodes: Vec::new() };
        samples.rebuild(sorted);
        samples
    }

    /// Replaces the samples by `sorted` (sorted, non-empty), reusing the allocations.
    pub(super) fn rebuild(&mut self, sorted: impl ExactSizeIterator<Item = u128>) {
        let count = sorted.len();
        assert!(count > 0 && u32::try_from(count).is_ok(), "sample count {count}");
        self.tree.clear();
        self.tree.resize(count + 1, 0);
        self.ranks.clear();
        self.ranks.resize(count + 1, 0);
        self.nodes.clear();
        self.nodes.resize(count, 0);
        // An in-order walk of the implicit tree visits its nodes in sorted order.
        let mut sorted = sorted.enumerate();
        // The path from the root: at most one node per level, fewer than `u32::BITS` levels.
        let (mut stack, mut depth) = ([0usize; u32::BITS as usize], 0);
        let mut node = 1;
        while node <= count || depth > 0 {
            if node <= count {
                stack[depth] = node;
                depth += 1;
                node *= 2;
                continue;
            }
            depth -= 1;
            node = stack[depth];
            let (rank, sample) = sorted.next().expect("one sample per node");
            self.tree[node] = sample;
            self.ranks[node] = rank as u32;
            self.nodes[rank] = node as u32;
            node = 2 * node + 1;
        }
    }

    /// Number of samples.
    pub(super) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Replaces the sample at sorted position `rank`; the samples must be sorted again before
    /// the next search.
    pub(super) fn set(&mut self, rank: usize, head: u128) {
        self.tree[self.nodes[rank] as usize] = head;
    }

    /// Number of samples `<= head`.
    #[inline]
    pub(super) fn count_at_or_before(&self, head: u128) -> usize {
        let count = self.tree.len() - 1;
        let mut node = 1;
        while node <= count {
            node = 2 * node + usize::from(self.tree[node] <= head);
        }
        // The trailing ones are the final steps right; above them is the last step left, taken
        // at the first sample greater than `head`. None: every sample is `<= head`.
        node >>= node.trailing_ones() + 1;
        match node {
            0 => count,
            _ => self.ranks[node] as usize,
        }
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.tree.capacity() * size_of::<u128>() + (self.ranks.capacity() + self.nodes.capacity()) * size_of::<u32>()
    }

    /// Panics unless these are exactly `sorted` (tests only).
    #[cfg(test)]
    pub(super) fn assert_matches(&self, sorted: &[u128]) {
        assert_eq!(self.tree.len(), sorted.len() + 1);
        for node in 1..self.tree.len() {
            assert_eq!(self.tree[node], sorted[self.ranks[node] as usize]);
        }
        for (rank, &node) in self.nodes.iter().enumerate() {
            assert_eq!(self.ranks[node as usize] as usize, rank);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn conflict_samples_count_matches_a_linear_count() {
        for count in 1..70u128 {
            // Pairs of equal samples too: long keys can share their 16-byte heads.
            let sorted: Vec<u128> = (0..count).map(|index| index / 2 * 20).collect();
            let samples = Samples::new(sorted.iter().copied());
            samples.assert_matches(&sorted);
            for head in [0, 1, 5, 19, 20, 21, (count * 10).saturating_sub(20), count * 10, u128::MAX] {
                let expected = sorted.iter().filter(|&&sample| sample <= head).count();
                assert_eq!(samples.count_at_or_before(head), expected, "count {count}, head {head}");
            }
        }
    }
}
