//! The manifest of one table version (`manifest.json`): what the table is (name, version,
//! dtype, row format, shape), how it is packed (block size, checksum) and which files hold it. Written last,
//! inside the temporary directory, so a version directory with a valid manifest is complete.

use serde::{Deserialize, Serialize};

use super::ChecksumKind;
use super::RowLayout;
use super::dtype::DType;
use super::error::FormatError;
use super::row_format::RowFormat;

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
    /// How a row's bytes hold its elements; absent (plain) in manifests written before it
    /// existed, and left out of plain tables' manifests.
    #[serde(default, skip_serializing_if = "RowFormat::is_plain")]
    pub row_format: RowFormat,
    /// Elements per row.
    pub row_dim: u32,
    /// Bytes per row (`row_dim * dtype.size()`, plus the scales of a block-scaled format).
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
        let want = self
            .row_format
            .row_bytes(self.dtype, self.row_dim)
            .map_err(FormatError::Invalid)?;
        if want != u64::from(self.row_bytes) {
            return bad(format!(
                "row_bytes {} != {want}, the bytes of row_dim {} elements of {} in row format {}",
                self.row_bytes, self.row_dim, self.dtype, self.row_format
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
            row_format: RowFormat::Plain,
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
    fn row_formats_in_manifests() {
        // A manifest written before row formats existed has no key, and plain ones still don't.
        let plain = sample();
        let json = String::from_utf8(plain.to_json()).expect("utf-8");
        assert!(!json.contains("row_format"), "{json}");
        let mut value: serde_json::Value = serde_json::from_str(&json).expect("json");
        value.as_object_mut().expect("object").remove("row_format");
        let old = Manifest::from_json(value.to_string().as_bytes()).expect("old manifest loads");
        assert_eq!(old.row_format, RowFormat::Plain);
        // A V4.1 table: 256 fp8 values + 8 ue8m0 scales.
        let mut v41 = sample();
        v41.dtype = DType::F8E4M3;
        v41.row_format = RowFormat::V41_ENGRAM;
        v41.row_dim = 256;
        v41.row_bytes = 264;
        v41.files[0].blocks = 2; // 15 rows per 4 KiB block
        let back = Manifest::from_json(&v41.to_json()).expect("v41 manifest");
        assert_eq!(back.row_format, RowFormat::V41_ENGRAM);
        let json = String::from_utf8(v41.to_json()).expect("utf-8");
        assert!(json.contains(r#""kind": "fp8_block_scaled""#), "{json}");
        let mut wrong = v41.clone();
        wrong.row_bytes = 256;
        let err = Manifest::from_json(&wrong.to_json()).expect_err("row bytes without scales");
        assert!(err.to_string().contains("264"), "{err}");
        let mut wrong = v41;
        wrong.dtype = DType::U8;
        wrong.row_bytes = 256;
        assert!(Manifest::from_json(&wrong.to_json()).is_err());
    }

    #[test]
    fn version_dirs() {
        assert_eq!(parse_version_dir(&version_dir_name(42)), Some(42));
        assert_eq!(parse_version_dir("v"), None);
        assert_eq!(parse_version_dir(".tmp-v1"), None);
    }
}
