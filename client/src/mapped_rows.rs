//! A table version read straight from the server's memory (`ShareTable`): the shared-memory file
//! of a table the server holds whole in RAM, mapped read-only into this process, so a worker on
//! the same host copies rows itself with no request to the server (the host half of the mapped
//! transport; the Python client also maps the VRAM tier).

use crate::client::Client;
use crate::error::ClientError;

/// A shared table version, mapped read-only: row `r` at byte `r * row_bytes`.
#[derive(Debug)]
pub struct MappedRows {
    table: String,
    version: u64,
    rows: u64,
    row_bytes: usize,
    ptr: *const u8,
    len: usize,
}

// SAFETY: a read-only mapping owned by this value; reading it from several threads is fine.
unsafe impl Send for MappedRows {}
// SAFETY: as above: nothing writes through it.
unsafe impl Sync for MappedRows {}

impl MappedRows {
    /// Shares `table` (`ShareTable`, admin; the server on this host with `--share-memory`) and
    /// maps its file. The server loads the rows it lacks first.
    pub async fn open(client: &Client, table: &str) -> Result<Self, ClientError> {
        let shared = client.share_table(table, None).await?;
        let row_bytes = usize::try_from(shared.row_bytes)
            .ok()
            .filter(|&b| b > 0)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!("row size {}", shared.row_bytes))
            })?;
        let need = shared
            .rows
            .checked_mul(shared.row_bytes)
            .filter(|&n| n <= shared.host_bytes)
            .ok_or_else(|| {
                ClientError::InvalidArgument(format!(
                    "{} rows of {} B do not fit the {} B shared file",
                    shared.rows, shared.row_bytes, shared.host_bytes
                ))
            })?;
        let file = std::fs::File::open(&shared.host_path)
            .map_err(|e| ClientError::InvalidArgument(format!("open {}: {e}", shared.host_path)))?;
        let len = file
            .metadata()
            .map_err(|e| ClientError::InvalidArgument(format!("{}: {e}", shared.host_path)))?
            .len();
        if len < need {
            return Err(ClientError::InvalidArgument(format!(
                "{} holds {len} B, fewer than the {need} B of {} rows",
                shared.host_path, shared.rows
            )));
        }
        let len = usize::try_from(need.max(1))
            .map_err(|_| ClientError::InvalidArgument(format!("{need} B cannot be mapped")))?;
        // SAFETY: a fresh read-only shared mapping of a file at least `len` long (checked); the
        // server only writes rows before it answers ShareTable, and never shrinks the file.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(ClientError::InvalidArgument(format!(
                "map {}: {}",
                shared.host_path,
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self {
            table: shared.table,
            version: shared.version,
            rows: shared.rows,
            row_bytes,
            ptr: ptr.cast(),
            len,
        })
    }

    /// The table.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The version mapped.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Every row, in row order.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for this value's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Row `id`, or `None` past the end.
    pub fn row(&self, id: u64) -> Option<&[u8]> {
        let at = usize::try_from(id).ok()?.checked_mul(self.row_bytes)?;
        self.bytes().get(at..at.checked_add(self.row_bytes)?)
    }

    /// Copies rows `ids` into `out`, packed in order; an id past the end is an error naming it
    /// (and nothing is copied).
    pub fn gather_into(&self, ids: &[u64], out: &mut [u8]) -> Result<(), ClientError> {
        if out.len() != ids.len() * self.row_bytes {
            return Err(ClientError::InvalidArgument(format!(
                "{} B of output for {} rows of {} B",
                out.len(),
                ids.len(),
                self.row_bytes
            )));
        }
        if let Some((k, &id)) = ids.iter().enumerate().find(|(_, id)| **id >= self.rows) {
            return Err(ClientError::InvalidArgument(format!(
                "row id {id} (at position {k}) is out of range: table {:?} has {} rows",
                self.table, self.rows
            )));
        }
        let all = self.bytes();
        for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(self.row_bytes)) {
            let at = id as usize * self.row_bytes;
            dst.copy_from_slice(&all[at..at + self.row_bytes]);
        }
        Ok(())
    }
}

impl Drop for MappedRows {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}
