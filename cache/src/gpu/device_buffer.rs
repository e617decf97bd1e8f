//! Device memory the VRAM tier can hand to another process: allocated with `cuMemAlloc`
//! (cudarc's stream-ordered pool memory cannot be exported), freed on drop, and exported as a
//! 64-byte CUDA IPC handle (`cuIpcGetMemHandle`) that a worker on the same GPU opens
//! (`cuIpcOpenMemHandle`) to read the tier's rows and index itself.

use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};

use super::GpuError;

/// Bytes of a `CUipcMemHandle`.
pub const IPC_HANDLE_BYTES: usize = 64;

/// One `cuMemAlloc` allocation of a context.
#[derive(Debug)]
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: sys::CUdeviceptr,
    bytes: usize,
}

// SAFETY: a device address and the context it belongs to; CUDA driver calls are thread-safe and
// the address is never changed after allocation.
unsafe impl Send for DeviceBuffer {}
// SAFETY: as above.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// `bytes` of device memory (at least 1), zeroed.
    pub fn zeroed(ctx: &Arc<CudaContext>, bytes: usize) -> Result<Self, GpuError> {
        Self::filled(ctx, bytes, 0)
    }

    /// `bytes` of device memory (at least 1), every byte `value`.
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
        };
        // SAFETY: the allocation just made, `bytes` long.
        unsafe { cudarc::driver::result::memset_d8_sync(ptr, value, bytes) }
            .map_err(|e| GpuError::cuda("clear device memory", e))?;
        Ok(buffer)
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

    /// The CUDA IPC handle of the allocation, for a process on the same device.
    pub fn ipc_handle(&self) -> Result<[u8; IPC_HANDLE_BYTES], GpuError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        let mut handle = sys::CUipcMemHandle_st {
            reserved: [0; IPC_HANDLE_BYTES],
        };
        // SAFETY: `handle` is a valid out-pointer; `ptr` is the base of a cuMemAlloc allocation.
        let rc = unsafe { sys::cuIpcGetMemHandle(&mut handle, self.ptr) };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(GpuError::cuda("export a CUDA IPC handle", rc));
        }
        let mut out = [0u8; IPC_HANDLE_BYTES];
        for (d, s) in out.iter_mut().zip(handle.reserved) {
            *d = s as u8;
        }
        Ok(out)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: allocated by malloc_sync in this context and freed only here.
            let _ = unsafe { cudarc::driver::result::free_sync(self.ptr) };
        }
    }
}
