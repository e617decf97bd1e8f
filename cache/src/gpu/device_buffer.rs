//! Device memory of the VRAM tier, freed on drop, in one of two kinds:
//! - plain: one `cuMemAlloc` allocation (cudarc's stream-ordered pool memory would reserve whole
//!   chunks beyond the budget), for what stays in this process (scratch);
//! - shareable: a `cuMemCreate` allocation (granularity-rounded, mapped into an address range of
//!   this process) that another process on the same GPU imports from a POSIX file descriptor
//!   ([`DeviceBuffer::export_fd`]) and maps itself: what a worker reads (the arena, indexes, tags).
//!
//! Shareable, not CUDA IPC handles (`cuIpcGetMemHandle`): on the H200 a gather of 6,144 random
//! rows from `cuMemAlloc` memory opened in another process with `cuIpcOpenMemHandle` took 172 us
//! against 9.4 us in the allocating process (BENCHMARKS.md 10o: the importer's mapping misses the
//! GPU's TLB on every row); an importer of a `cuMemCreate` allocation maps it at the
//! allocation's own page size.

use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};

use super::GpuError;

/// How a buffer's memory was allocated.
#[derive(Debug)]
enum Allocation {
    /// `cuMemAlloc`.
    Plain,
    /// `cuMemCreate`'s handle of `size` bytes, an address range of `size` bytes reserved at
    /// the buffer's address, the allocation mapped there once `mapped`.
    Shareable {
        handle: sys::CUmemGenericAllocationHandle,
        size: usize,
        mapped: bool,
    },
}

/// One allocation of a context.
#[derive(Debug)]
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    bytes: usize,
    allocation: Allocation,
}

// SAFETY: a device address and the context it belongs to; CUDA driver calls are thread-safe and
// the address is never changed after allocation.
unsafe impl Send for DeviceBuffer {}
// SAFETY: as above.
unsafe impl Sync for DeviceBuffer {}

fn check(what: &'static str, rc: sys::CUresult) -> Result<(), GpuError> {
    if rc == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(GpuError::cuda(what, rc))
    }
}

/// Properties of a shareable allocation on `device`: device memory, exportable as a POSIX fd.
fn shareable_prop(device: i32) -> sys::CUmemAllocationProp {
    // SAFETY: a plain C struct of integers and a null pointer: all zeroes is a valid value.
    let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.requestedHandleTypes =
        sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    prop.location.type_ = sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = device;
    prop
}

impl DeviceBuffer {
    /// `bytes` of plain device memory (at least 1), zeroed.
    pub fn zeroed(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Self, GpuError> {
        Self::filled(ctx, bytes, 0)
    }

    /// `bytes` of plain device memory (at least 1), every byte `value`.
    pub fn filled(ctx: &Arc<CudaContext>, bytes: usize, value: u8) -> Result<Self, GpuError> {
        let bytes = bytes.max(1);
        ctx.bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        // SAFETY: a plain allocation of the bound context; freed once, on drop.
        let ptr = unsafe { cudarc::driver::result::malloc_sync(bytes) }
            .map_err(|e| GpuError::cuda("allocate device memory", e))?;
        let buffer = Self {
            ctx: ctx.clone(),
            ptr,
            bytes,
            allocation: Allocation::Plain,
        };
        buffer.fill(value)?;
        Ok(buffer)
    }

    /// The size (bytes) a shareable allocation on `ctx`'s device is a multiple of: the
    /// device's recommended granularity (2 MiB on the H200).
    pub fn shareable_granularity(ctx: &Arc<CudaContext>) -> Result<usize, GpuError> {
        ctx.bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        let prop = shareable_prop(ctx.cu_device());
        let mut granularity = 0usize;
        // SAFETY: valid out-pointer and property struct.
        check("query the allocation granularity", unsafe {
            sys::cuMemGetAllocationGranularity(
                &mut granularity,
                &prop,
                sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_RECOMMENDED,
            )
        })?;
        Ok(granularity.max(1))
    }

    /// `bytes` of shareable device memory (at least 1; the allocation is rounded up to
    /// [`DeviceBuffer::shareable_granularity`], [`DeviceBuffer::mapped_len`]), every byte
    /// `value`.
    pub fn shareable(ctx: &Arc<CudaContext>, bytes: usize, value: u8) -> Result<Self, GpuError> {
        let bytes = bytes.max(1);
        let granularity = Self::shareable_granularity(ctx)?;
        let prop = shareable_prop(ctx.cu_device());
        let mapped = bytes.div_ceil(granularity) * granularity;
        let mut handle: sys::CUmemGenericAllocationHandle = 0;
        // SAFETY: valid out-pointer and property struct; released on every path below.
        check("allocate shareable device memory", unsafe {
            sys::cuMemCreate(&mut handle, mapped, &prop, 0)
        })?;
        let mut ptr: sys::CUdeviceptr = 0;
        // SAFETY: reserves an address range of `mapped` bytes; freed on drop (or just below).
        let reserved = unsafe { sys::cuMemAddressReserve(&mut ptr, mapped, granularity, 0, 0) };
        if let Err(e) = check("reserve device addresses", reserved) {
            // SAFETY: the handle just created, not mapped.
            unsafe { sys::cuMemRelease(handle) };
            return Err(e);
        }
        // From here drop unmaps, frees the range and releases the handle.
        let mut buffer = Self {
            ctx: ctx.clone(),
            ptr,
            bytes,
            allocation: Allocation::Shareable {
                handle,
                size: mapped,
                mapped: false,
            },
        };
        // SAFETY: the range and the allocation are both `mapped` bytes.
        check("map shareable device memory", unsafe {
            sys::cuMemMap(ptr, mapped, 0, handle, 0)
        })?;
        if let Allocation::Shareable { mapped, .. } = &mut buffer.allocation {
            *mapped = true;
        }
        // SAFETY: a plain C struct of integers: all zeroes is a valid value.
        let mut access: sys::CUmemAccessDesc = unsafe { std::mem::zeroed() };
        access.location = prop.location;
        access.flags = sys::CUmemAccess_flags::CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
        // SAFETY: the range just mapped; one descriptor.
        check("allow access to shareable device memory", unsafe {
            sys::cuMemSetAccess(ptr, mapped, &access, 1)
        })?;
        buffer.fill(value)?;
        Ok(buffer)
    }

    fn fill(&self, value: u8) -> Result<(), GpuError> {
        // SAFETY: the allocation made by a constructor, at least `bytes` long.
        unsafe { cudarc::driver::result::memset_d8_sync(self.ptr, value, self.bytes) }
            .map_err(|e| GpuError::cuda("clear device memory", e))
    }

    /// Device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes
    }

    /// Never true: an allocation holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes an importer of [`DeviceBuffer::export_fd`] maps (the allocation, rounded up to
    /// the granularity); [`DeviceBuffer::len`] for a plain buffer.
    pub fn mapped_len(&self) -> usize {
        match self.allocation {
            Allocation::Plain => self.bytes,
            Allocation::Shareable { size, .. } => size,
        }
    }

    /// Copies `values` to byte `offset` of the buffer and waits for the copy.
    pub fn write<T: cudarc::driver::DeviceRepr>(
        &self,
        offset: usize,
        values: &[T],
    ) -> Result<(), GpuError> {
        let len = std::mem::size_of_val(values);
        if offset.checked_add(len).is_none_or(|end| end > self.bytes) {
            return Err(GpuError::Invalid(format!(
                "{len} bytes at offset {offset} overrun a device buffer of {}",
                self.bytes
            )));
        }
        self.ctx
            .bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        // SAFETY: the range was checked against the allocation above.
        unsafe { cudarc::driver::result::memcpy_htod_sync(self.ptr + offset as u64, values) }
            .map_err(|e| GpuError::cuda("copy to a device buffer", e))
    }

    /// A new file descriptor naming a shareable buffer's allocation, which a process on the
    /// same GPU imports (`cuMemImportFromShareableHandle`) and maps ([`DeviceBuffer::mapped_len`]
    /// bytes). Invalid for a plain buffer.
    pub fn export_fd(&self) -> Result<OwnedFd, GpuError> {
        let Allocation::Shareable { handle, .. } = self.allocation else {
            return Err(GpuError::Invalid(
                "only a shareable device buffer exports a file descriptor".into(),
            ));
        };
        self.ctx
            .bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        let mut fd: libc::c_int = -1;
        // SAFETY: for a POSIX fd handle type the out-pointer is an int.
        check("export shareable device memory", unsafe {
            sys::cuMemExportToShareableHandle(
                (&mut fd as *mut libc::c_int).cast(),
                handle,
                sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR,
                0,
            )
        })?;
        if fd < 0 {
            return Err(GpuError::Invalid(format!(
                "exporting device memory gave file descriptor {fd}"
            )));
        }
        // SAFETY: the driver just opened `fd` for us; nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() {
            return;
        }
        match self.allocation {
            Allocation::Plain => {
                // SAFETY: allocated by malloc_sync in this context and freed only here.
                let _ = unsafe { cudarc::driver::result::free_sync(self.ptr) };
            }
            Allocation::Shareable {
                handle,
                size,
                mapped,
            } => {
                // SAFETY: the mapping, range and handle this buffer made, each undone once.
                unsafe {
                    if mapped {
                        sys::cuMemUnmap(self.ptr, size);
                    }
                    sys::cuMemAddressFree(self.ptr, size);
                    sys::cuMemRelease(handle);
                }
            }
        }
    }
}
