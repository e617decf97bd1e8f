//! Why one read of the NVMe tier failed, typed: the tier decides from it whether the failure is
//! transient (a retry may succeed: UNAVAILABLE) or not (INTERNAL), and reports it without host
//! paths.

/// Why one read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFailure {
    /// The kernel failed the read with this errno.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Os(i32),
    /// The read returned fewer bytes than asked (the file is shorter than its table says).
    #[error("short read: {got} of {want} bytes")]
    Short {
        /// Bytes the read returned.
        got: usize,
        /// Bytes asked for.
        want: usize,
    },
    /// The read is larger than one kernel read can be.
    #[error("a read of {0} bytes is larger than the engine allows")]
    TooLarge(usize),
    /// The I/O engine stopped (or broke) before completing the read.
    #[error("the I/O engine stopped before the read completed")]
    EngineStopped,
    /// The read failed in a way the OS did not number.
    #[error("{0:?}")]
    Other(std::io::ErrorKind),
}

impl ReadFailure {
    /// True when retrying may succeed: the OS said try again or interrupted, or the engine
    /// stopped (a new server, or one that recovered, serves it).
    pub fn is_transient(&self) -> bool {
        match self {
            ReadFailure::Os(errno) => matches!(*errno, libc::EAGAIN | libc::EINTR | libc::EBUSY),
            ReadFailure::EngineStopped => true,
            ReadFailure::Short { .. } | ReadFailure::TooLarge(_) | ReadFailure::Other(_) => false,
        }
    }
}

impl From<std::io::Error> for ReadFailure {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => ReadFailure::Os(errno),
            None => ReadFailure::Other(e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_or_not() {
        assert!(ReadFailure::Os(libc::EAGAIN).is_transient());
        assert!(ReadFailure::EngineStopped.is_transient());
        assert!(!ReadFailure::Os(libc::EIO).is_transient());
        assert!(!ReadFailure::Short { got: 1, want: 2 }.is_transient());
        assert_eq!(
            ReadFailure::Os(libc::EIO).to_string(),
            std::io::Error::from_raw_os_error(libc::EIO).to_string()
        );
    }
}
