//! Transparent huge pages for the large, randomly read arrays of the RAM tier (row arenas, slot
//! indexes, frequency sketches).
//!
//! A lookup touches a few random cache lines of each array; with 4 KiB pages nearly every one
//! also misses the TLB, and the page walk costs as much as the load. Where the kernel's THP mode
//! is `madvise` (a common default) memory is only backed by 2 MiB pages when asked, so we ask.
//! The advice is a hint: it changes no contents, errors are ignored, and elsewhere it does nothing.

/// Bytes of a transparent huge page on x86_64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole huge pages inside `memory` with huge pages.
pub(crate) fn advise<T>(memory: &[T]) {
    let start = memory.as_ptr() as usize;
    let end = start + std::mem::size_of_val(memory);
    let first = start.next_multiple_of(HUGE_PAGE);
    let last = end / HUGE_PAGE * HUGE_PAGE;
    if last <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: the range lies inside `memory`, which this process owns for the call, and
    // MADV_HUGEPAGE only changes how the kernel backs those pages, never their contents.
    unsafe {
        libc::madvise(
            memory
                .as_ptr()
                .cast::<u8>()
                .wrapping_add(first - start)
                .cast_mut()
                .cast(),
            last - first,
            libc::MADV_HUGEPAGE,
        );
    }
}
