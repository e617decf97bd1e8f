//! Heap buffers aligned for O_DIRECT: the one place the NVMe tier allocates raw memory.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ptr::NonNull;
use std::sync::Arc;

use super::buffer_pool::{BufferPool, FreeBuf};

/// A byte buffer whose address is a multiple of `align` (a power of two): zeroed when new, or
/// recycled through a [`BufferPool`] (then holding an earlier read's bytes), always initialised.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
    /// Where the allocation goes back when dropped (else it is freed).
    pool: Option<Arc<BufferPool>>,
}

// SAFETY: AlignedBuf uniquely owns its allocation (like Box<[u8]>); nothing is shared.
unsafe impl Send for AlignedBuf {}
// SAFETY: &AlignedBuf only gives out &[u8], which is Sync.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len` zeroed bytes aligned to `align`. `len` 0 gives a 1-byte allocation.
    ///
    /// Panics only if `align` is not a power of two (a programming error, never input-driven).
    pub fn zeroed(len: usize, align: usize) -> Self {
        Self::zeroed_in(Self::layout(len, align), None)
    }

    /// The allocation shape of a buffer of `len` bytes aligned to `align`.
    pub(crate) fn layout(len: usize, align: usize) -> Layout {
        Layout::from_size_align(len.max(1), align)
            .expect("alignment is a power of two and the size does not overflow")
    }

    /// A new zeroed allocation of `layout`, returned to `pool` (if any) when dropped.
    pub(crate) fn zeroed_in(layout: Layout, pool: Option<Arc<BufferPool>>) -> Self {
        // SAFETY: the layout has a non-zero size (see `layout`).
        let raw = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(layout)
        };
        Self { ptr, layout, pool }
    }

    /// Wraps a free allocation of `pool`.
    ///
    /// # Safety
    /// `ptr` must have been allocated with `layout`, hold initialised bytes, and be owned by
    /// nothing else.
    pub(crate) unsafe fn from_pool(
        ptr: NonNull<u8>,
        layout: Layout,
        pool: Arc<BufferPool>,
    ) -> Self {
        Self {
            ptr,
            layout,
            pool: Some(pool),
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// True for an empty buffer (never: the minimum size is one byte).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Raw pointer for the kernel to write into; valid while `self` lives.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() initialised (zeroed, then written) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take()
            && pool.give(FreeBuf(self.ptr), self.layout)
        {
            return; // the pool owns the allocation now
        }
        // SAFETY: ptr was allocated with exactly this layout and, not taken by a pool, is
        // freed once, here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.layout.size())
            .field("align", &self.layout.align())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_aligned_and_zeroed() {
        let mut b = AlignedBuf::zeroed(8192, 4096);
        assert_eq!(b.as_mut_ptr() as usize % 4096, 0);
        assert!(b.iter().all(|&x| x == 0));
        b[8191] = 7;
        assert_eq!(b[8191], 7);
    }
}
