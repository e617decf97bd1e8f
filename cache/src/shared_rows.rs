//! Memory of the RAM tier's row arenas: a heap array, or a range of one shared-memory file that
//! a worker process on the same host maps read-only to read rows itself (the whole-table mode
//! only, where row `r` is at byte `r * row_bytes` of the file).
//!
//! The file is created in a directory of a memory file system (`/dev/shm`) as
//! `engram-store-<pid>-<n>.rows`, owner read-only (the store keeps its own writable mapping),
//! and removed when the cache is dropped; files of stores that no longer run are removed when
//! the next one is created in the same directory.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A shared-memory file mapped read-write by this process.
#[derive(Debug)]
pub struct SharedRowsFile {
    path: PathBuf,
    ptr: *mut u8,
    len: usize,
    _file: File,
}

// SAFETY: the mapping is plain memory owned by this value; the arenas carved from it are
// disjoint ranges, each behind its shard's lock.
unsafe impl Send for SharedRowsFile {}
// SAFETY: as above; this value itself never reads or writes the memory.
unsafe impl Sync for SharedRowsFile {}

/// Files created by this process so far (part of their names).
static CREATED: AtomicU64 = AtomicU64::new(0);

/// Prefix of the files' names.
const PREFIX: &str = "engram-store-";

impl SharedRowsFile {
    /// Creates and maps a file of `len` bytes (zeroed, its backing store reserved at once) in
    /// `dir`.
    pub fn create(dir: &Path, len: usize) -> std::io::Result<Self> {
        remove_leftovers(dir);
        let name = format!(
            "{PREFIX}{}-{}.rows",
            std::process::id(),
            CREATED.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)?;
        let len = len.max(1);
        let mapped = reserve(&file, len).and_then(|()| {
            // SAFETY: a fresh shared mapping of a file this process just sized; checked below.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(ptr.cast::<u8>())
            }
        });
        match mapped {
            Ok(ptr) => Ok(Self {
                path,
                ptr,
                len,
                _file: file,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a file holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for SharedRowsFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `create`, unmapped once; no arena outlives this value
        // (each holds an `Arc` of it).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Gives `file` `len` bytes of backing store now (`fallocate`): on a memory file system a write
/// past its free space would otherwise kill the process with SIGBUS long after the start; here
/// it is an error at once. Where `fallocate` is not supported, the length alone is set.
fn reserve(file: &File, len: usize) -> std::io::Result<()> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    // SAFETY: a plain syscall on a descriptor this process owns.
    let rc = unsafe { libc::fallocate(fd, 0, 0, len as libc::off_t) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return file.set_len(len as u64);
    }
    Err(std::io::Error::new(
        e.kind(),
        format!("reserve {len} bytes for the shared rows: {e}"),
    ))
}

/// Removes `engram-store-<pid>-*.rows` files in `dir` whose process no longer runs.
fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        let ours = rest.ends_with(".rows");
        if ours
            && pid.parse::<u32>().is_ok()
            && !Path::new("/proc").join(pid).exists()
            && Path::new("/proc/self").exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// One shard's arena: its bytes and what keeps them alive.
pub(crate) struct Arena {
    ptr: *mut u8,
    len: usize,
    _owner: Owner,
}

enum Owner {
    Heap(#[allow(dead_code)] Vec<u8>),
    Shared(#[allow(dead_code)] Arc<SharedRowsFile>),
}

// SAFETY: the arena's bytes are owned (a heap array) or an exclusive range of a shared file;
// access goes through `&self`/`&mut self` like a `Vec`.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    /// `len` zeroed bytes on the heap (calloc'd: pages become resident only as rows are written),
    /// advised for huge pages.
    pub(crate) fn heap(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        crate::huge_pages::advise(&bytes);
        Self {
            ptr: bytes.as_mut_ptr(),
            len,
            _owner: Owner::Heap(bytes),
        }
    }

    /// Bytes `offset..offset + len` of `file`, which no other arena may use.
    pub(crate) fn shared(file: &Arc<SharedRowsFile>, offset: usize, len: usize) -> Self {
        assert!(
            offset + len <= file.len,
            "an arena past the end of its file"
        );
        Self {
            // The range lies inside the mapping (asserted above).
            ptr: file.ptr.wrapping_add(offset),
            len,
            _owner: Owner::Shared(file.clone()),
        }
    }
}

impl std::ops::Deref for Arena {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr..ptr + len` is live memory owned by `_owner` for this value's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl std::ops::DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only access through this arena, and
        // no other arena covers the same bytes.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_file_is_seen_by_a_second_mapping_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(SharedRowsFile::create(dir.path(), 4096).unwrap());
        let path = file.path().to_path_buf();
        let mut arena = Arena::shared(&file, 1024, 16);
        arena.copy_from_slice(&[7u8; 16]);
        let seen = std::fs::read(&path).unwrap();
        assert_eq!(&seen[1024..1040], &[7u8; 16]);
        assert_eq!(seen[1040], 0);
        // Owner read-only: a second writer is refused (unless root, who bypasses modes).
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o222 == 0);
        drop(arena);
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn files_of_dead_stores_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0x7ffffff0 does not run here.
        let stale = dir.path().join("engram-store-2147483632-0.rows");
        std::fs::write(&stale, b"x").unwrap();
        let other = dir.path().join("something-else.rows");
        std::fs::write(&other, b"x").unwrap();
        let _file = SharedRowsFile::create(dir.path(), 16).unwrap();
        assert!(!stale.exists());
        assert!(other.exists());
    }
}
