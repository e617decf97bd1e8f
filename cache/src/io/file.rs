//! Files opened for direct I/O, and the alignment O_DIRECT needs on them (from statx's DIO
//! fields, else the device's logical block size from sysfs, else 4096).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A read-only file opened with O_DIRECT where the filesystem allows it.
#[derive(Debug)]
pub struct DirectFile {
    file: File,
    path: PathBuf,
    direct: bool,
    len: u64,
    offset_align: u32,
}

impl DirectFile {
    /// Opens `path` read-only. With `want_direct`, tries O_DIRECT and falls back to buffered
    /// reads when the filesystem refuses it (tmpfs, some overlays); [`DirectFile::is_direct`] says
    /// which happened.
    pub fn open(path: &Path, want_direct: bool) -> io::Result<Self> {
        let (file, direct) = if want_direct {
            match std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(path)
            {
                Ok(f) => (f, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    (std::fs::File::open(path)?, false)
                }
                Err(e) => return Err(e),
            }
        } else {
            (std::fs::File::open(path)?, false)
        };
        let meta = file.metadata()?;
        let offset_align = dio_offset_align(&file, meta.dev()).unwrap_or(4096);
        Ok(Self {
            file,
            path: path.to_path_buf(),
            direct,
            len: meta.len(),
            offset_align,
        })
    }

    /// The open file.
    pub fn as_file(&self) -> &File {
        &self.file
    }

    /// The raw descriptor, valid while `self` lives.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when reads bypass the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// File length in bytes at open.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offsets and lengths of direct reads must be multiples of this.
    pub fn offset_align(&self) -> u32 {
        self.offset_align
    }
}

/// DIO offset alignment from statx (Linux 6.1+), else the logical block size of the device.
fn dio_offset_align(file: &File, dev: u64) -> Option<u32> {
    // SAFETY: statx is plain old data; an all-zero value is valid.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open for the duration of the call, the path is a valid empty C string
    // and `stx` is a writable statx owned by this frame.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc == 0 && stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0 {
        return Some(stx.stx_dio_offset_align);
    }
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let text = std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/logical_block_size"
    ))
    .ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_and_reports_alignment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 8192]).expect("write");
        let f = DirectFile::open(&p, true).expect("open");
        assert_eq!(f.len(), 8192);
        assert!(f.offset_align().is_power_of_two());
        assert!(f.offset_align() <= 4096);
    }
}
