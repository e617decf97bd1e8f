//! A free list of aligned read buffers, so that the NVMe tier does not allocate, zero and free a
//! buffer for every block it reads (at tens of thousands of reads a second, malloc's bookkeeping
//! and the zeroing showed up as a fifth of the server's CPU).
//!
//! A buffer taken from a pool goes back to it when its [`AlignedBuf`] is dropped, whoever holds
//! it last; the pool keeps at most a bounded number of free buffers per size and frees the rest.
//! Reused buffers hold the bytes of an earlier read until the kernel overwrites them; they are
//! always initialised memory.

use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::Arc;

use parking_lot::Mutex;

use super::AlignedBuf;

/// Free buffers kept per buffer size, by default.
pub const DEFAULT_FREE_BUFFERS: usize = 1024;

/// Recycles [`AlignedBuf`]s of the sizes an engine reads.
#[derive(Debug)]
pub struct BufferPool {
    free: Mutex<HashMap<Layout, Vec<FreeBuf>>>,
    max_free: usize,
}

/// A free allocation of the pool, owned by it.
#[derive(Debug)]
pub(crate) struct FreeBuf(pub(crate) NonNull<u8>);

// SAFETY: a FreeBuf uniquely owns its allocation (no other pointer to it exists while it is in
// the pool), so moving it to another thread is as safe as moving a Box<[u8]>.
unsafe impl Send for FreeBuf {}

impl BufferPool {
    /// A pool keeping at most `max_free` free buffers of each size.
    pub fn new(max_free: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(HashMap::new()),
            max_free,
        })
    }

    /// A buffer of `len` bytes aligned to `align`: a free one of that shape, else a new zeroed one.
    pub fn take(self: &Arc<Self>, len: usize, align: usize) -> AlignedBuf {
        let layout = AlignedBuf::layout(len, align);
        let reused = self.free.lock().get_mut(&layout).and_then(Vec::pop);
        match reused {
            // SAFETY: the pointer was allocated with exactly `layout` (buffers are filed under
            // their layout), its bytes are initialised, and the pool gave up ownership by popping.
            Some(free) => unsafe { AlignedBuf::from_pool(free.0, layout, Arc::clone(self)) },
            None => AlignedBuf::zeroed_in(layout, Some(Arc::clone(self))),
        }
    }

    /// Takes back a buffer's allocation; `false` if the pool is full (the caller frees it).
    pub(crate) fn give(&self, buf: FreeBuf, layout: Layout) -> bool {
        let mut free = self.free.lock();
        let list = free.entry(layout).or_default();
        if list.len() >= self.max_free {
            return false;
        }
        list.push(buf);
        true
    }

    /// Free buffers held now, of every size.
    pub fn free_buffers(&self) -> usize {
        self.free.lock().values().map(Vec::len).sum()
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        for (layout, list) in self.free.get_mut().drain() {
            for buf in list {
                // SAFETY: every free buffer was allocated with the layout it is filed under and
                // is owned by the pool alone.
                unsafe { std::alloc::dealloc(buf.0.as_ptr(), layout) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_are_reused_up_to_the_bound() {
        let pool = BufferPool::new(2);
        let mut a = pool.take(4096, 4096);
        a[0] = 9;
        let a_ptr = a.as_ptr();
        drop(a);
        assert_eq!(pool.free_buffers(), 1);
        let b = pool.take(4096, 4096);
        assert_eq!(b.as_ptr(), a_ptr, "the free buffer is reused");
        assert_eq!(b[0], 9, "a reused buffer keeps its old (initialised) bytes");
        assert_eq!(b.as_ptr() as usize % 4096, 0);
        // Another size is a separate list.
        let c = pool.take(8192, 4096);
        assert_eq!(c.len(), 8192);
        let more: Vec<AlignedBuf> = (0..4).map(|_| pool.take(4096, 4096)).collect();
        drop((b, c, more));
        assert_eq!(pool.free_buffers(), 2 + 1, "at most 2 per size are kept");
        // A buffer outliving its pool is freed normally.
        let late = pool.take(4096, 4096);
        drop(pool);
        drop(late);
    }
}
