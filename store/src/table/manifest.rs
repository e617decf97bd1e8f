//! The manifest of one table version (`manifest.json`): what the table is (name, version,
//! dtype, shape), how it is packed (block size, checksum) and which files hold it. Written last,
//! inside the temporary directory, so a version directory with a valid manifest is complete.

use serde::{Deserialize, Serialize};

use super::ChecksumKind;
use super::RowLayout;
use super::dtype::DType;
use super::error::FormatError;

/// Manifest file name inside a version directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Value of [`Manifest::format`].
pub(crate) const MANIFEST_FORMAT: &str = "engram-store-table";

/// One data file of a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    /// Data file name, relative to the version directory.
    pub path: String,
    /// Checksum file name, relative to the version directory.
    pub sums: String,
    /// First table row in this file.
    pub first_row: u64,
    /// Rows in this file.
    pub rows: u64,
    /// Data blocks (excluding the header block).
    pub blocks: u64,
}

/// A table version, as described by its `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// Format version of the files.
    pub format_version: u32,
    /// Table name.
    pub name: String,
    /// Version number (the directory is `v{version:08}`).
    pub version: u64,
    /// Element type.
    pub dtype: DType,
    /// Elements per row.
    pub row_dim: u32,
    /// Bytes per row (`row_dim * dtype.size()`).
    pub row_bytes: u32,
    /// Rows in the table.
    pub rows: u64,
    /// I/O block size.
    pub block_size: u32,
    /// Checksum algorithm of the blocks.
    pub checksum: ChecksumKind,
    /// Data files, in row order.
    pub files: Vec<DataFile>,
    /// Where the rows came from (free text: input path, or synth parameters).
    #[serde(default)]
    pub source: String,
    /// Creation time, seconds since the Unix epoch.
    #[serde(default)]
    pub created_unix: u64,
}

impl Manifest {
    /// Packing of the rows.
    pub fn layout(&self) -> RowLayout {
        RowLayout::new(self.row_bytes, self.block_size)
    }

    /// Parses and validates a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FormatError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::Invalid(format!("manifest JSON: {e}")))?;
        m.validate()?;
        Ok(m)
    }

    /// Serialises (pretty JSON).
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks every field against the others.
    pub fn validate(&self) -> Result<(), FormatError> {
        let bad = |msg: String| Err(FormatError::Invalid(msg));
        if self.format != MANIFEST_FORMAT {
            return bad(format!(
                "format {:?}, expected {MANIFEST_FORMAT:?}",
                self.format
            ));
        }
        if self.format_version != super::file_header::FORMAT_VERSION {
            return bad(format!(
                "format_version {} is not supported",
                self.format_version
            ));
        }
        if !valid_table_name(&self.name) {
            return bad(format!("table name {:?} is not a valid name", self.name));
        }
        if self.row_dim == 0 {
            return bad("row_dim is 0".into());
        }
        if u64::from(self.row_dim) * self.dtype.size() as u64 != u64::from(self.row_bytes) {
            return bad(format!(
                "row_bytes {} != row_dim {} x {} bytes of {}",
                self.row_bytes,
                self.row_dim,
                self.dtype.size(),
                self.dtype
            ));
        }
        if self.block_size < 512
            || !self.block_size.is_multiple_of(512)
            || !self.block_size.is_power_of_two()
        {
            return bad(format!(
                "block_size {} (must be a power of two >= 512)",
                self.block_size
            ));
        }
        let layout = self.layout();
        let mut next = 0u64;
        for (i, f) in self.files.iter().enumerate() {
            if f.first_row != next {
                return bad(format!(
                    "file {i} starts at row {}, expected {next}",
                    f.first_row
                ));
            }
            if f.blocks != layout.units_for(f.rows) * layout.unit_blocks() {
                return bad(format!(
                    "file {i} has {} blocks for {} rows",
                    f.blocks, f.rows
                ));
            }
            if !valid_file_name(&f.path) || !valid_file_name(&f.sums) {
                return bad(format!(
                    "file {i} names {:?}/{:?} must be plain file names",
                    f.path, f.sums
                ));
            }
            next = next
                .checked_add(f.rows)
                .ok_or_else(|| FormatError::Invalid("row count overflows".into()))?;
        }
        if next != self.rows {
            return bad(format!(
                "files hold {next} rows, manifest says {}",
                self.rows
            ));
        }
        Ok(())
    }

    /// Bytes of row data.
    pub fn data_bytes(&self) -> u64 {
        self.rows * u64::from(self.row_bytes)
    }
}

/// Table names: 1..=128 of `[A-Za-z0-9_.-]`, not starting with `.`.
pub fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

fn valid_file_name(name: &str) -> bool {
    valid_table_name(name) && !name.contains("..")
}

/// Directory name of a version.
pub fn version_dir_name(version: u64) -> String {
    format!("v{version:08}")
}

/// Version number of a directory name made by [`version_dir_name`].
pub(crate) fn parse_version_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix('v')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            format_version: 1,
            name: "t".into(),
            version: 1,
            dtype: DType::Bf16,
            row_dim: 80,
            row_bytes: 160,
            rows: 30,
            block_size: 4096,
            checksum: ChecksumKind::Crc32c,
            files: vec![DataFile {
                path: "data-00000.bin".into(),
                sums: "data-00000.sums".into(),
                first_row: 0,
                rows: 30,
                blocks: 2,
            }],
            source: String::new(),
            created_unix: 0,
        }
    }

    #[test]
    fn round_trips_and_validates() {
        let m = sample();
        assert_eq!(Manifest::from_json(&m.to_json()).expect("valid"), m);
        let mut bad = sample();
        bad.row_bytes = 161;
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        let mut bad = sample();
        bad.files[0].path = "../etc/passwd".into();
        assert!(Manifest::from_json(&bad.to_json()).is_err());
        assert!(Manifest::from_json(b"{not json").is_err());
    }

    #[test]
    fn version_dirs() {
        assert_eq!(parse_version_dir(&version_dir_name(42)), Some(42));
        assert_eq!(parse_version_dir("v"), None);
        assert_eq!(parse_version_dir(".tmp-v1"), None);
    }
}
