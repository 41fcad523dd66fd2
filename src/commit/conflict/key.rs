//! Key encoding for the boundary map: a 16-byte big-endian head compared as one `u128`, plus the rest.
//!
//! Lexicographic byte order is preserved: two keys compare by head first (the first 16 bytes,
//! zero-padded), then by the bytes after the head, then by length. The length tie-break is what
//! keeps `"a"` before `"a\x00"`, whose padded heads are equal.

use std::cmp::Ordering;

/// Number of leading key bytes packed into the comparison head.
pub(super) const HEAD_BYTES: usize = 16;

/// The first 16 bytes of `key`, zero-padded, as a big-endian integer.
pub(super) fn head_of(key: &[u8]) -> u128 {
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
    pub(super) fn new(key: &'a [u8]) -> Self {
        Probe {
            head: head_of(key),
            rest: &key[key.len().min(HEAD_BYTES)..],
            len: key.len(),
        }
    }
}

/// What a stored key keeps beyond its head: the bytes after the head and the total length.
///
/// Keys of at most 16 bytes (the common case) keep an empty `bytes`, which does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct KeyRest {
    pub(super) bytes: Box<[u8]>,
    pub(super) len: usize,
}

impl KeyRest {
    pub(super) fn of(probe: &Probe<'_>) -> Self {
        KeyRest {
            bytes: probe.rest.into(),
            len: probe.len,
        }
    }

    /// Orders a stored key (`head`, `self`) against a probe.
    #[inline]
    pub(super) fn cmp_with(&self, head: u128, probe: &Probe<'_>) -> Ordering {
        head.cmp(&probe.head)
            .then_with(|| self.bytes[..].cmp(probe.rest))
            .then_with(|| self.len.cmp(&probe.len))
    }

    /// Heap bytes owned beyond the struct itself.
    pub(super) fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Rebuilds the full key bytes (used by tests and invariant checks only).
#[cfg(test)]
pub(super) fn full_key(head: u128, rest: &KeyRest) -> Vec<u8> {
    let head_len = rest.len.min(HEAD_BYTES);
    let mut key = head.to_be_bytes()[..head_len].to_vec();
    key.extend_from_slice(&rest.bytes);
    key
}
