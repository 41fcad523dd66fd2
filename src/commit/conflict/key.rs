//! Key encoding for the boundary map: a 16-byte big-endian head compared as one `u128`, the next
//! 8 bytes as one `u64` (the tail word), plus the rest.
//!
//! Lexicographic byte order is preserved: two keys compare by their first 24 bytes, zero-padded
//! (head, then tail word), then by the bytes after those, then by length. The length tie-break is
//! what keeps `"a"` before `"a\x00"`, whose padded heads are equal. Keys of up to 24 bytes, which
//! include the end `k\x00` of a point range on a 16-byte key, compare without touching memory
//! outside the chunk that holds them.

/// Number of leading key bytes packed into the comparison head.
pub(super) const HEAD_BYTES: usize = 16;

/// Number of key bytes after the head packed into the tail word.
pub(super) const TAIL_WORD_BYTES: usize = 8;

/// Number of leading key bytes compared as integers (head and tail word).
pub(super) const INLINE_BYTES: usize = HEAD_BYTES + TAIL_WORD_BYTES;

/// The first 16 bytes of `key`, zero-padded, as a big-endian integer.
#[inline]
pub(super) fn head_of(key: &[u8]) -> u128 {
    if let Some(head) = key.first_chunk::<HEAD_BYTES>() {
        return u128::from_be_bytes(*head);
    }
    let mut padded = [0u8; HEAD_BYTES];
    let head_len = key.len().min(HEAD_BYTES);
    padded[..head_len].copy_from_slice(&key[..head_len]);
    u128::from_be_bytes(padded)
}

/// Bytes 16 to 24 of `key`, zero-padded, as a big-endian integer (0 for a key of 16 bytes or
/// fewer).
#[inline]
pub(super) fn tail_word_of(key: &[u8]) -> u64 {
    let after_head = key.get(HEAD_BYTES..).unwrap_or_default();
    if let Some(word) = after_head.first_chunk::<TAIL_WORD_BYTES>() {
        return u64::from_be_bytes(*word);
    }
    let mut padded = [0u8; TAIL_WORD_BYTES];
    padded[..after_head.len()].copy_from_slice(after_head);
    u64::from_be_bytes(padded)
}

/// Orders two keys whose first 24 bytes, zero-padded, are equal, given their lengths and the
/// bytes after their 24th (`rest`, read only when both keys are longer than 24 bytes).
#[inline]
pub(super) fn cmp_past_inline(
    len: usize,
    rest: impl FnOnce() -> std::cmp::Ordering,
    other_len: usize,
) -> std::cmp::Ordering {
    // A key of 24 bytes or fewer has no rest, so it orders before a longer one, as by length.
    if len <= INLINE_BYTES || other_len <= INLINE_BYTES {
        return len.cmp(&other_len);
    }
    rest().then_with(|| len.cmp(&other_len))
}

/// A borrowed key prepared for comparisons (the head is computed once per search, not per step).
#[derive(Clone, Copy, Debug)]
pub(super) struct Probe<'a> {
    pub(super) head: u128,
    pub(super) tail_word: u64,
    /// The bytes after the first 24 (empty for shorter keys).
    pub(super) rest: &'a [u8],
    pub(super) len: usize,
}

impl<'a> Probe<'a> {
    #[inline]
    pub(super) fn new(key: &'a [u8]) -> Self {
        Probe {
            head: head_of(key),
            tail_word: tail_word_of(key),
            rest: key.get(INLINE_BYTES..).unwrap_or_default(),
            len: key.len(),
        }
    }
}

impl Probe<'_> {
    /// Key order, cheap when heads differ (the common case): `KeyRange::is_empty` compares
    /// slices, a library call per range.
    #[inline]
    pub(super) fn is_before(&self, other: &Probe<'_>) -> bool {
        let order = (self.head.cmp(&other.head))
            .then_with(|| self.tail_word.cmp(&other.tail_word))
            .then_with(|| cmp_past_inline(self.len, || self.rest.cmp(other.rest), other.len));
        order == std::cmp::Ordering::Less
    }
}
