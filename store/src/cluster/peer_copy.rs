//! Copying a shard of a table version from a peer that serves it (`ReadTableFile`), for a node
//! the map gives a shard of a version it does not hold. Only the shard's blocks travel: the
//! node writes the version's manifest and checksum files whole, and data files of their full
//! length with the shard's blocks in place and holes elsewhere, then records the rows it holds
//! (`held_rows.json`, [`HeldRows`]); the engine serves only those rows. Every copied block is
//! checked against the version's checksums before it is written, so a damaged transfer (or a
//! peer's own hole) is an error, never a row.
//!
//! An Engram layer table's group directory (layout, compression map) comes along with its first
//! shard ([`copy_group_dir`]), so the node serves LookupNgrams for the rows it holds.
//!
//! A version new to the node is written into `.tmp-vNNNNNNNN-PID` and renamed into place when
//! complete (a crash leaves a directory that `serve` removes at start). A second shard of a
//! version the node already holds in part is written into its files in place (blocks no held
//! row reads), synced, and only then added to the held rows. A copy needs the room on the data
//! directory's filesystem first (1% of it kept free). Rows the map later takes away are given
//! back by [`super::shard_release`].

use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;

use engram_store_client::{Client, ClientError, proto as pb};

use crate::group::{GROUP_META_FILE, LAYOUT_FILE, MAP_FILE, group_dir};
use crate::table::{
    DataFile, HeldRows, MANIFEST_FILE, Manifest, OpenTable, RowLayout, TableError, version_dir_name,
};

/// Bytes asked of the peer per request (whole blocks).
const PIECE: u64 = 8 << 20;
/// Requests in flight to the peer.
const PIPELINE: usize = 4;

/// Why a shard could not be copied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// The peer refused or failed.
    #[error("peer {peer}: {source}")]
    Peer {
        /// Its address.
        peer: String,
        /// What it said.
        source: ClientError,
    },
    /// What the peer sent is not the table version asked for, or a block fails its checksum.
    #[error("peer {peer}: {message}")]
    Bad {
        /// Its address.
        peer: String,
        /// What is wrong.
        message: String,
    },
    /// The local files.
    #[error(transparent)]
    Table(#[from] TableError),
    /// Not enough free space for the copy.
    #[error(
        "copying needs {needed} bytes in {dir}, and its filesystem has {free} free (less 1% kept)"
    )]
    NoSpace {
        /// Where it was to be written.
        dir: PathBuf,
        /// Bytes the copy writes.
        needed: u64,
        /// Bytes free.
        free: u64,
    },
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Copied {
    /// The node already held the rows.
    AlreadyHeld,
    /// A version new to the node was written and renamed into place: the engine must load it.
    NewVersion,
    /// Blocks were added to a partial copy the engine serves: it must hold the rows from now.
    Extended,
}

/// One shard to copy: rows `rows` of version `version` of table `table`, into `data_dir`.
#[derive(Debug, Clone)]
pub struct ShardCopy<'a> {
    /// The node's data directory.
    pub data_dir: &'a Path,
    /// Table.
    pub table: &'a str,
    /// Version.
    pub version: u64,
    /// Rows of the shard.
    pub rows: Range<u64>,
}

impl ShardCopy<'_> {
    /// Copies the shard from the peer at `peer` (`host:port`) through `client`.
    pub async fn from_peer(&self, client: &Client, peer: &str) -> Result<Copied, CopyError> {
        let version_dir = self
            .data_dir
            .join(self.table)
            .join(version_dir_name(self.version));
        let existing = version_dir.join(MANIFEST_FILE).exists();
        if existing {
            match load_held(&version_dir)? {
                None => return Ok(Copied::AlreadyHeld),
                Some(h) if h.covers(&self.rows) => return Ok(Copied::AlreadyHeld),
                Some(_) => {}
            }
        }
        let fetch = Fetch {
            client,
            peer,
            table: self.table,
            version: self.version,
        };
        let dir = if existing {
            version_dir.clone()
        } else {
            self.start_version(&fetch).await?
        };
        let result = self.copy_blocks(&fetch, &dir).await;
        if let Err(e) = result {
            if !existing {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(e);
        }
        if existing {
            return Ok(Copied::Extended);
        }
        std::fs::rename(&dir, &version_dir)
            .map_err(|e| TableError::io(format!("rename {} into place", dir.display()), e))?;
        sync_dir(&self.data_dir.join(self.table));
        Ok(Copied::NewVersion)
    }

    /// A temporary version directory with the peer's manifest, checksum files, data file
    /// headers, data files of their full length (holes) and no rows held.
    async fn start_version(&self, fetch: &Fetch<'_>) -> Result<PathBuf, CopyError> {
        let (bytes, _) = fetch.range(MANIFEST_FILE, 0, 0).await?;
        let manifest =
            Manifest::from_json(&bytes).map_err(|e| fetch.bad(format!("its manifest: {e}")))?;
        if manifest.name != self.table || manifest.version != self.version {
            return Err(fetch.bad(format!(
                "sent the manifest of table {:?} version {}",
                manifest.name, manifest.version
            )));
        }
        if self.rows.end > manifest.rows {
            return Err(fetch.bad(format!(
                "version {} has {} rows, the shard ends at {}",
                self.version, manifest.rows, self.rows.end
            )));
        }
        let table_dir = self.data_dir.join(self.table);
        let dir = table_dir.join(format!(
            ".tmp-{}-{}",
            version_dir_name(self.version),
            std::process::id()
        ));
        let io = |what: &str, p: &Path, e| TableError::io(format!("{what} {}", p.display()), e);
        let _ = std::fs::remove_dir_all(&dir);
        // The checksum files and the data files' header blocks (the rows are checked later).
        let block = u64::from(manifest.block_size);
        let sums: u64 = manifest
            .files
            .iter()
            .map(|f| block + 64 + f.blocks * 8)
            .sum();
        ensure_space(&table_dir_or_data(self.data_dir, &table_dir), sums)?;
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        for f in &manifest.files {
            for name in [&f.path, &f.sums] {
                if name.contains('/') || name.starts_with('.') {
                    return Err(fetch.bad(format!("its manifest names a file {name:?}")));
                }
            }
            let sums = dir.join(&f.sums);
            let file = create(&sums)?;
            fetch.to_file(&f.sums, 0..u64::MAX, &file, &sums).await?;
            file.sync_all().map_err(|e| io("sync", &sums, e))?;
            let data = dir.join(&f.path);
            let file = create(&data)?;
            fetch.to_file(&f.path, 0..block, &file, &data).await?;
            file.set_len((1 + f.blocks) * block)
                .map_err(|e| io("size", &data, e))?;
        }
        HeldRows::default().save(&dir)?;
        std::fs::write(dir.join(MANIFEST_FILE), &bytes)
            .map_err(|e| io("write", &dir.join(MANIFEST_FILE), e))?;
        Ok(dir)
    }

    /// Copies the blocks holding the shard's rows into `dir`'s data files, each checked against
    /// its checksum, syncs them, and adds the rows to the held rows.
    async fn copy_blocks(&self, fetch: &Fetch<'_>, dir: &Path) -> Result<(), CopyError> {
        let table = {
            let dir = dir.to_path_buf();
            tokio::task::spawn_blocking(move || OpenTable::open_dir(&dir, false))
                .await
                .map_err(|e| {
                    TableError::io(String::from("open the copy"), std::io::Error::other(e))
                })??
        };
        let table = Arc::new(table);
        let m = &table.manifest;
        let layout = m.layout();
        let block = u64::from(m.block_size);
        let needed: u64 = m
            .files
            .iter()
            .filter_map(|f| shard_blocks(&layout, f, &self.rows))
            .map(|b| (b.end - b.start) * block)
            .sum();
        ensure_space(dir, needed)?;
        for f in &m.files {
            let Some(blocks) = shard_blocks(&layout, f, &self.rows) else {
                continue;
            };
            let path = dir.join(&f.path);
            let file = open_for_write(&path)?;
            let per_piece = (PIECE / block).max(1);
            let pieces: Vec<(u64, u64)> = (blocks.start..blocks.end)
                .step_by(per_piece as usize)
                .map(|b| (b, per_piece.min(blocks.end - b)))
                .collect();
            let file = Arc::new(file);
            let mut arriving = futures::stream::iter(pieces)
                .map(|(b, n)| async move {
                    let offset = (1 + b) * block;
                    let (bytes, _) = fetch.range(&f.path, offset, n * block).await?;
                    Ok::<_, CopyError>((b, n, bytes))
                })
                .buffer_unordered(PIPELINE);
            while let Some(piece) = arriving.next().await {
                let (b, n, bytes) = piece?;
                if bytes.len() as u64 != n * block {
                    return Err(fetch.bad(format!(
                        "sent {} bytes of {} at block {b}, not {}",
                        bytes.len(),
                        f.path,
                        n * block
                    )));
                }
                let (table, file, path, name) =
                    (table.clone(), file.clone(), path.clone(), f.path.clone());
                let k = m.files.iter().position(|x| x.path == f.path).unwrap_or(0);
                let written = tokio::task::spawn_blocking(move || {
                    let sums = &table.files[k].sums;
                    for (j, data) in bytes.chunks(block as usize).enumerate() {
                        let i = b + j as u64;
                        if !sums.verify(i as usize, data) {
                            return Err(format!(
                                "block {i} of {name} fails its checksum (a damaged copy, or a \
                                 block the peer does not hold)"
                            ));
                        }
                    }
                    file.write_all_at(&bytes, (1 + b) * block)
                        .map_err(|e| format!("write {}: {e}", path.display()))
                })
                .await
                .map_err(|e| fetch.bad(format!("a write task failed: {e}")))?;
                written.map_err(|message| fetch.bad(message))?;
            }
            file.sync_all()
                .map_err(|e| TableError::io(format!("sync {}", path.display()), e))?;
        }
        let mut held = load_held(dir)?.unwrap_or_default();
        held.add(self.rows.clone());
        held.save(dir)?;
        Ok(())
    }
}

/// The data blocks of file `f` holding rows `rows` of the table (`None`: the file has none of
/// them): whole read units, so every row of a block written is complete.
pub(super) fn shard_blocks(
    layout: &RowLayout,
    f: &DataFile,
    rows: &Range<u64>,
) -> Option<Range<u64>> {
    let first = rows.start.max(f.first_row);
    let end = rows.end.min(f.first_row + f.rows);
    if first >= end {
        return None;
    }
    let (u0, _) = layout.locate(first - f.first_row);
    let (u1, _) = layout.locate(end - 1 - f.first_row);
    Some(u0 * layout.unit_blocks()..((u1 + 1) * layout.unit_blocks()).min(f.blocks))
}

/// The table's directory if it exists yet, else the data directory: where free space is asked.
fn table_dir_or_data(data_dir: &Path, table_dir: &Path) -> PathBuf {
    if table_dir.exists() {
        table_dir.to_path_buf()
    } else {
        data_dir.to_path_buf()
    }
}

/// Fails with [`CopyError::NoSpace`] unless the filesystem of `dir` has `needed` bytes free
/// (and 1% of itself besides, for everything else writing there). Unknown free space passes.
fn ensure_space(dir: &Path, needed: u64) -> Result<(), CopyError> {
    let Some((free, total)) = free_bytes(dir) else {
        return Ok(());
    };
    if needed.saturating_add(total / 100) > free {
        return Err(CopyError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            free,
        });
    }
    Ok(())
}

/// Bytes free to an unprivileged writer and the size of the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all zeroes is a valid value of it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a NUL-terminated string and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// The rows a version directory holds (`None`: all).
fn load_held(dir: &Path) -> Result<Option<HeldRows>, TableError> {
    let bytes = std::fs::read(dir.join(MANIFEST_FILE))
        .map_err(|e| TableError::io(format!("read the manifest in {}", dir.display()), e))?;
    let rows = Manifest::from_json(&bytes)
        .map_err(|source| TableError::Format {
            path: dir.join(MANIFEST_FILE),
            source,
        })?
        .rows;
    HeldRows::load(dir, rows)
}

pub(super) fn open_for_write(path: &Path) -> Result<std::fs::File, TableError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| TableError::io(format!("open {}", path.display()), e))
}

fn create(path: &Path) -> Result<std::fs::File, TableError> {
    std::fs::File::create(path).map_err(|e| TableError::io(format!("create {}", path.display()), e))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Copies Engram group `group`'s directory (`group.json`, `layout.json`, `compress.npy`) from
/// the peer at `peer` into `data_dir`, unless the directory is there: a node holding copies of
/// the group's layer tables can then serve LookupNgrams for the rows it holds. Returns whether
/// it copied. Written into `.tmp-GROUP.engram-PID` and renamed into place.
pub async fn copy_group_dir(
    client: &Client,
    peer: &str,
    data_dir: &Path,
    group: &str,
) -> Result<bool, CopyError> {
    let dir = group_dir(data_dir, group);
    if dir.exists() {
        return Ok(false);
    }
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(group)
        .to_owned();
    let tmp = data_dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)
        .map_err(|e| TableError::io(format!("create {}", tmp.display()), e))?;
    let written: Result<(), CopyError> = async {
        for file in [GROUP_META_FILE, LAYOUT_FILE, MAP_FILE] {
            let (bytes, _) = client
                .read_file(pb::ReadTableFileRequest {
                    group: group.to_owned(),
                    file: file.to_owned(),
                    ..Default::default()
                })
                .await
                .map_err(|source| CopyError::Peer {
                    peer: peer.to_owned(),
                    source,
                })?;
            let path = tmp.join(file);
            std::fs::write(&path, &bytes)
                .map_err(|e| TableError::io(format!("write {}", path.display()), e))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => {
            sync_dir(data_dir);
            Ok(true)
        }
        // Another copy got there first.
        Err(_) if dir.exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(false)
        }
        Err(e) => Err(TableError::io(format!("rename {} into place", tmp.display()), e).into()),
    }
}

/// Reads files of one table version from one peer.
struct Fetch<'a> {
    client: &'a Client,
    peer: &'a str,
    table: &'a str,
    version: u64,
}

impl Fetch<'_> {
    fn bad(&self, message: String) -> CopyError {
        CopyError::Bad {
            peer: self.peer.to_owned(),
            message,
        }
    }

    /// Bytes `offset..offset + length` of `file` (`length` 0: to the end) and the file's length.
    async fn range(
        &self,
        file: &str,
        offset: u64,
        length: u64,
    ) -> Result<(Vec<u8>, u64), CopyError> {
        self.client
            .read_file(pb::ReadTableFileRequest {
                table: self.table.to_owned(),
                version: self.version,
                file: file.to_owned(),
                offset,
                length,
                group: String::new(),
            })
            .await
            .map_err(|source| CopyError::Peer {
                peer: self.peer.to_owned(),
                source,
            })
    }

    /// Writes bytes `range` of `file` (clipped to its length) at the same offsets of `out`.
    async fn to_file(
        &self,
        file: &str,
        range: Range<u64>,
        out: &std::fs::File,
        path: &Path,
    ) -> Result<(), CopyError> {
        let mut at = range.start;
        while at < range.end {
            let (bytes, file_length) = self.range(file, at, (range.end - at).min(PIECE)).await?;
            out.write_all_at(&bytes, at)
                .map_err(|e| TableError::io(format!("write {}", path.display()), e))?;
            at += bytes.len() as u64;
            if bytes.is_empty() || at >= file_length {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(first_row: u64, rows: u64, blocks: u64) -> DataFile {
        DataFile {
            path: "data-00000.bin".into(),
            sums: "data-00000.sums".into(),
            first_row,
            rows,
            blocks,
        }
    }

    #[test]
    fn a_shard_maps_to_the_whole_blocks_holding_its_rows() {
        // 64-B rows in 4 KiB blocks: 64 rows a block; a file of rows 1000..3000 (32 blocks).
        let layout = RowLayout::new(64, 4096);
        let f = file(1000, 2000, 32);
        assert_eq!(shard_blocks(&layout, &f, &(0..1000)), None);
        assert_eq!(shard_blocks(&layout, &f, &(3000..4000)), None);
        // Rows 1000..1064 are block 0; 1064 starts block 1.
        assert_eq!(shard_blocks(&layout, &f, &(0..1064)), Some(0..1));
        assert_eq!(shard_blocks(&layout, &f, &(1063..1065)), Some(0..2));
        assert_eq!(shard_blocks(&layout, &f, &(2990..5000)), Some(31..32));
        // Rows larger than a block: one row is several blocks.
        let big = RowLayout::new(5000, 4096);
        assert_eq!(shard_blocks(&big, &file(0, 10, 20), &(3..5)), Some(6..10));
    }

    #[test]
    fn a_copy_larger_than_the_free_space_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_space(dir.path(), 0).expect("nothing to write");
        let err = ensure_space(dir.path(), u64::MAX / 2).expect_err("no room");
        assert!(matches!(err, CopyError::NoSpace { .. }), "{err}");
        assert!(err.to_string().contains("free"), "{err}");
    }
}
