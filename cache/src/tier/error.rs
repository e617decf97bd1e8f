//! Why a tier could not serve rows: typed, with the data file and block named (never a host
//! path), and a [`TierError::is_transient`] that decides UNAVAILABLE against INTERNAL upstream.

use crate::io::ReadFailure;

/// Why a tier could not serve rows.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// A block whose bytes do not match its checksum.
    #[error(
        "data file {file}, block {block}: checksum mismatch; the block is corrupt and is not served"
    )]
    Corrupt {
        /// Data file index.
        file: u32,
        /// Block within the data file (0 = first data block).
        block: u64,
    },
    /// A read failed.
    #[error("read of data file {file}, block {block} failed: {cause}")]
    Read {
        /// Data file index.
        file: u32,
        /// First block of the read.
        block: u64,
        /// Why.
        cause: ReadFailure,
    },
    /// The VRAM tier failed.
    #[cfg(feature = "cuda")]
    #[error("VRAM tier: {0}")]
    Gpu(std::sync::Arc<crate::gpu::GpuError>),
    /// No tier of the cascade holds a row (a cascade without a backing tier).
    #[error("no tier holds row {row}")]
    NotHeld {
        /// The row.
        row: u64,
    },
    /// A task serving part of the rows ended without an answer.
    #[error("a task serving rows {0}")]
    TaskFailed(TaskEnd),
}

/// How a task ended without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TaskEnd {
    /// It panicked.
    #[error("panicked")]
    Panicked,
    /// The runtime cancelled it (shutting down).
    #[error("was cancelled")]
    Cancelled,
}

impl TierError {
    /// True when retrying may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            TierError::Read { cause, .. } => cause.is_transient(),
            TierError::TaskFailed(TaskEnd::Cancelled) => true,
            _ => false,
        }
    }
}

#[cfg(feature = "cuda")]
impl From<crate::gpu::GpuError> for TierError {
    fn from(e: crate::gpu::GpuError) -> Self {
        TierError::Gpu(std::sync::Arc::new(e))
    }
}

impl From<tokio::task::JoinError> for TierError {
    fn from(e: tokio::task::JoinError) -> Self {
        TierError::TaskFailed(if e.is_panic() {
            TaskEnd::Panicked
        } else {
            TaskEnd::Cancelled
        })
    }
}
