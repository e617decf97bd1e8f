//! A global allocator that counts live heap bytes per allocating thread, on top of the system
//! allocator. The policy simulator builds and runs each policy on one thread and reads that
//! thread's count, which measures the policy's real footprint, including libraries such as moka
//! that cannot account for themselves.
//!
//! Bytes are charged to the thread that allocated them even when another thread frees them:
//! moka's concurrent hash table frees memory through epoch-based reclamation, on whichever thread
//! happens to collect, so counting frees per freeing thread would mix up concurrent simulations.
//! Each allocation therefore carries a small header naming its owner (the bytes reported are the
//! sizes callers asked for; headers are not counted).
//!
//! A binary opts in with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`; without
//! that, [`thread_live_bytes`] stays 0.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// Owner slots; after this many threads, slots are reused (the simulator starts one thread per
/// simulation, so a run of more simulations than this could see stale counts).
const OWNERS: usize = 4096;
/// Header bytes before each allocation (at least this, more for larger alignments).
const HEADER: usize = 16;

static LIVE: [AtomicI64; OWNERS] = [const { AtomicI64::new(0) }; OWNERS];
static NEXT_OWNER: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    static OWNER: Cell<usize> = const { Cell::new(0) };
}

/// This thread's owner slot (slot 0 when thread-locals are unavailable, as during teardown).
fn owner() -> usize {
    OWNER
        .try_with(|o| {
            if o.get() == 0 {
                o.set(NEXT_OWNER.fetch_add(1, Ordering::Relaxed) % (OWNERS - 1) + 1);
            }
            o.get()
        })
        .unwrap_or(0)
}

/// The header size and the layout actually requested from the system for `layout`.
fn padded(layout: Layout) -> Option<(usize, Layout)> {
    let header = HEADER.max(layout.align());
    let size = layout.size().checked_add(header)?;
    let padded = Layout::from_size_align(size, layout.align().max(HEADER)).ok()?;
    Some((header, padded))
}

/// The system allocator, counting live bytes per allocating thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

impl CountingAlloc {
    /// Writes the owner header before the user pointer and charges the owner.
    ///
    /// # Safety
    /// `base` is null or a fresh allocation of `padded(layout)`, whose header is `header` bytes.
    unsafe fn finish(base: *mut u8, header: usize, layout: Layout) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        let owner = owner();
        LIVE[owner].fetch_add(layout.size() as i64, Ordering::Relaxed);
        // SAFETY: `header >= 16` bytes lie before the user pointer inside the allocation, and
        // the user pointer is aligned to at least 16, so the `usize` just below it is aligned and
        // in bounds.
        unsafe {
            let user = base.add(header);
            user.cast::<usize>().sub(1).write(owner);
            user
        }
    }
}

// SAFETY: every allocation is forwarded to `System` with a layout padded by a header that this
// allocator alone reads and writes; the pointer handed out is aligned as asked (the header is a
// multiple of the alignment) and has `layout.size()` usable bytes. `dealloc` recomputes the same
// padded layout from the caller's layout, as `GlobalAlloc` requires callers to pass it back.
// Bookkeeping uses atomics and a const-initialized thread-local without a destructor, neither of
// which allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some((header, padded)) = padded(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `padded` has a non-zero size (it includes the header).
        unsafe { Self::finish(System.alloc(padded), header, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some((header, padded)) = padded(layout) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `padded` has a non-zero size (it includes the header).
        unsafe { Self::finish(System.alloc_zeroed(padded), header, layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((header, padded)) = padded(layout) else {
            return;
        };
        // SAFETY: `ptr` came from `alloc` with this `layout`, so the owner header sits just below
        // it and the system allocation starts `header` bytes before it, with layout `padded`.
        unsafe {
            let owner = ptr.cast::<usize>().sub(1).read();
            LIVE[owner % OWNERS].fetch_sub(layout.size() as i64, Ordering::Relaxed);
            System.dealloc(ptr.sub(header), padded);
        }
    }
}

/// Heap bytes this thread allocated that are still live (0 unless [`CountingAlloc`] is the
/// global allocator).
pub fn thread_live_bytes() -> i64 {
    LIVE[owner()].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_a_thread_holds_wherever_it_is_freed() {
        let before = thread_live_bytes();
        let v: Vec<u64> = Vec::with_capacity(1000);
        assert_eq!(thread_live_bytes() - before, 8000);
        let w: Vec<u8> = Vec::with_capacity(24);
        std::thread::spawn(move || drop(w))
            .join()
            .expect("dropping thread");
        assert_eq!(thread_live_bytes() - before, 8000);
        drop(v);
        assert_eq!(thread_live_bytes(), before);
    }

    #[test]
    fn honours_large_alignments() {
        #[repr(align(256))]
        struct Big([u8; 256]);
        let b = Box::new(Big([7; 256]));
        assert_eq!((&*b as *const Big as usize) % 256, 0);
        assert_eq!(b.0[255], 7);
    }
}
