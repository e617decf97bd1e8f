//! Host shared memory a client hands over as a sealed memfd: the server maps exactly the file
//! descriptor it was given (no path is ever opened on a client's behalf) after checking that it
//! can neither shrink nor grow (`F_SEAL_SHRINK | F_SEAL_GROW`), so the mapping can never lose
//! its pages under the server: a write into it cannot raise SIGBUS.

use std::os::fd::{AsRawFd, OwnedFd};

use super::error::{RegionError, ShmProblem};

/// The seals a region's memfd must carry.
const REQUIRED_SEALS: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

/// A mapped, sealed memfd.
#[derive(Debug)]
pub struct ShmRegion {
    ptr: *mut u8,
    size: u64,
}

// SAFETY: the mapping is owned by this value and unmapped once, on drop; the pointer is only
// turned into slices by `WriteLease`, which guarantees exclusive, in-bounds ranges.
unsafe impl Send for ShmRegion {}
// SAFETY: as above; &ShmRegion exposes no access to the bytes by itself.
unsafe impl Sync for ShmRegion {}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

impl ShmRegion {
    /// Maps `size` bytes of `fd` (0: the whole file), which must be a sealed regular file of at
    /// least that size.
    pub fn from_memfd(fd: &OwnedFd, size: u64) -> Result<Self, RegionError> {
        let bad = |problem| RegionError::Memfd { problem };
        // SAFETY: fcntl on a descriptor we own; F_GET_SEALS takes no argument.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(bad(ShmProblem::NotSealable(errno())));
        }
        if seals & REQUIRED_SEALS != REQUIRED_SEALS {
            return Err(bad(ShmProblem::NotSealed));
        }
        // SAFETY: fstat writes into the zeroed struct we pass.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a descriptor we own and a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(bad(ShmProblem::Open(errno())));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(bad(ShmProblem::NotRegularFile));
        }
        let len = u64::try_from(st.st_size).unwrap_or(0);
        let size = if size == 0 { len } else { size };
        if size == 0 {
            return Err(RegionError::Empty);
        }
        if len < size {
            return Err(bad(ShmProblem::TooSmall { len, size }));
        }
        let map_len = usize::try_from(size).map_err(|_| bad(ShmProblem::TooLarge(size)))?;
        // SAFETY: a fresh shared mapping of a descriptor we own; the kernel picks the address,
        // and the (sealed) file's length covers `map_len` bytes, now and forever.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(bad(ShmProblem::Map(errno())));
        }
        Ok(Self {
            ptr: ptr.cast(),
            size,
        })
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Start of the mapping; valid for `size` bytes while `self` lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for ShmRegion {
    fn drop(&mut self) {
        // SAFETY: ptr/size are the mapping made in `from_memfd`, unmapped exactly once here.
        unsafe {
            libc::munmap(self.ptr.cast(), self.size as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::FromRawFd;

    use super::*;

    fn memfd(len: i64, seals: libc::c_int) -> OwnedFd {
        // SAFETY: memfd_create with a valid C string; we own the returned descriptor.
        let fd = unsafe { libc::memfd_create(c"t".as_ptr(), libc::MFD_ALLOW_SEALING) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscalls on a descriptor we own.
        unsafe {
            assert_eq!(libc::ftruncate(fd.as_raw_fd(), len), 0);
            if seals != 0 {
                assert_eq!(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals), 0);
            }
        }
        fd
    }

    #[test]
    fn only_sealed_memfds_of_the_right_size_map() {
        let sealed = memfd(8192, REQUIRED_SEALS);
        let r = ShmRegion::from_memfd(&sealed, 0).expect("whole file");
        assert_eq!(r.size(), 8192);
        assert!(ShmRegion::from_memfd(&sealed, 4096).is_ok());
        let err = ShmRegion::from_memfd(&sealed, 8193).expect_err("too big");
        assert!(matches!(
            err,
            RegionError::Memfd {
                problem: ShmProblem::TooSmall { .. }
            }
        ));
        let unsealed = memfd(8192, 0);
        let err = ShmRegion::from_memfd(&unsealed, 0).expect_err("not sealed");
        assert!(matches!(
            err,
            RegionError::Memfd {
                problem: ShmProblem::NotSealed
            }
        ));
        // A sealed file cannot be truncated under the mapping.
        // SAFETY: ftruncate on a descriptor we own.
        assert_ne!(unsafe { libc::ftruncate(sealed.as_raw_fd(), 0) }, 0);
    }
}
