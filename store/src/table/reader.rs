//! Opening a table for serving: find the newest complete version, read and check its manifest,
//! open its data files for direct I/O, check their headers and load their block checksums, and
//! read which rows a partial copy holds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use engram_store_cache::io::DirectFile;

use super::BlockSums;
use super::error::{FormatError, TableError};
use super::file_header::{DATA_MAGIC, FileHeader, HEADER_LEN, SUMS_MAGIC};
use super::held_rows::HeldRows;
use super::manifest::{MANIFEST_FILE, Manifest, valid_table_name, version_dir_name};
use super::writer::newest_version;

/// A data file ready to serve: its descriptor, its checksums, its rows.
#[derive(Debug)]
pub struct OpenDataFile {
    /// The file, opened with O_DIRECT where possible.
    pub file: Arc<DirectFile>,
    /// Checksum of every data block.
    pub sums: BlockSums,
    /// First table row.
    pub first_row: u64,
    /// Rows held.
    pub rows: u64,
}

/// A table version opened for serving.
#[derive(Debug)]
pub struct OpenTable {
    /// Its manifest.
    pub manifest: Manifest,
    /// Its version directory.
    pub dir: PathBuf,
    /// Its data files, in row order.
    pub files: Vec<OpenDataFile>,
    /// The rows held, for a partial copy (`None`: every row).
    pub held: Option<HeldRows>,
}

impl OpenTable {
    /// Opens the newest complete version of table `name` under `data_dir`.
    pub fn open_newest(data_dir: &Path, name: &str, direct: bool) -> Result<Self, TableError> {
        let table_dir = data_dir.join(name);
        let version = newest_version(&table_dir).ok_or_else(|| TableError::NoVersion {
            name: name.into(),
            dir: table_dir.clone(),
        })?;
        Self::open_dir(&table_dir.join(version_dir_name(version)), direct)
    }

    /// Opens the version in directory `dir`.
    pub fn open_dir(dir: &Path, direct: bool) -> Result<Self, TableError> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = std::fs::read(&manifest_path)
            .map_err(|e| TableError::io(format!("read {}", manifest_path.display()), e))?;
        let manifest = Manifest::from_json(&bytes).map_err(|source| TableError::Format {
            path: manifest_path.clone(),
            source,
        })?;
        let mut files = Vec::with_capacity(manifest.files.len());
        for (i, f) in manifest.files.iter().enumerate() {
            let data_path = dir.join(&f.path);
            let header = read_header(&data_path, DATA_MAGIC)?;
            let expect = |what: &str, found: u64, want: u64| {
                if found == want {
                    Ok(())
                } else {
                    Err(TableError::Format {
                        path: data_path.clone(),
                        source: FormatError::Invalid(format!(
                            "header {what} {found}, manifest says {want}"
                        )),
                    })
                }
            };
            expect("file index", u64::from(header.file_index), i as u64)?;
            expect("first row", header.first_row, f.first_row)?;
            expect("rows", header.rows, f.rows)?;
            expect(
                "row bytes",
                u64::from(header.row_bytes),
                u64::from(manifest.row_bytes),
            )?;
            expect(
                "block size",
                u64::from(header.block_size),
                u64::from(manifest.block_size),
            )?;
            expect("blocks", header.blocks, f.blocks)?;
            expect("version", header.table_version, manifest.version)?;
            let file = DirectFile::open(&data_path, direct)
                .map_err(|e| TableError::io(format!("open {}", data_path.display()), e))?;
            let want_len = (1 + f.blocks) * u64::from(manifest.block_size);
            expect("file length", file.len(), want_len)?;
            if file.is_direct() && manifest.block_size % file.offset_align() != 0 {
                return Err(TableError::Format {
                    path: data_path.clone(),
                    source: FormatError::Invalid(format!(
                        "block size {} is not a multiple of the device's direct I/O alignment {}",
                        manifest.block_size,
                        file.offset_align()
                    )),
                });
            }
            let sums = read_sums(&dir.join(&f.sums), &manifest, f.blocks)?;
            files.push(OpenDataFile {
                file: Arc::new(file),
                sums,
                first_row: f.first_row,
                rows: f.rows,
            });
        }
        let held = HeldRows::load(dir, manifest.rows)?;
        Ok(Self {
            manifest,
            dir: dir.to_path_buf(),
            files,
            held,
        })
    }

    /// Bytes of checksums held in memory.
    pub fn checksum_memory_bytes(&self) -> usize {
        self.files.iter().map(|f| f.sums.memory_bytes()).sum()
    }
}

fn read_header(path: &Path, magic: [u8; 8]) -> Result<FileHeader, TableError> {
    let mut buf = [0u8; HEADER_LEN];
    let mut f = std::fs::File::open(path)
        .map_err(|e| TableError::io(format!("open {}", path.display()), e))?;
    let mut got = 0;
    while got < HEADER_LEN {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(TableError::io(
                    format!("read header of {}", path.display()),
                    e,
                ));
            }
        }
    }
    FileHeader::decode(&buf[..got], magic).map_err(|source| TableError::Format {
        path: path.to_path_buf(),
        source,
    })
}

fn read_sums(path: &Path, manifest: &Manifest, blocks: u64) -> Result<BlockSums, TableError> {
    let bytes =
        std::fs::read(path).map_err(|e| TableError::io(format!("read {}", path.display()), e))?;
    let fail = |msg: String| TableError::Format {
        path: path.to_path_buf(),
        source: FormatError::Invalid(msg),
    };
    let header = FileHeader::decode(&bytes, SUMS_MAGIC).map_err(|source| TableError::Format {
        path: path.to_path_buf(),
        source,
    })?;
    if header.checksum != manifest.checksum || header.blocks != blocks {
        return Err(fail(format!(
            "holds {} {} checksums, manifest expects {} {}",
            header.blocks,
            header.checksum.name(),
            blocks,
            manifest.checksum.name()
        )));
    }
    let width = match manifest.checksum {
        super::ChecksumKind::Crc32c => 4,
        super::ChecksumKind::Xxh3 => 8,
    };
    let values_len = usize::try_from(blocks)
        .ok()
        .and_then(|b| b.checked_mul(width))
        .ok_or_else(|| fail(format!("{blocks} blocks is too many")))?;
    if bytes.len() != HEADER_LEN + values_len + 4 {
        return Err(fail(format!(
            "is {} bytes, expected {}",
            bytes.len(),
            HEADER_LEN + values_len + 4
        )));
    }
    let values = &bytes[HEADER_LEN..HEADER_LEN + values_len];
    let trailer = &bytes[HEADER_LEN + values_len..];
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if stored != crc32c::crc32c(values) {
        return Err(fail(
            "checksum list is damaged (its crc32c does not match)".into(),
        ));
    }
    BlockSums::decode_values(manifest.checksum, values).ok_or_else(|| fail("bad length".into()))
}

/// Names of the tables under `data_dir` that have a complete version.
pub fn list_table_names(data_dir: &Path) -> Result<Vec<String>, TableError> {
    let entries = std::fs::read_dir(data_dir)
        .map_err(|e| TableError::io(format!("list data directory {}", data_dir.display()), e))?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| valid_table_name(n) && newest_version(&data_dir.join(n)).is_some())
        .collect();
    names.sort();
    Ok(names)
}
