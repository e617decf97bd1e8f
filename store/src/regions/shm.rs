//! Host shared-memory regions: a file under /dev/shm that the client created, mapped shared and
//! writable by the server for as long as the region is registered.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{RegionError, ShmProblem};

/// Where shared-memory files must live.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// A mapped /dev/shm file.
#[derive(Debug)]
pub struct ShmRegion {
    ptr: *mut u8,
    size: u64,
    path: PathBuf,
}

// SAFETY: the mapping is owned by this value and unmapped once, on drop; the pointer is only
// turned into slices through `slice_mut`, whose callers guarantee exclusive ranges.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; &ShmRegion exposes no access to the bytes without the caller's guarantee.
unsafe impl Sync for ShmRegion {}

impl ShmRegion {
    /// Maps `size` bytes of `path`, which must be a regular file under /dev/shm at least that big.
    pub fn open(path: &Path, size: u64) -> Result<Self, RegionError> {
        let bad = |problem: ShmProblem| RegionError::Shm {
            path: path.display().to_string(),
            problem,
        };
        let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
        let canonical = std::fs::canonicalize(path).map_err(|e| bad(ShmProblem::Open(errno(e))))?;
        if !canonical.starts_with(SHM_DIR) {
            return Err(bad(ShmProblem::NotUnderShm));
        }
        if size == 0 {
            return Err(RegionError::Empty);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&canonical)
            .map_err(|e| bad(ShmProblem::Open(errno(e))))?;
        let meta = file
            .metadata()
            .map_err(|e| bad(ShmProblem::Open(errno(e))))?;
        if !meta.is_file() {
            return Err(bad(ShmProblem::NotRegularFile));
        }
        if meta.len() < size {
            return Err(bad(ShmProblem::TooSmall {
                len: meta.len(),
                size,
            }));
        }
        let len = usize::try_from(size).map_err(|_| bad(ShmProblem::TooLarge(size)))?;
        // SAFETY: a fresh shared mapping of an open file; the kernel picks the address, and the
        // file's length covers `len` bytes (checked above).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(bad(ShmProblem::Map(errno(std::io::Error::last_os_error()))));
        }
        Ok(Self {
            ptr: ptr.cast(),
            size,
            path: canonical,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file mapped.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Start of the mapping; valid for `size` bytes while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/size are the mapping made in `open`, unmapped exactly once here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}
