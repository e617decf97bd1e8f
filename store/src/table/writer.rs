//! Writing a table version atomically: rows stream in, are packed into blocks and written to
//! data files with their block checksums inside a temporary directory; `finish` fsyncs every
//! file, writes the manifest, fsyncs, and renames the directory into place. A crash at any point
//! leaves at most a `.tmp-*` directory, which readers ignore and the next write removes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::RowLayout;
use super::dtype::DType;
use super::error::TableError;
use super::file_header::{DATA_MAGIC, FORMAT_VERSION, FileHeader, HEADER_LEN, SUMS_MAGIC};
use super::manifest::{
    DataFile, MANIFEST_FILE, MANIFEST_FORMAT, Manifest, parse_version_dir, valid_table_name,
    version_dir_name,
};
use super::row_format::RowFormat;
use super::{BlockSums, ChecksumKind};

/// What table to write.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// How a row's bytes hold its elements. Default plain.
    pub row_format: RowFormat,
    /// Elements per row.
    pub row_dim: u32,
    /// Rows that will be pushed.
    pub rows: u64,
    /// I/O block size. Default 4096.
    pub block_size: u32,
    /// Checksum algorithm. Default crc32c.
    pub checksum: ChecksumKind,
    /// Largest data file, in bytes (rounded down to whole units). Default 16 GiB.
    pub max_file_bytes: u64,
    /// Version to write; default one above the newest present.
    pub version: Option<u64>,
    /// Free-text provenance recorded in the manifest.
    pub source: String,
}

impl TableSpec {
    /// A spec with the defaults above.
    pub fn new(name: impl Into<String>, dtype: DType, row_dim: u32, rows: u64) -> Self {
        Self {
            name: name.into(),
            dtype,
            row_format: RowFormat::Plain,
            row_dim,
            rows,
            block_size: 4096,
            checksum: ChecksumKind::Crc32c,
            max_file_bytes: 16 << 30,
            version: None,
            source: String::new(),
        }
    }

    /// Bytes per row (0 when the dtype and row format do not go together; `create` says why).
    pub fn row_bytes(&self) -> u64 {
        self.row_format
            .row_bytes(self.dtype, self.row_dim)
            .unwrap_or(0)
    }
}

struct OpenFile {
    index: u32,
    first_row: u64,
    rows: u64,
    data: BufWriter<File>,
    sums: BlockSums,
    rows_done: u64,
}

/// Streams rows into a new table version.
pub struct TableWriter {
    spec: TableSpec,
    layout: RowLayout,
    table_dir: PathBuf,
    tmp_dir: PathBuf,
    version: u64,
    rows_per_file: u64,
    files: Vec<DataFile>,
    current: Option<OpenFile>,
    unit: Vec<u8>,
    unit_rows: u64,
    rows_pushed: u64,
    finished: bool,
}

impl std::fmt::Debug for TableWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableWriter")
            .field("name", &self.spec.name)
            .field("version", &self.version)
            .field("rows_pushed", &self.rows_pushed)
            .finish()
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TableError {
    let context = context.into();
    move |e| TableError::io(context, e)
}

/// Highest complete version of the table in `table_dir`, if any.
pub fn newest_version(table_dir: &Path) -> Option<u64> {
    complete_versions(table_dir).first().copied()
}

/// Every complete version (a `vNNNNNNNN` directory holding a manifest) of the table in
/// `table_dir`, newest first.
pub fn complete_versions(table_dir: &Path) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(table_dir) else {
        return Vec::new();
    };
    let mut versions: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = parse_version_dir(e.file_name().to_str()?)?;
            e.path().join(MANIFEST_FILE).is_file().then_some(v)
        })
        .collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions
}

impl TableWriter {
    /// Starts writing table `spec.name` under `data_dir`, removing stale temporary directories
    /// of that table left by crashed writers.
    pub fn create(data_dir: &Path, spec: TableSpec) -> Result<Self, TableError> {
        if !valid_table_name(&spec.name) {
            return Err(TableError::InvalidSpec(format!(
                "table name {:?}: use 1-128 of A-Z a-z 0-9 _ - . (not starting with '.')",
                spec.name
            )));
        }
        if spec.row_dim == 0 {
            return Err(TableError::InvalidSpec("row dim must be at least 1".into()));
        }
        let row_bytes = spec
            .row_format
            .row_bytes(spec.dtype, spec.row_dim)
            .map_err(TableError::InvalidSpec)?;
        if row_bytes > u64::from(u32::MAX) / 2 {
            return Err(TableError::InvalidSpec(format!(
                "row of {row_bytes} bytes is too large"
            )));
        }
        if spec.block_size < 512 || !spec.block_size.is_power_of_two() {
            return Err(TableError::InvalidSpec(format!(
                "block size {} must be a power of two of at least 512",
                spec.block_size
            )));
        }
        let layout = RowLayout::new(row_bytes as u32, spec.block_size);
        let units_per_file = (spec.max_file_bytes / layout.unit_bytes()).max(1);
        let rows_per_file = units_per_file * layout.rows_per_unit();

        let table_dir = data_dir.join(&spec.name);
        std::fs::create_dir_all(&table_dir).map_err(io_err(format!(
            "create table directory {}",
            table_dir.display()
        )))?;
        super::leftovers::remove_stale_in(&table_dir, true);
        let version = match spec.version {
            Some(v) => {
                if table_dir.join(version_dir_name(v)).exists() {
                    return Err(TableError::InvalidSpec(format!(
                        "version {v} of table {:?} already exists",
                        spec.name
                    )));
                }
                v
            }
            None => newest_version(&table_dir).map_or(1, |v| v + 1),
        };
        let tmp_dir = table_dir.join(format!(
            "{}{}-{}",
            super::leftovers::TMP_PREFIX,
            version_dir_name(version),
            std::process::id()
        ));
        std::fs::create_dir_all(&tmp_dir).map_err(io_err(format!(
            "create temporary directory {}",
            tmp_dir.display()
        )))?;
        Ok(Self {
            unit: Vec::with_capacity(layout.unit_bytes() as usize),
            layout,
            table_dir,
            tmp_dir,
            version,
            rows_per_file,
            files: Vec::new(),
            current: None,
            unit_rows: 0,
            rows_pushed: 0,
            finished: false,
            spec,
        })
    }

    /// Version being written.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Rows pushed so far.
    pub fn rows_pushed(&self) -> u64 {
        self.rows_pushed
    }

    /// Appends whole rows (`bytes.len()` a multiple of the row size).
    ///
    /// Whole units that start on a unit boundary go straight from `bytes` to the file (their
    /// checksums computed over the rows and the zero padding in place), so a large batch costs one
    /// copy into the write buffer and one checksum pass; rows around them go through the unit
    /// buffer one by one.
    pub fn push_rows(&mut self, bytes: &[u8]) -> Result<(), TableError> {
        let rb = self.layout.row_bytes as usize;
        if !bytes.len().is_multiple_of(rb) {
            return Err(TableError::InvalidSpec(format!(
                "{} bytes is not a whole number of {rb}-byte rows",
                bytes.len()
            )));
        }
        let rpu = self.layout.rows_per_unit();
        let unit_rows_bytes = rpu as usize * rb;
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.unit_rows == 0
                && rest.len() >= unit_rows_bytes
                && self.rows_pushed + rpu <= self.spec.rows
            {
                if self.current.is_none() {
                    self.open_next_file()?;
                }
                if self
                    .current
                    .as_ref()
                    .is_some_and(|f| f.rows_done + rpu <= f.rows)
                {
                    let (unit, tail) = rest.split_at(unit_rows_bytes);
                    self.write_whole_unit(unit, rpu)?;
                    rest = tail;
                    continue;
                }
            }
            let (row, tail) = rest.split_at(rb);
            self.push_row(row)?;
            rest = tail;
        }
        Ok(())
    }

    /// Writes one unit of `rows` rows (`unit`: their bytes) from the caller's buffer, padding it
    /// with zeros to the unit size. The unit buffer is empty and the open file has room for it.
    fn write_whole_unit(&mut self, unit: &[u8], rows: u64) -> Result<(), TableError> {
        const ZEROS: [u8; 4096] = [0; 4096];
        let block = self.spec.block_size as usize;
        let unit_bytes = self.layout.unit_bytes() as usize;
        let Some(file) = self.current.as_mut() else {
            return Err(TableError::InvalidSpec(
                "internal: no open data file".into(),
            ));
        };
        // Checksum each block over its slice of the rows and of the padding.
        for start in (0..unit_bytes).step_by(block) {
            let end = start + block;
            let data = &unit[start.min(unit.len())..end.min(unit.len())];
            let mut pad = block - data.len();
            let mut parts: Vec<&[u8]> = vec![data];
            while pad > 0 {
                let n = pad.min(ZEROS.len());
                parts.push(&ZEROS[..n]);
                pad -= n;
            }
            file.sums.push_block_parts(&parts);
        }
        let context =
            |file: &OpenFile| format!("write data file {} of table {}", file.index, self.spec.name);
        file.data
            .write_all(unit)
            .map_err(|e| TableError::io(context(file), e))?;
        let mut pad = unit_bytes - unit.len();
        while pad > 0 {
            let n = pad.min(ZEROS.len());
            file.data
                .write_all(&ZEROS[..n])
                .map_err(|e| TableError::io(context(file), e))?;
            pad -= n;
        }
        file.rows_done += rows;
        self.rows_pushed += rows;
        if file.rows_done == file.rows {
            self.close_file()?;
        }
        Ok(())
    }

    /// Appends one row of exactly the row size.
    pub fn push_row(&mut self, row: &[u8]) -> Result<(), TableError> {
        if row.len() != self.layout.row_bytes as usize {
            return Err(TableError::InvalidSpec(format!(
                "row of {} bytes, table rows are {} bytes",
                row.len(),
                self.layout.row_bytes
            )));
        }
        if self.rows_pushed >= self.spec.rows {
            return Err(TableError::InvalidSpec(format!(
                "more rows than the {} declared",
                self.spec.rows
            )));
        }
        if self.current.is_none() {
            self.open_next_file()?;
        }
        self.unit.extend_from_slice(row);
        self.unit_rows += 1;
        self.rows_pushed += 1;
        let file_full = self
            .current
            .as_ref()
            .is_some_and(|f| f.rows_done + self.unit_rows == f.rows);
        if self.unit_rows == self.layout.rows_per_unit() || file_full {
            self.flush_unit()?;
        }
        if file_full {
            self.close_file()?;
        }
        Ok(())
    }

    fn open_next_file(&mut self) -> Result<(), TableError> {
        let index = self.files.len() as u32;
        let first_row = self.files.last().map_or(0, |f| f.first_row + f.rows);
        let rows = (self.spec.rows - first_row).min(self.rows_per_file);
        let path = self.tmp_dir.join(data_file_name(index));
        let file = File::create(&path).map_err(io_err(format!("create {}", path.display())))?;
        let mut data = BufWriter::with_capacity(8 << 20, file);
        let header = self.header(DATA_MAGIC, index, first_row, rows);
        let mut block0 = vec![0u8; self.spec.block_size as usize];
        block0[..HEADER_LEN].copy_from_slice(&header.encode());
        data.write_all(&block0)
            .map_err(io_err(format!("write header of {}", path.display())))?;
        let units = self.layout.units_for(rows);
        self.current = Some(OpenFile {
            index,
            first_row,
            rows,
            data,
            sums: BlockSums::new(
                self.spec.checksum,
                (units * self.layout.unit_blocks()) as usize,
            ),
            rows_done: 0,
        });
        Ok(())
    }

    fn header(&self, magic: [u8; 8], index: u32, first_row: u64, rows: u64) -> FileHeader {
        FileHeader {
            magic,
            format_version: FORMAT_VERSION,
            row_bytes: self.layout.row_bytes,
            block_size: self.spec.block_size,
            checksum: self.spec.checksum,
            file_index: index,
            table_version: self.version,
            first_row,
            rows,
            blocks: self.layout.units_for(rows) * self.layout.unit_blocks(),
        }
    }

    fn flush_unit(&mut self) -> Result<(), TableError> {
        let Some(file) = self.current.as_mut() else {
            return Ok(());
        };
        self.unit.resize(self.layout.unit_bytes() as usize, 0);
        for block in self.unit.chunks_exact(self.spec.block_size as usize) {
            file.sums.push_block(block);
        }
        file.data.write_all(&self.unit).map_err(io_err(format!(
            "write data file {} of table {}",
            file.index, self.spec.name
        )))?;
        file.rows_done += self.unit_rows;
        self.unit.clear();
        self.unit_rows = 0;
        Ok(())
    }

    fn close_file(&mut self) -> Result<(), TableError> {
        let Some(file) = self.current.take() else {
            return Ok(());
        };
        let data_name = data_file_name(file.index);
        let sums_name = sums_file_name(file.index);
        let data = file
            .data
            .into_inner()
            .map_err(|e| TableError::io(format!("flush {data_name}"), e.into_error()))?;
        data.sync_all()
            .map_err(io_err(format!("fsync {data_name}")))?;

        let mut sums_bytes = self
            .header(SUMS_MAGIC, file.index, file.first_row, file.rows)
            .encode()
            .to_vec();
        let values = file.sums.encode_values();
        sums_bytes.extend_from_slice(&values);
        sums_bytes.extend_from_slice(&crc32c::crc32c(&values).to_le_bytes());
        let sums_path = self.tmp_dir.join(&sums_name);
        write_synced(&sums_path, &sums_bytes)?;

        self.files.push(DataFile {
            path: data_name,
            sums: sums_name,
            first_row: file.first_row,
            rows: file.rows,
            blocks: file.sums.len() as u64,
        });
        Ok(())
    }

    /// Writes the manifest and publishes the version; returns its manifest.
    pub fn finish(mut self) -> Result<Manifest, TableError> {
        if self.rows_pushed != self.spec.rows {
            return Err(TableError::InvalidSpec(format!(
                "table {} declared {} rows but got {}",
                self.spec.name, self.spec.rows, self.rows_pushed
            )));
        }
        self.flush_unit()?;
        self.close_file()?;
        let manifest = Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: FORMAT_VERSION,
            name: self.spec.name.clone(),
            version: self.version,
            dtype: self.spec.dtype,
            row_format: self.spec.row_format,
            row_dim: self.spec.row_dim,
            row_bytes: self.layout.row_bytes,
            rows: self.spec.rows,
            block_size: self.spec.block_size,
            checksum: self.spec.checksum,
            files: std::mem::take(&mut self.files),
            source: self.spec.source.clone(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        manifest
            .validate()
            .map_err(|e| TableError::InvalidSpec(format!("internal: manifest invalid: {e}")))?;
        write_synced(&self.tmp_dir.join(MANIFEST_FILE), &manifest.to_json())?;
        sync_dir(&self.tmp_dir)?;
        let final_dir = self.table_dir.join(version_dir_name(self.version));
        // Fault injection: the process dies where a crash would hurt most, with every file of
        // the version written and fsynced but not yet renamed into place.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("ingest_crash_before_rename", |_| std::process::abort());
        std::fs::rename(&self.tmp_dir, &final_dir).map_err(io_err(format!(
            "rename {} to {}",
            self.tmp_dir.display(),
            final_dir.display()
        )))?;
        sync_dir(&self.table_dir)?;
        self.finished = true;
        Ok(manifest)
    }
}

impl Drop for TableWriter {
    fn drop(&mut self) {
        if !self.finished {
            let _ = std::fs::remove_dir_all(&self.tmp_dir);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), TableError> {
    let mut f = File::create(path).map_err(io_err(format!("create {}", path.display())))?;
    f.write_all(bytes)
        .map_err(io_err(format!("write {}", path.display())))?;
    f.sync_all()
        .map_err(io_err(format!("fsync {}", path.display())))
}

fn sync_dir(dir: &Path) -> Result<(), TableError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("fsync directory {}", dir.display())))
}

/// Name of data file `index`.
pub fn data_file_name(index: u32) -> String {
    format!("data-{index:05}.bin")
}

/// Name of the checksum file of data file `index`.
pub fn sums_file_name(index: u32) -> String {
    format!("data-{index:05}.sums")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of a table version, by name.
    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                (name, std::fs::read(e.path()).expect("read"))
            })
            .filter(|(name, _)| name != MANIFEST_FILE)
            .collect();
        out.sort();
        out
    }

    #[test]
    fn bulk_rows_write_the_same_files_as_single_rows() {
        // Small rows (many per block), a row that fills most of a block, rows over two blocks;
        // small files so units meet file ends; both checksums.
        for (row_bytes, checksum) in [
            (100u32, ChecksumKind::Crc32c),
            (264, ChecksumKind::Xxh3),
            (1000, ChecksumKind::Crc32c),
            (400, ChecksumKind::Xxh3),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let rows = 257u64;
            let bytes: Vec<u8> = (0..rows * u64::from(row_bytes))
                .map(|i| (i * 31 % 251) as u8)
                .collect();
            let spec = |name: &str| {
                let mut s = TableSpec::new(name, DType::U8, row_bytes, rows);
                s.block_size = 512;
                s.checksum = checksum;
                s.max_file_bytes = 512 * 7;
                s
            };
            let mut one = TableWriter::create(dir.path(), spec("one")).expect("create");
            for row in bytes.chunks(row_bytes as usize) {
                one.push_row(row).expect("row");
            }
            one.finish().expect("finish");
            let mut bulk = TableWriter::create(dir.path(), spec("bulk")).expect("create");
            // Uneven batches: some start mid-unit.
            let mut rest = &bytes[..];
            for n in [3usize, 50, 1, 200, 3].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let take = (n * row_bytes as usize).min(rest.len());
                bulk.push_rows(&rest[..take]).expect("rows");
                rest = &rest[take..];
            }
            bulk.finish().expect("finish");
            let a = files(&dir.path().join("one").join(version_dir_name(1)));
            let b = files(&dir.path().join("bulk").join(version_dir_name(1)));
            assert!(a.len() > 2, "several files for row_bytes {row_bytes}");
            assert_eq!(a, b, "row_bytes {row_bytes}: files differ");
        }
    }
}
