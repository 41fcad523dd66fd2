//! Key encoding for the boundary map: a 16-byte big-endian head compared as one `u128`, plus the rest.
//!
//! Lexicographic byte order is preserved: two keys compare by head first (the first 16 bytes,
//! zero-padded), then by the bytes after the head, then by length. The length tie-break is what
//! keeps `"a"` before `"a\x00"`, whose padded heads are equal.

/// Number of leading key bytes packed into the comparison head.
pub(super) const HEAD_BYTES: usize = 16;

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

/// A borrowed key prepared for comparisons (the head is computed once per search, not per step).
#[derive(Clone, Copy, Debug)]
pub(super) struct Probe<'a> {
    pub(super) head: u128,
    pub(super) rest: &'a [u8],
    pub(super) len: usize,
}

impl<'a> Probe<'a> {
    #[inline]
    pub(super) fn new(key: &'a [u8]) -> Self {
        Probe { head: head_of(key), rest: &key[key.len().min(HEAD_BYTES)..], len: key.len() }
    }
}

impl Probe<'_> {
    /// Key order, cheap when heads differ (the common case): `KeyRange::is_empty` compares
    /// slices, a library call per range.
    #[inline]
    pub(super) fn is_before(&self, other: &Probe<'_>) -> bool {
        let order =
            (self.head.cmp(&other.head)).then_with(|| self.rest.cmp(other.rest)).then_with(|| self.len.cmp(&other.len));
        order == std::cmp::Ordering::Less
    }
}
