//! The versioned boundary map: a sorted sequence of chunks of `(key, version)` boundaries.
//!
//! A boundary `(k, v)` says "every key in `[k, next boundary)` was last written at version
//! `v`" (0: never written, or forgotten). It is a two-level B+tree with the top level flattened
//! into arrays: `first_heads[c]` is the head of chunk `c`'s first key, so finding a chunk is a
//! binary search over contiguous `u128`s, and finding a boundary in a chunk is a second one.
//!
//! Invariants (checked by `assert_invariants` in tests):
//! - the first boundary of the first chunk is the empty key, so every key has a boundary at or
//!   before it;
//! - keys strictly increase across the whole sequence; no chunk is empty;
//! - `first_heads[c]` is the head of chunk `c`'s first key;
//! - `chunk.max_version` is exactly the largest version in the chunk (so a chunk lying wholly
//!   inside a read range is decided without scanning it);
//! - no chunk holds more than `CAP - 2` boundaries between operations, so a write fits.

use std::cmp::Ordering;

use super::key::{KeyRest, Probe};

/// A boundary's place: chunk index, then index inside the chunk (may equal the chunk's length,
/// meaning "just after its last boundary").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    chunk: usize,
    index: usize,
}

/// A run of consecutive boundaries kept as parallel fixed arrays in one allocation, so that
/// finding a boundary costs one pointer hop and binary search touches only the 16-byte heads.
/// Slots from `len` on hold zeros and empty rests.
#[derive(Debug)]
struct Chunk<const CAP: usize> {
    len: usize,
    max_version: u64,
    heads: [u128; CAP],
    versions: [u64; CAP],
    rests: [KeyRest; CAP],
}

/// Number of heads `<= head`, without data-dependent branches (the comparisons of a binary
/// search over random keys are unpredictable, and mispredictions dominated its cost).
fn count_heads_at_or_before(heads: &[u128], head: u128) -> usize {
    if heads.is_empty() {
        return 0;
    }
    let (mut base, mut size) = (0, heads.len());
    while size > 1 {
        let half = size / 2;
        let middle = base + half;
        base = std::hint::select_unpredictable(heads[middle] <= head, middle, base);
        size -= half;
    }
    // `base` is the last head `<= head` if the first one is; else every head is above `head`.
    base + usize::from(heads[base] <= head)
}

/// Number of heads `< head` (branch-free, as above).
fn count_heads_before(heads: &[u128], head: u128) -> usize {
    match head.checked_sub(1) {
        Some(below) => count_heads_at_or_before(heads, below),
        None => 0,
    }
}

/// Number of keys `<= probe` in a sorted sequence whose heads are `heads` and whose full
/// comparison with the probe is `cmp_at(index)`. Heads decide unless they tie with the probe's;
/// ties (keys sharing 16 leading bytes) are settled by a binary search over the tied run only.
fn count_at_or_before(
    heads: &[u128],
    probe: &Probe<'_>,
    cmp_at: impl Fn(usize) -> Ordering,
) -> usize {
    let at_or_before = count_heads_at_or_before(heads, probe.head);
    if at_or_before == 0 || heads[at_or_before - 1] != probe.head {
        return at_or_before;
    }
    let (mut low, mut high) = (count_heads_before(heads, probe.head), at_or_before);
    while low < high {
        let middle = (low + high) / 2;
        if cmp_at(middle) == Ordering::Greater {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    low
}

impl<const CAP: usize> Chunk<CAP> {
    fn new_boxed() -> Box<Self> {
        Box::new(Chunk {
            len: 0,
            max_version: 0,
            heads: [0; CAP],
            versions: [0; CAP],
            rests: std::array::from_fn(|_| KeyRest::default()),
        })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn heads(&self) -> &[u128] {
        &self.heads[..self.len]
    }

    fn versions(&self) -> &[u64] {
        &self.versions[..self.len]
    }

    fn cmp_at(&self, index: usize, probe: &Probe<'_>) -> Ordering {
        self.rests[index].cmp_with(self.heads[index], probe)
    }

    /// Number of boundaries whose key is `<= probe`.
    fn count_at_or_before(&self, probe: &Probe<'_>) -> usize {
        count_at_or_before(self.heads(), probe, |index| self.cmp_at(index, probe))
    }

    fn recompute_max_version(&mut self) {
        self.max_version = self.versions().iter().copied().max().unwrap_or(0);
    }

    fn push(&mut self, head: u128, rest: KeyRest, version: u64) {
        let index = self.len;
        self.heads[index] = head;
        self.versions[index] = version;
        self.rests[index] = rest;
        self.len += 1;
    }

    fn truncate(&mut self, len: usize) {
        self.rests[len..self.len].fill_with(KeyRest::default);
        self.heads[len..self.len].fill(0);
        self.versions[len..self.len].fill(0);
        self.len = len;
    }

    fn drain_front(&mut self, count: usize) {
        self.splice(0, count, &[]);
    }

    /// Replaces the boundaries in `[start, stop)` by `inserted`; the result must fit.
    fn splice(&mut self, start: usize, stop: usize, inserted: &[NewBoundary<'_>]) {
        let (removed, added) = (stop - start, inserted.len());
        let new_len = self.len - removed + added;
        assert!(new_len <= CAP, "chunk overflow");
        self.rests[start..stop].fill_with(KeyRest::default);
        self.heads.copy_within(stop..self.len, start + added);
        self.versions.copy_within(stop..self.len, start + added);
        // The emptied slots rotate to where the shifted tail used to end, or in front of it.
        if removed >= added {
            self.rests[start..self.len].rotate_left(removed - added);
        } else {
            self.rests[start..new_len].rotate_right(added - removed);
        }
        for (offset, boundary) in inserted.iter().enumerate() {
            self.heads[start + offset] = boundary.probe.head;
            self.versions[start + offset] = boundary.version;
            self.rests[start + offset] = KeyRest::of(&boundary.probe);
        }
        if new_len < self.len {
            self.heads[new_len..self.len].fill(0);
            self.versions[new_len..self.len].fill(0);
        }
        self.len = new_len;
    }

    /// Moves the boundaries from `at` on into a new chunk.
    fn split_off(&mut self, at: usize) -> Box<Self> {
        let mut upper = Self::new_boxed();
        for index in at..self.len {
            let rest = std::mem::take(&mut self.rests[index]);
            upper.push(self.heads[index], rest, self.versions[index]);
        }
        self.truncate(at);
        upper.recompute_max_version();
        self.recompute_max_version();
        upper
    }

    fn append(&mut self, mut other: Box<Self>) {
        for index in 0..other.len {
            let rest = std::mem::take(&mut other.rests[index]);
            self.push(other.heads[index], rest, other.versions[index]);
        }
        self.max_version = self.max_version.max(other.max_version);
    }

    /// Forgets versions at or below `oldest_version` and drops boundaries that repeat the
    /// version before them (`previous`, the effective version of the preceding boundary).
    fn forget_history(&mut self, mut previous: Option<u64>, oldest_version: u64) {
        let mut kept = 0;
        for index in 0..self.len {
            let version = effective_version(self.versions[index], oldest_version);
            if previous == Some(version) {
                continue;
            }
            previous = Some(version);
            self.heads[kept] = self.heads[index];
            self.versions[kept] = version;
            self.rests.swap(kept, index);
            kept += 1;
        }
        self.truncate(kept);
        self.recompute_max_version();
    }

    fn memory_bytes(&self) -> usize {
        let heap: usize = self.rests[..self.len].iter().map(KeyRest::heap_bytes).sum();
        size_of::<Self>() + heap
    }
}

/// The version that a stored version stands for once history at or before `oldest_version` is
/// forgotten: such writes can no longer conflict with any read that is not too old.
fn effective_version(version: u64, oldest_version: u64) -> u64 {
    if version <= oldest_version {
        0
    } else {
        version
    }
}

/// A boundary to insert by `BoundaryMap::write`.
struct NewBoundary<'a> {
    probe: Probe<'a>,
    version: u64,
}

/// The sorted, chunked map from key ranges to the version of their latest write.
#[derive(Debug)]
pub(super) struct BoundaryMap<const CAP: usize> {
    chunks: Vec<Box<Chunk<CAP>>>,
    first_heads: Vec<u128>,
}

impl<const CAP: usize> BoundaryMap<CAP> {
    /// A chunk splits when it holds more than this, so that one write (at most two new
    /// boundaries) always fits before the split.
    const SPLIT_ABOVE: usize = CAP - 2;

    pub(super) fn new() -> Self {
        const { assert!(CAP >= 6, "chunks must hold at least 6 boundaries") };
        let mut first = Chunk::new_boxed();
        let empty_key = Probe::new(&[]);
        first.push(empty_key.head, KeyRest::of(&empty_key), 0);
        BoundaryMap {
            chunks: vec![first],
            first_heads: vec![empty_key.head],
        }
    }

    /// Index of the last chunk whose first key is `<= probe` (chunk 0 starts with the empty key).
    fn chunk_at_or_before(&self, probe: &Probe<'_>) -> usize {
        count_at_or_before(&self.first_heads, probe, |chunk| {
            self.chunks[chunk].cmp_at(0, probe)
        }) - 1
    }

    /// Position of the last boundary whose key is `<= probe`.
    fn last_at_or_before(&self, probe: &Probe<'_>) -> Position {
        let chunk = self.chunk_at_or_before(probe);
        let index = self.chunks[chunk].count_at_or_before(probe) - 1;
        Position { chunk, index }
    }

    /// As `last_at_or_before`, trying chunk `hint` first (a write's ends usually share a chunk).
    fn last_at_or_before_near(&self, probe: &Probe<'_>, hint: usize) -> Position {
        let chunk = &self.chunks[hint];
        match chunk.cmp_at(0, probe) {
            Ordering::Greater => self.last_at_or_before(probe),
            _ => Position {
                chunk: hint,
                index: chunk.count_at_or_before(probe) - 1,
            },
        }
    }

    /// Version of the boundary just before `position`, if there is one.
    fn version_before(&self, position: Position) -> Option<u64> {
        if position.index > 0 {
            return Some(self.chunks[position.chunk].versions[position.index - 1]);
        }
        let previous = self.chunks.get(position.chunk.checked_sub(1)?)?;
        previous.versions().last().copied()
    }

    /// True iff some boundary intersecting `[begin, end)` has a version above `read_version`.
    /// Requires `begin < end`.
    pub(super) fn any_newer_than(&self, begin: &[u8], end: &[u8], read_version: u64) -> bool {
        let begin = Probe::new(begin);
        let end = Probe::new(end);
        let start = self.last_at_or_before(&begin);
        let chunk = &self.chunks[start.chunk];
        if chunk.max_version > read_version
            && Self::scan_newer(chunk, start.index, &end, read_version)
        {
            return true;
        }
        for chunk in &self.chunks[start.chunk + 1..] {
            if chunk.cmp_at(0, &end) != Ordering::Less {
                return false;
            }
            if chunk.max_version > read_version && Self::scan_newer(chunk, 0, &end, read_version) {
                return true;
            }
        }
        false
    }

    /// Scans `chunk` from `from` (which is inside the range) while keys are below `end`.
    fn scan_newer(chunk: &Chunk<CAP>, from: usize, end: &Probe<'_>, read_version: u64) -> bool {
        if chunk.versions[from] > read_version {
            return true;
        }
        for index in from + 1..chunk.len() {
            if chunk.cmp_at(index, end) != Ordering::Less {
                return false;
            }
            if chunk.versions[index] > read_version {
                return true;
            }
        }
        false
    }

    /// Records a write of `[begin, end)` at `version`, which must be `>=` every stored version.
    /// Requires `begin < end`.
    pub(super) fn write(&mut self, begin: &[u8], end: &[u8], version: u64) {
        let begin = Probe::new(begin);
        let end = Probe::new(end);
        let at_end = self.last_at_or_before(&end);
        let version_at_end = self.chunks[at_end.chunk].versions[at_end.index];
        let at_begin = self.last_at_or_before_near(&begin, at_end.chunk);
        let begin_exists =
            self.chunks[at_begin.chunk].cmp_at(at_begin.index, &begin) == Ordering::Equal;
        let (start, version_before_begin) = if begin_exists {
            (at_begin, self.version_before(at_begin))
        } else {
            let after = Position {
                chunk: at_begin.chunk,
                index: at_begin.index + 1,
            };
            (
                after,
                Some(self.chunks[at_begin.chunk].versions[at_begin.index]),
            )
        };
        let stop = Position {
            chunk: at_end.chunk,
            index: at_end.index + 1,
        };
        let mut inserted = Vec::with_capacity(2);
        // Skip boundaries that would repeat their predecessor's version: adjacent writes of one
        // call then share a single boundary.
        if version_before_begin != Some(version) {
            inserted.push(NewBoundary {
                probe: begin,
                version,
            });
        }
        if version_at_end != version {
            inserted.push(NewBoundary {
                probe: end,
                version: version_at_end,
            });
        }
        self.replace(start, stop, &inserted);
    }

    /// Replaces the boundaries in `[start, stop)` by `inserted` (at most two), then restores the
    /// chunk invariants (no empty chunk, none over capacity, exact max versions, first heads).
    fn replace(&mut self, start: Position, stop: Position, inserted: &[NewBoundary<'_>]) {
        let chunk = &mut self.chunks[start.chunk];
        if start.chunk == stop.chunk {
            chunk.splice(start.index, stop.index, inserted);
        } else {
            chunk.truncate(start.index);
            for boundary in inserted {
                chunk.push(
                    boundary.probe.head,
                    KeyRest::of(&boundary.probe),
                    boundary.version,
                );
            }
            self.chunks[stop.chunk].drain_front(stop.index);
            self.chunks[stop.chunk].recompute_max_version();
            self.refresh_or_remove(stop.chunk);
            self.chunks.drain(start.chunk + 1..stop.chunk);
            self.first_heads.drain(start.chunk + 1..stop.chunk);
        }
        self.chunks[start.chunk].recompute_max_version();
        self.refresh_or_remove(start.chunk);
        if self
            .chunks
            .get(start.chunk)
            .is_some_and(|c| c.len() > Self::SPLIT_ABOVE)
        {
            self.split(start.chunk);
        }
    }

    /// Removes chunk `chunk` if it became empty, else refreshes its first head.
    fn refresh_or_remove(&mut self, chunk: usize) {
        match self.chunks[chunk].heads().first() {
            Some(&head) => self.first_heads[chunk] = head,
            None => {
                self.chunks.remove(chunk);
                self.first_heads.remove(chunk);
            }
        }
    }

    fn split(&mut self, chunk: usize) {
        let half = self.chunks[chunk].len() / 2;
        let upper = self.chunks[chunk].split_off(half);
        self.first_heads.insert(chunk + 1, upper.heads[0]);
        self.chunks.insert(chunk + 1, upper);
    }

    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Forgets history at or before `oldest_version` in chunk `chunk`: such versions become 0 and
    /// boundaries that repeat their predecessor's version are dropped. Merges the chunk with its
    /// successor when both are small. Returns the number of boundaries examined.
    pub(super) fn collect_garbage(&mut self, chunk: usize, oldest_version: u64) -> usize {
        let previous = match chunk {
            0 => None,
            _ => {
                let before = &self.chunks[chunk - 1];
                Some(effective_version(
                    before.versions[before.len - 1],
                    oldest_version,
                ))
            }
        };
        let examined = self.chunks[chunk].len();
        self.chunks[chunk].forget_history(previous, oldest_version);
        self.refresh_or_remove(chunk);
        self.merge_if_small(chunk);
        examined
    }

    /// Merges chunk `chunk` with its successor when together they fill at most half a chunk.
    fn merge_if_small(&mut self, chunk: usize) {
        let Some(next) = self.chunks.get(chunk + 1) else {
            return;
        };
        if self.chunks[chunk].len() + next.len() > CAP / 2 {
            return;
        }
        let next = self.chunks.remove(chunk + 1);
        self.first_heads.remove(chunk + 1);
        self.chunks[chunk].append(next);
    }

    pub(super) fn boundary_count(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.len()).sum()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|chunk| chunk.memory_bytes()).sum();
        chunks + self.first_heads.capacity() * size_of::<u128>()
    }

    /// Every boundary as `(key, version)`, in order (tests only).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<(Vec<u8>, u64)> {
        let mut entries = Vec::new();
        for chunk in &self.chunks {
            for index in 0..chunk.len() {
                let key = super::key::full_key(chunk.heads[index], &chunk.rests[index]);
                entries.push((key, chunk.versions[index]));
            }
        }
        entries
    }

    /// Panics if a structural invariant is broken (tests only).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        assert_eq!(self.chunks.len(), self.first_heads.len());
        assert!(self
            .entries()
            .first()
            .is_some_and(|(key, _)| key.is_empty()));
        let entries = self.entries();
        for pair in entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "keys out of order: {pair:?}");
        }
        for (chunk, first_head) in self.chunks.iter().zip(&self.first_heads) {
            assert!(chunk.len() > 0 && chunk.len() <= Self::SPLIT_ABOVE);
            assert!(chunk.heads[chunk.len..].iter().all(|&head| head == 0));
            assert!(chunk.rests[chunk.len..]
                .iter()
                .all(|rest| *rest == KeyRest::default()));
            assert_eq!(chunk.heads[0], *first_head);
            assert_eq!(
                Some(chunk.max_version),
                chunk.versions().iter().copied().max()
            );
            for (head, rest) in chunk.heads().iter().zip(&chunk.rests) {
                let key = super::key::full_key(*head, rest);
                assert_eq!(super::key::head_of(&key), *head);
                assert_eq!(key.len(), rest.len);
            }
        }
    }
}
