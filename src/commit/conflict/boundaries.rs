//! The versioned boundary map: a sorted sequence of chunks of `(key, version)` boundaries.
//!
//! A boundary `(k, v)` says "every key in `[k, next boundary)` was last written at version
//! `v`" (0: never written, or forgotten). It is a two-level B+tree with the top level flattened
//! into arrays: `first_heads[c]` is the head of chunk `c`'s first key, and every
//! `SAMPLE_STRIDE`-th of them is copied into `samples` (in Eytzinger order, see `samples.rs`),
//! small enough to stay in L1.
//!
//! The layout is chosen for memory latency (a miss costs ~150 ns on the benchmark machine): a
//! lookup searches the samples (in L1), one stride of first heads, then the slots of one chunk,
//! whose lines `check_batch` has prefetched a few transactions earlier. The searches are
//! branch-free (constant-length binary searches over a stride and a chunk, an Eytzinger descent
//! over the samples), so that random keys cause no mispredictions.
//!
//! Invariants (checked by `assert_invariants` in tests):
//! - the first boundary of the first chunk is the empty key, so every key has a boundary at or
//!   before it;
//! - keys strictly increase across the whole sequence; no chunk is empty;
//! - `first_heads[c]` is the head of chunk `c`'s first key, followed by `SAMPLE_STRIDE`
//!   largest heads (so that every stride is a whole array); the `s`-th smallest sample is
//!   `first_heads[s * SAMPLE_STRIDE]`;
//! - `chunk.max_version` is exactly the largest version in the chunk (so a chunk lying wholly
//!   inside a read range is decided without scanning it);
//! - no chunk holds more than `CAP - 2` boundaries between operations, so a write fits; unused
//!   slots hold `EMPTY_SLOT`, a zero length, a zero tail word and an empty tail.

use std::cmp::Ordering;

use super::key::{cmp_past_inline, Probe};
use super::samples::Samples;

/// First heads per sample of the top level.
const SAMPLE_STRIDE: usize = 32;

/// A boundary's place: chunk index, then index inside the chunk (may equal the chunk's length,
/// meaning "just after its last boundary").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    chunk: usize,
    index: usize,
}

/// A boundary's head and version side by side: the line that decides a comparison also holds
/// the version, so reading it costs no further miss. The head is split in two `u64`s to keep
/// the slot at 24 bytes (a `u128` would align it to 32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    head_high: u64,
    head_low: u64,
    version: u64,
}

/// Unused slots: the largest head and no version, so that they sort after every real slot.
const EMPTY_SLOT: Slot = Slot { head_high: u64::MAX, head_low: u64::MAX, version: 0 };

impl Slot {
    fn new(head: u128, version: u64) -> Self {
        Slot { head_high: (head >> 64) as u64, head_low: head as u64, version }
    }

    #[inline]
    fn head(&self) -> u128 {
        (u128::from(self.head_high) << 64) | u128::from(self.head_low)
    }
}

/// Bytes of a key beyond its first 24, per slot of a chunk.
type Tails<const CAP: usize> = [Box<[u8]>; CAP];

/// A run of consecutive boundaries in one allocation: slots (head and version), then key
/// lengths and tail words (bytes 16 to 24), which comparisons read only when 16-byte heads tie.
/// Key bytes beyond the 24th live in `tails`, allocated only once the chunk holds a key longer
/// than 24 bytes, so that with shorter keys (16-byte keys and their point ends `k\x00` among
/// them) a write moves nothing but slots, lengths and tail words, and allocates nothing.
#[derive(Debug)]
#[repr(C)] // Header first, then slots: a read's prefetch covers one contiguous span.
struct Chunk<const CAP: usize> {
    len: usize,
    max_version: u64,
    slots: [Slot; CAP],
    key_lens: [u32; CAP],
    tail_words: [u64; CAP],
    tails: Option<Box<Tails<CAP>>>,
}

/// Which heads `count_heads` counts.
#[derive(Clone, Copy)]
enum HeadBound {
    Before,
    AtOrBefore,
}

/// Number of the sorted heads `head_at(0..len)` that are `< head` or `<= head`, by a binary
/// search without data-dependent branches: the loop runs `log2(len)` times whatever the heads,
/// so nothing is mispredicted (random keys made a branchy search mispredict half its steps).
#[inline]
fn count_heads(len: usize, head: u128, head_at: impl Fn(usize) -> u128, bound: HeadBound) -> usize {
    let counts = |candidate: u128| match bound {
        HeadBound::Before => candidate < head,
        HeadBound::AtOrBefore => candidate <= head,
    };
    if len == 0 {
        return 0;
    }
    let (mut base, mut size) = (0, len);
    while size > 1 {
        let half = size / 2;
        // Without the hint, the compiler turns a search of a run-time length into a branch.
        base = std::hint::select_unpredictable(counts(head_at(base + half)), base + half, base);
        size -= half;
    }
    // `base` is the last counted head if the first one is counted; else none is.
    base + usize::from(counts(head_at(base)))
}

/// Binary search over `[low, high)` for the first index whose key is greater than the probe
/// (`cmp_at` orders that index's key against the probe). Used for runs of tied heads.
fn first_greater(mut low: usize, mut high: usize, cmp_at: impl Fn(usize) -> Ordering) -> usize {
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

/// A key length as stored: request bodies are far below 4 GiB, so this cannot fail on input.
fn stored_len(probe: &Probe<'_>) -> u32 {
    u32::try_from(probe.len).expect("keys are shorter than 4 GiB")
}

impl<const CAP: usize> Chunk<CAP> {
    fn new_boxed() -> Box<Self> {
        Box::new(Chunk {
            len: 0,
            max_version: 0,
            slots: [EMPTY_SLOT; CAP],
            key_lens: [0; CAP],
            tail_words: [0; CAP],
            tails: None,
        })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn head(&self, index: usize) -> u128 {
        self.slots[index].head()
    }

    fn version(&self, index: usize) -> u64 {
        self.slots[index].version
    }

    fn versions(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots[..self.len].iter().map(|slot| slot.version)
    }

    fn tail(&self, index: usize) -> &[u8] {
        self.tails.as_ref().map_or(&[], |tails| &tails[index])
    }

    #[inline]
    fn cmp_at(&self, index: usize, probe: &Probe<'_>) -> Ordering {
        self.head(index).cmp(&probe.head).then_with(|| {
            (self.tail_words[index].cmp(&probe.tail_word)).then_with(|| {
                cmp_past_inline(self.key_lens[index] as usize, || self.tail(index).cmp(probe.rest), probe.len)
            })
        })
    }

    /// Number of boundaries whose key is `<= probe`: a branch-free binary search over the
    /// heads, refined by full comparisons only among tied heads.
    ///
    /// The search runs over all `CAP` slots, a constant trip count that the compiler unrolls:
    /// unused slots hold the largest head, so they are never counted except by a probe whose
    /// head is that largest head too, hence the clamp to `len`.
    #[inline]
    fn count_at_or_before(&self, probe: &Probe<'_>) -> usize {
        let heads = |index: usize| self.slots[index].head();
        let heads_at_or_before = count_heads(CAP, probe.head, heads, HeadBound::AtOrBefore).min(self.len);
        if heads_at_or_before == 0 || self.head(heads_at_or_before - 1) != probe.head {
            return heads_at_or_before;
        }
        let heads_before = count_heads(CAP, probe.head, heads, HeadBound::Before);
        first_greater(heads_before, heads_at_or_before, |index| self.cmp_at(index, probe))
    }

    fn recompute_max_version(&mut self) {
        self.max_version = self.versions().max().unwrap_or(0);
    }

    fn tails_mut(&mut self) -> &mut Tails<CAP> {
        self.tails.get_or_insert_with(|| Box::new(std::array::from_fn(|_| Box::default())))
    }

    /// Stores the key of `probe` at `index` (slot and version are set by the caller).
    fn set_key(&mut self, index: usize, probe: &Probe<'_>) {
        self.key_lens[index] = stored_len(probe);
        self.tail_words[index] = probe.tail_word;
        if !probe.rest.is_empty() {
            self.tails_mut()[index] = probe.rest.into();
        } else if let Some(tails) = &mut self.tails {
            tails[index] = Box::default();
        }
    }

    /// Appends the boundary at `index` of `source`, taking its tail.
    fn push_from(&mut self, source: &mut Self, index: usize) {
        let target = self.len;
        self.slots[target] = source.slots[index];
        self.key_lens[target] = source.key_lens[index];
        self.tail_words[target] = source.tail_words[index];
        if let Some(tails) = &mut source.tails {
            let tail = std::mem::take(&mut tails[index]);
            if !tail.is_empty() {
                self.tails_mut()[target] = tail;
            }
        }
        self.len += 1;
    }

    fn push(&mut self, probe: &Probe<'_>, version: u64) {
        let index = self.len;
        self.slots[index] = Slot::new(probe.head, version);
        self.set_key(index, probe);
        self.len += 1;
    }

    fn truncate(&mut self, len: usize) {
        if let Some(tails) = &mut self.tails {
            tails[len..self.len].fill_with(Box::default);
        }
        self.slots[len..self.len].fill(EMPTY_SLOT);
        self.key_lens[len..self.len].fill(0);
        self.tail_words[len..self.len].fill(0);
        self.len = len;
    }

    fn drain_front(&mut self, count: usize) {
        self.splice(0, count, &[]);
    }

    /// Replaces the boundaries in `[start, stop)` by `inserted`; the result must fit.
    fn splice(&mut self, start: usize, stop: usize, inserted: &[NewBoundary<'_>]) {
        let (removed, added) = (stop - start, inserted.len());
        let (old_len, new_len) = (self.len, self.len - removed + added);
        assert!(new_len <= CAP, "chunk overflow");
        self.slots.copy_within(stop..old_len, start + added);
        self.key_lens.copy_within(stop..old_len, start + added);
        self.tail_words.copy_within(stop..old_len, start + added);
        if let Some(tails) = &mut self.tails {
            tails[start..stop].fill_with(Box::default);
            // The emptied tails rotate to where the shifted tail used to end, or in front of it.
            if removed >= added {
                tails[start..old_len].rotate_left(removed - added);
            } else {
                tails[start..new_len].rotate_right(added - removed);
            }
        }
        if new_len < old_len {
            self.slots[new_len..old_len].fill(EMPTY_SLOT);
            self.key_lens[new_len..old_len].fill(0);
            self.tail_words[new_len..old_len].fill(0);
        }
        for (offset, boundary) in inserted.iter().enumerate() {
            self.slots[start + offset] = Slot::new(boundary.probe.head, boundary.version);
            self.set_key(start + offset, &boundary.probe);
        }
        self.len = new_len;
    }

    /// Moves the boundaries from `at` on into a new chunk.
    fn split_off(&mut self, at: usize) -> Box<Self> {
        let mut upper = Self::new_boxed();
        for index in at..self.len {
            upper.push_from(self, index);
        }
        self.truncate(at);
        upper.recompute_max_version();
        self.recompute_max_version();
        upper
    }

    fn append(&mut self, mut other: Box<Self>) {
        for index in 0..other.len {
            self.push_from(&mut other, index);
        }
        self.max_version = self.max_version.max(other.max_version);
    }

    /// Forgets versions at or below `oldest_version` and drops boundaries that repeat the
    /// version before them (`previous`, the effective version of the preceding boundary).
    fn forget_history(&mut self, mut previous: Option<u64>, oldest_version: u64) {
        let (mut kept, mut max_version) = (0, 0);
        for index in 0..self.len {
            let version = effective_version(self.slots[index].version, oldest_version);
            if previous == Some(version) {
                continue;
            }
            previous = Some(version);
            // Copied even when `kept == index`: cheaper than the branch.
            self.slots[kept] = Slot { version, ..self.slots[index] };
            self.key_lens[kept] = self.key_lens[index];
            self.tail_words[kept] = self.tail_words[index];
            if let Some(tails) = &mut self.tails {
                tails.swap(kept, index);
            }
            max_version = max_version.max(version);
            kept += 1;
        }
        self.truncate(kept);
        self.max_version = max_version;
    }

    /// The full key at `index` (tests only).
    #[cfg(test)]
    fn key(&self, index: usize) -> Vec<u8> {
        let len = self.key_lens[index] as usize;
        let mut inline = self.head(index).to_be_bytes().to_vec();
        inline.extend_from_slice(&self.tail_words[index].to_be_bytes());
        let mut key = inline[..len.min(super::key::INLINE_BYTES)].to_vec();
        key.extend_from_slice(self.tail(index));
        key
    }

    fn memory_bytes(&self) -> usize {
        let tails = self
            .tails
            .as_ref()
            .map_or(0, |tails| size_of::<Tails<CAP>>() + tails.iter().map(|tail| tail.len()).sum::<usize>());
        size_of::<Self>() + tails
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
    samples: Samples,
}

impl<const CAP: usize> BoundaryMap<CAP> {
    /// A chunk splits when it holds more than this, so that one write (at most two new
    /// boundaries) always fits before the split.
    const SPLIT_ABOVE: usize = CAP - 2;

    pub(super) fn new() -> Self {
        const { assert!(CAP >= 6, "chunks must hold at least 6 boundaries") };
        let mut first = Chunk::new_boxed();
        let empty_key = Probe::new(&[]);
        first.push(&empty_key, 0);
        let mut first_heads = vec![empty_key.head];
        first_heads.extend([u128::MAX; SAMPLE_STRIDE]);
        BoundaryMap { chunks: vec![first], first_heads, samples: Samples::new([empty_key.head].into_iter()) }
    }

    /// Index of the last chunk whose first key is `<= probe` (chunk 0 starts with the empty key).
    fn chunk_at_or_before(&self, probe: &Probe<'_>) -> usize {
        self.chunk_in_stride(probe, self.stride_start(probe.head))
    }

    /// `chunk_at_or_before`, searching the stride from `stride_start` (where `stride_start`
    /// says the probe falls). A stale `stride_start` gives a wrong chunk, never a panic.
    #[inline]
    fn chunk_in_stride(&self, probe: &Probe<'_>, stride_start: usize) -> usize {
        let head = probe.head;
        let stride = self.stride(stride_start);
        // A constant trip count, unrolled, over a whole array: past the last chunk, the padding
        // holds the largest head, and the clamp undoes a probe equal to it.
        let in_stride = count_heads(SAMPLE_STRIDE, head, |index| stride[index], HeadBound::AtOrBefore);
        let heads_at_or_before = (stride_start + in_stride).min(self.chunks.len());
        if self.first_heads[heads_at_or_before - 1] != head {
            return heads_at_or_before - 1;
        }
        let firsts = |index: usize| self.first_heads[index];
        let heads_before = count_heads(self.chunks.len(), head, firsts, HeadBound::Before);
        first_greater(heads_before, heads_at_or_before, |chunk| self.chunks[chunk].cmp_at(0, probe)) - 1
    }

    /// Starts loading the stride of first heads that a search for `key` will count; returns
    /// where that stride starts, the hint for `prefetch_chunk`.
    pub(super) fn prefetch_top_level(&self, key: &[u8]) -> usize {
        let stride_start = self.stride_start(Probe::new(key).head);
        super::prefetch::prefetch_bytes(self.stride(stride_start));
        stride_start
    }

    /// Starts loading the chunk where `key` would be found; returns that chunk. A read needs
    /// only the header and the slots; a write also moves key lengths and tail words.
    /// `stride_hint`: what `prefetch_top_level` returned for `key` (any value if unknown; the
    /// chunks may have changed since, so a wrong hint only makes the prefetch useless).
    pub(super) fn prefetch_chunk(&self, key: &[u8], for_write: bool, stride_hint: usize) -> usize {
        let probe = Probe::new(key);
        let chunk = match stride_hint < self.chunks.len() {
            true => self.chunk_in_stride(&probe, stride_hint),
            false => self.chunk_at_or_before(&probe),
        };
        if for_write {
            self.prefetch_chunk_at(chunk);
        } else {
            super::prefetch::prefetch_bytes(&self.chunks[chunk].len);
            super::prefetch::prefetch_bytes(&self.chunks[chunk].slots);
        }
        chunk
    }

    /// Starts loading chunk `chunk` (slots and key lengths), if it exists.
    pub(super) fn prefetch_chunk_at(&self, chunk: usize) {
        if let Some(chunk) = self.chunks.get(chunk) {
            super::prefetch::prefetch_bytes(&**chunk);
        }
    }

    /// `chunk_at_or_before`, trusting `hint` when it is still right: chunks split and merge
    /// between a prefetch and the search it prepares, so the hint is checked, never assumed.
    fn chunk_at_or_before_hinted(&self, probe: &Probe<'_>, hint: usize) -> usize {
        let starts_at_or_before = |chunk: usize| match self.first_heads[chunk].cmp(&probe.head) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => self.chunks[chunk].cmp_at(0, probe) != Ordering::Greater,
        };
        let hint_is_right = hint < self.chunks.len()
            && starts_at_or_before(hint)
            && (hint + 1 == self.chunks.len() || !starts_at_or_before(hint + 1));
        match hint_is_right {
            true => hint,
            false => self.chunk_at_or_before(probe),
        }
    }

    /// Index in `first_heads` of the stride (of `SAMPLE_STRIDE`) where `head` falls.
    #[inline]
    fn stride_start(&self, head: u128) -> usize {
        // The first sample is the empty key's head, 0, so at least one sample counts.
        (self.samples.count_at_or_before(head) - 1) * SAMPLE_STRIDE
    }

    /// The `SAMPLE_STRIDE` first heads from `stride_start` (`< chunks.len()`), padding included.
    #[inline]
    fn stride(&self, stride_start: usize) -> &[u128; SAMPLE_STRIDE] {
        let stride = &self.first_heads[stride_start..stride_start + SAMPLE_STRIDE];
        stride.try_into().expect("a stride is SAMPLE_STRIDE heads")
    }

    /// Position of the last boundary whose key is `<= probe`.
    fn last_at_or_before(&self, probe: &Probe<'_>) -> Position {
        self.last_at_or_before_hinted(probe, usize::MAX)
    }

    /// `last_at_or_before`, starting from chunk `hint` if it is still right.
    fn last_at_or_before_hinted(&self, probe: &Probe<'_>, hint: usize) -> Position {
        let chunk = self.chunk_at_or_before_hinted(probe, hint);
        let index = self.chunks[chunk].count_at_or_before(probe) - 1;
        Position { chunk, index }
    }

    /// As `last_at_or_before`, trying chunk `hint` first (a write's ends usually share a chunk).
    fn last_at_or_before_near(&self, probe: &Probe<'_>, hint: usize) -> Position {
        let chunk = &self.chunks[hint];
        match chunk.cmp_at(0, probe) {
            Ordering::Greater => self.last_at_or_before(probe),
            _ => Position { chunk: hint, index: chunk.count_at_or_before(probe) - 1 },
        }
    }

    /// As `last_at_or_before` for a probe `<=` the key at `above`: steps back from `above` a
    /// few boundaries (a write's begin is usually within one or two of its end), then searches.
    fn last_at_or_before_below(&self, probe: &Probe<'_>, above: Position) -> Position {
        const STEPS_MAX: usize = 4;
        let chunk = &self.chunks[above.chunk];
        let lowest = above.index.saturating_sub(STEPS_MAX);
        for index in (lowest..=above.index).rev() {
            if chunk.cmp_at(index, probe) != Ordering::Greater {
                return Position { chunk: above.chunk, index };
            }
        }
        self.last_at_or_before_near(probe, above.chunk)
    }

    fn version_at(&self, position: Position) -> u64 {
        self.chunks[position.chunk].version(position.index)
    }

    /// Version of the boundary just before `position`, if there is one.
    fn version_before(&self, position: Position) -> Option<u64> {
        if position.index > 0 {
            return Some(self.chunks[position.chunk].version(position.index - 1));
        }
        let previous = self.chunks.get(position.chunk.checked_sub(1)?)?;
        Some(previous.version(previous.len - 1))
    }

    /// True iff some boundary intersecting `[begin, end)` has a version above `read_version`
    /// (false for an empty range). `chunk_hint`: the chunk where `begin` was last seen, if
    /// known (else any value).
    pub(super) fn any_newer_than(&self, begin: &[u8], end: &[u8], read_version: u64, chunk_hint: usize) -> bool {
        let begin = Probe::new(begin);
        let end = Probe::new(end);
        if !begin.is_before(&end) {
            return false;
        }
        let start = self.last_at_or_before_hinted(&begin, chunk_hint);
        let chunk = &self.chunks[start.chunk];
        if chunk.max_version > read_version && Self::scan_newer(chunk, start.index, &end, read_version) {
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
        if chunk.version(from) > read_version {
            return true;
        }
        for index in from + 1..chunk.len() {
            if chunk.cmp_at(index, end) != Ordering::Less {
                return false;
            }
            if chunk.version(index) > read_version {
                return true;
            }
        }
        false
    }

    /// Records a write of `[begin, end)` at `version`, which must be `>=` every stored version
    /// (nothing for an empty range). `chunk_hint`: the chunk where `end` was last seen, if
    /// known (else any value).
    pub(super) fn write(&mut self, begin: &[u8], end: &[u8], version: u64, chunk_hint: usize) {
        let begin = Probe::new(begin);
        let end = Probe::new(end);
        if !begin.is_before(&end) {
            return;
        }
        let at_end = self.last_at_or_before_hinted(&end, chunk_hint);
        let version_at_end = self.version_at(at_end);
        let at_begin = self.last_at_or_before_below(&begin, at_end);
        let begin_exists = self.chunks[at_begin.chunk].cmp_at(at_begin.index, &begin) == Ordering::Equal;
        let (start, version_before_begin) = if begin_exists {
            (at_begin, self.version_before(at_begin))
        } else {
            let after = Position { chunk: at_begin.chunk, index: at_begin.index + 1 };
            (after, Some(self.version_at(at_begin)))
        };
        let stop = Position { chunk: at_end.chunk, index: at_end.index + 1 };
        let both = [NewBoundary { probe: begin, version }, NewBoundary { probe: end, version: version_at_end }];
        // Skip boundaries that would repeat their predecessor's version: adjacent writes of one
        // call then share a single boundary.
        let inserted = match (version_before_begin != Some(version), version_at_end != version) {
            (true, true) => &both[..],
            (true, false) => &both[..1],
            (false, true) => &both[1..],
            (false, false) => &[],
        };
        self.replace(start, stop, inserted);
    }

    /// Replaces the boundaries in `[start, stop)` by `inserted` (at most two), then restores the
    /// chunk invariants (no empty chunk, none over capacity, exact max versions, first heads).
    fn replace(&mut self, start: Position, stop: Position, inserted: &[NewBoundary<'_>]) {
        let chunk = &mut self.chunks[start.chunk];
        if start.chunk == stop.chunk {
            let old_max_version = chunk.max_version;
            chunk.splice(start.index, stop.index, inserted);
            // A write's new version is the largest of all, so the usual case needs no scan.
            match inserted.iter().map(|boundary| boundary.version).max() {
                Some(version) if version >= old_max_version => chunk.max_version = version,
                _ => chunk.recompute_max_version(),
            }
        } else {
            chunk.truncate(start.index);
            for boundary in inserted {
                chunk.push(&boundary.probe, boundary.version);
            }
            self.chunks[stop.chunk].drain_front(stop.index);
            self.chunks[stop.chunk].recompute_max_version();
            self.refresh_or_remove(stop.chunk);
            self.chunks.drain(start.chunk + 1..stop.chunk);
            self.first_heads.drain(start.chunk + 1..stop.chunk);
            self.refresh_samples_from(start.chunk + 1);
            self.chunks[start.chunk].recompute_max_version();
        }
        self.refresh_or_remove(start.chunk);
        if (self.chunks.get(start.chunk)).is_some_and(|chunk| chunk.len() > Self::SPLIT_ABOVE) {
            self.split(start.chunk);
        }
    }

    /// Removes chunk `chunk` if it became empty, else refreshes its first head.
    fn refresh_or_remove(&mut self, chunk: usize) {
        if self.chunks[chunk].len() == 0 {
            self.chunks.remove(chunk);
            self.first_heads.remove(chunk);
            self.refresh_samples_from(chunk);
            return;
        }
        let head = self.chunks[chunk].head(0);
        self.first_heads[chunk] = head;
        if chunk.is_multiple_of(SAMPLE_STRIDE) {
            self.samples.set(chunk / SAMPLE_STRIDE, head);
        }
    }

    /// Refreshes the samples after chunks from `first_changed` on were inserted or removed:
    /// only the samples from there on moved, unless their number changed.
    fn refresh_samples_from(&mut self, first_changed: usize) {
        let firsts = &self.first_heads[..self.chunks.len()];
        let count = firsts.len().div_ceil(SAMPLE_STRIDE);
        if count != self.samples.len() {
            self.samples.rebuild(firsts.iter().copied().step_by(SAMPLE_STRIDE));
            return;
        }
        for rank in first_changed / SAMPLE_STRIDE..count {
            self.samples.set(rank, firsts[rank * SAMPLE_STRIDE]);
        }
    }

    fn split(&mut self, chunk: usize) {
        let half = self.chunks[chunk].len() / 2;
        let upper = self.chunks[chunk].split_off(half);
        self.first_heads.insert(chunk + 1, upper.head(0));
        self.chunks.insert(chunk + 1, upper);
        self.refresh_samples_from(chunk + 1);
    }

    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Forgets history at or before `oldest_version` in chunk `chunk`: such versions become 0 and
    /// boundaries that repeat their predecessor's version are dropped. Merges the chunk with its
    /// successor when both are small. Returns the number of boundaries examined.
    pub(super) fn collect_garbage(&mut self, chunk: usize, oldest_version: u64) -> usize {
        let previous = chunk.checked_sub(1).map(|before| {
            let before = &self.chunks[before];
            effective_version(before.version(before.len - 1), oldest_version)
        });
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
        self.refresh_samples_from(chunk + 1);
    }

    pub(super) fn boundary_count(&self) -> usize {
        self.chunks.iter().map(|chunk| chunk.len()).sum()
    }

    pub(super) fn memory_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(|chunk| chunk.memory_bytes()).sum();
        let top_level = self.chunks.capacity() * size_of::<Box<Chunk<CAP>>>()
            + self.first_heads.capacity() * size_of::<u128>()
            + self.samples.memory_bytes();
        chunks + top_level
    }

    /// Every boundary as `(key, version)`, in order (tests only).
    #[cfg(test)]
    pub(super) fn entries(&self) -> Vec<(Vec<u8>, u64)> {
        let mut entries = Vec::new();
        for chunk in &self.chunks {
            for index in 0..chunk.len() {
                entries.push((chunk.key(index), chunk.version(index)));
            }
        }
        entries
    }

    /// Panics if a structural invariant is broken (tests only).
    #[cfg(test)]
    pub(super) fn assert_invariants(&self) {
        assert_eq!(self.chunks.len() + SAMPLE_STRIDE, self.first_heads.len());
        assert!(self.first_heads[self.chunks.len()..].iter().all(|&head| head == u128::MAX));
        let firsts = &self.first_heads[..self.chunks.len()];
        self.samples.assert_matches(&firsts.iter().step_by(SAMPLE_STRIDE).copied().collect::<Vec<_>>());
        let entries = self.entries();
        assert!(entries.first().is_some_and(|(key, _)| key.is_empty()));
        for pair in entries.windows(2) {
            assert!(pair[0].0 < pair[1].0, "keys out of order: {pair:?}");
        }
        for (chunk, first_head) in self.chunks.iter().zip(&self.first_heads) {
            assert!(chunk.len() > 0 && chunk.len() <= Self::SPLIT_ABOVE);
            assert!(chunk.slots[chunk.len..].iter().all(|slot| *slot == EMPTY_SLOT));
            assert!(chunk.key_lens[chunk.len..].iter().all(|&len| len == 0));
            assert!(chunk.tail_words[chunk.len..].iter().all(|&word| word == 0));
            if let Some(tails) = &chunk.tails {
                assert!(tails[chunk.len..].iter().all(|tail| tail.is_empty()));
            }
            assert_eq!(chunk.head(0), *first_head);
            assert_eq!(Some(chunk.max_version), chunk.versions().max());
            for index in 0..chunk.len() {
                let key = chunk.key(index);
                assert_eq!(super::key::head_of(&key), chunk.head(index));
                assert_eq!(super::key::tail_word_of(&key), chunk.tail_words[index]);
                assert_eq!(key.len() > super::key::INLINE_BYTES, !chunk.tail(index).is_empty());
                assert_eq!(key.len(), chunk.key_lens[index] as usize);
            }
        }
    }
}
