//! Why a region could not be registered or written: typed, naming the region and the bytes.

/// Why a region could not be registered or used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegionError {
    /// No region of that id is registered.
    #[error("no region {id} is registered")]
    Unknown {
        /// The id given.
        id: u64,
    },
    /// The token does not match the region's.
    #[error("wrong token for region {id}")]
    WrongToken {
        /// The region.
        id: u64,
    },
    /// A write would go past the end of the region.
    #[error("rows would be written at bytes {start}..{end} of region {id}, which has {size} bytes")]
    OutOfBounds {
        /// The region.
        id: u64,
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
        /// The region's size.
        size: u64,
    },
    /// `offset + len` does not fit a u64.
    #[error("offset {offset} plus {len} bytes of rows overflows")]
    Overflow {
        /// The offset given.
        offset: u64,
        /// Bytes of rows.
        len: u64,
    },
    /// Another write to overlapping bytes is in flight.
    #[error(
        "bytes {start}..{end} of region {id} overlap bytes {busy_start}..{busy_end} that another LookupInto is writing"
    )]
    Busy {
        /// The region.
        id: u64,
        /// First byte asked for.
        start: u64,
        /// One past the last byte asked for.
        end: u64,
        /// First byte being written.
        busy_start: u64,
        /// One past the last byte being written.
        busy_end: u64,
    },
    /// A shared-memory region named by a path: refused (a path would be opened on the
    /// client's behalf, with the server's rights).
    #[error(
        "shared-memory regions by path are not accepted: hand the server a sealed memfd over its \
         local socket (the clients' shm_region does)"
    )]
    PathRefused,
    /// A memfd handed over cannot be used.
    #[error("shared memory region: the file descriptor {problem}")]
    Memfd {
        /// What is wrong.
        problem: ShmProblem,
    },
    /// Too many regions: per connection, or in all.
    #[error("too many regions {scope}: the limit is {limit}; close some first")]
    TooMany {
        /// "on this connection" or "on the server".
        scope: &'static str,
        /// The limit.
        limit: usize,
    },
    /// A region of size 0.
    #[error("a region of size 0 cannot hold rows")]
    Empty,
    /// CUDA IPC regions need a GPU tier.
    #[error(
        "CUDA IPC regions need a server built with --features cuda and started with --gpu-budget"
    )]
    NoGpu,
    /// The buffer is on a device without a VRAM tier.
    #[error(
        "the buffer is on GPU {buffer}, which this server does not serve: its VRAM tiers are on \
         GPU {served} (serve --gpu-device)"
    )]
    WrongDevice {
        /// The buffer's device.
        buffer: u32,
        /// The devices served, as `--gpu-device` takes them (`0,1`).
        served: String,
    },
    /// The CUDA IPC handle could not be opened.
    #[cfg(feature = "cuda")]
    #[error("CUDA IPC handle: {0}")]
    Ipc(std::sync::Arc<engram_store_cache::gpu::GpuError>),
}

/// What is wrong with a shared-memory region.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShmProblem {
    /// It cannot carry seals (not a memfd made with MFD_ALLOW_SEALING).
    #[error("cannot carry seals ({}): make it with memfd_create(MFD_ALLOW_SEALING)", std::io::Error::from_raw_os_error(*.0))]
    NotSealable(i32),
    /// It is not sealed against shrinking and growing.
    #[error("is not sealed with F_SEAL_SHRINK | F_SEAL_GROW")]
    NotSealed,
    /// It cannot be examined.
    #[error("cannot be examined ({})", std::io::Error::from_raw_os_error(*.0))]
    Open(i32),
    /// Not a regular file.
    #[error("not a regular file")]
    NotRegularFile,
    /// Smaller than the size registered.
    #[error("holds {len} bytes, fewer than the {size} registered")]
    TooSmall {
        /// The file's length.
        len: u64,
        /// The size asked for.
        size: u64,
    },
    /// The size does not fit this machine's address space.
    #[error("size {0} is too large to map")]
    TooLarge(u64),
    /// mmap failed.
    #[error("cannot be mapped ({})", std::io::Error::from_raw_os_error(*.0))]
    Map(i32),
}
