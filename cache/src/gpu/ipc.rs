//! Device memory of another process on the same GPU, opened from its CUDA IPC handle
//! (`cudaIpcGetMemHandle`), for delivering rows straight into a worker's tensor.

use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};

use super::GpuError;

/// An opened IPC allocation; closed on drop.
#[derive(Debug)]
pub struct IpcMemory {
    ctx: Arc<CudaContext>,
    base: sys::CUdeviceptr,
}

// SAFETY: a device address and the context it belongs to; CUDA driver calls are thread-safe.
unsafe impl Send for IpcMemory {}
// SAFETY: as above; the value is never mutated after open.
unsafe impl Sync for IpcMemory {}

impl IpcMemory {
    /// Opens the allocation behind a 64-byte `cudaIpcMemHandle_t`.
    pub fn open(ctx: &Arc<CudaContext>, handle: &[u8]) -> Result<Self, GpuError> {
        let bytes: [u8; 64] = handle.try_into().map_err(|_| {
            GpuError::Invalid(format!(
                "a CUDA IPC handle is 64 bytes, got {}",
                handle.len()
            ))
        })?;
        let mut h = sys::CUipcMemHandle_st { reserved: [0; 64] };
        for (d, s) in h.reserved.iter_mut().zip(bytes) {
            *d = s as _;
        }
        ctx.bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))?;
        let mut base: sys::CUdeviceptr = 0;
        // SAFETY: `base` is a valid out-pointer and `h` a handle value; the driver validates it.
        let rc = unsafe {
            sys::cuIpcOpenMemHandle_v2(
                &mut base,
                h,
                sys::CUipcMem_flags::CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS as u32,
            )
        };
        if rc != sys::CUresult::CUDA_SUCCESS {
            return Err(GpuError::Invalid(format!("open CUDA IPC handle: {rc:?}")));
        }
        Ok(Self {
            ctx: ctx.clone(),
            base,
        })
    }

    /// Device address of the allocation's first byte.
    pub fn base(&self) -> u64 {
        self.base
    }
}

impl Drop for IpcMemory {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: `base` was opened by cuIpcOpenMemHandle and is closed exactly once.
        unsafe {
            sys::cuIpcCloseMemHandle(self.base);
        }
    }
}
