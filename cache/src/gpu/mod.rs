//! The VRAM tier (`cuda` feature): the hottest rows of a table in GPU memory, found through a
//! device-side hash index and copied by a gather kernel, refreshed in the background without
//! blocking lookups. Built on cudarc with dynamic loading, so every build compiles without a
//! CUDA toolkit; [`probe`] tells whether a GPU can be used here before anything touches it.

mod device_buffer;
mod hot_counter;
mod hot_index;
mod ipc;
mod kernels;
mod recorder;
mod tier;

/// cudarc's context, and the trait that gives a device slice's address (for callers that pass
/// their own device buffers to [`GpuTier::gather_to_device`], such as tests).
pub use cudarc::driver::{CudaContext, DevicePtr};
pub use device_buffer::DeviceBuffer;
pub use hot_counter::HotCounter;
pub use hot_index::{EMPTY_KEY, HotIndex, buckets_for};
pub use ipc::IpcMemory;
pub use kernels::{KERNELS, Kernels};
pub use tier::{
    GpuStats, GpuTier, GpuTierConfig, RefreshPlan, RefreshUnderway, SHARED_GRACE, SHARED_PARTS,
    SHARED_RETIRE, SharedGpuTier, SharedPart,
};

/// Why the GPU cannot be used, or a CUDA call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No CUDA driver library on this machine.
    #[error("no GPU: libcuda could not be loaded on this machine")]
    NoDriver,
    /// A CUDA driver call failed.
    #[error("{what}: {message}")]
    Cuda {
        /// What was being done.
        what: &'static str,
        /// The driver's error.
        message: String,
    },
    /// NVRTC could not compile the kernels.
    #[error("compile the gather kernels: {0}")]
    Compile(String),
    /// The budget cannot hold anything useful.
    #[error("{0}")]
    Budget(String),
    /// A bad argument.
    #[error("{0}")]
    Invalid(String),
}

impl GpuError {
    pub(crate) fn cuda(what: &'static str, e: impl std::fmt::Debug) -> Self {
        GpuError::Cuda {
            what,
            message: format!("{e:?}"),
        }
    }
}

/// The GPU `device` can be used: the driver loads and the device opens. Never panics.
pub fn probe(device: usize) -> Result<std::sync::Arc<cudarc::driver::CudaContext>, GpuError> {
    // SAFETY: only checks whether the driver library can be loaded.
    let present = unsafe { cudarc::driver::sys::is_culib_present() };
    if !present {
        return Err(GpuError::NoDriver);
    }
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| GpuError::cuda("count CUDA devices", e))?;
    if device >= count.max(0) as usize {
        return Err(GpuError::Invalid(format!(
            "GPU device {device} does not exist: this machine has {count}"
        )));
    }
    cudarc::driver::CudaContext::new(device).map_err(|e| GpuError::cuda("open the CUDA device", e))
}
