//! Software prefetch hints: ask the CPU to start loading a cache line that a later step of a
//! batch will read, so that the misses of many independent lookups overlap instead of queueing.
//!
//! A hint never faults and never changes what a program computes, so any address is allowed; on
//! targets without a prefetch instruction the functions do nothing.

/// Bytes in a cache line on the CPUs we serve from.
pub(crate) const CACHE_LINE: usize = 64;

/// Hints that the cache line holding `ptr` will be read soon.
#[inline(always)]
pub(crate) fn prefetch_read<T>(ptr: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: a prefetch is a hint; it cannot fault or read memory architecturally, whatever
        // the address (SSE is part of the x86_64 baseline).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ptr;
    }
}

/// Hints that the `len` bytes from `ptr` will be read soon (one hint per cache line).
#[inline(always)]
pub(crate) fn prefetch_range(ptr: *const u8, len: usize) {
    let lead = ptr as usize % CACHE_LINE;
    let mut offset = 0;
    while offset < lead + len {
        prefetch_read(ptr.wrapping_sub(lead).wrapping_add(offset));
        offset += CACHE_LINE;
    }
}
