//! The one `unsafe` of the conflict set: the x86-64 prefetch instruction.
//!
//! `unsafe` is allowed here only because `_mm_prefetch` takes a raw pointer; a prefetch is a
//! hint that never faults and never reads into the program, whatever the address.
#![allow(unsafe_code)]

/// Asks the CPU to start loading every cache line of `value` into L1.
#[inline]
pub(super) fn prefetch_bytes<T: ?Sized>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        const CACHE_LINE_BYTES: usize = 64;
        let start = (value as *const T).cast::<i8>();
        // A plain counted loop (not `step_by`): for a sized `T` the compiler unrolls it.
        for line in 0..size_of_val(value).div_ceil(CACHE_LINE_BYTES) {
            // SAFETY: `start + line * 64` stays inside `value` (less than its size), and
            // prefetching is defined for any address: it neither faults nor changes memory.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.add(line * CACHE_LINE_BYTES)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
