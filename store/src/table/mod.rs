//! The on-disk table format: a directory per table holding one directory per version
//! (`v00000001/`), each with a `manifest.json`, data files of fixed-stride rows packed into I/O
//! blocks (block 0 a header), and checksum files with one checksum per data block. A row is
//! `row_dim` elements of `dtype` in a [`RowFormat`] (plain, or fp8 with block or table scales).

mod checksum;
mod dtype;
mod error;
mod file_header;
mod manifest;
mod reader;
mod row_format;
mod row_layout;
mod synth;
mod writer;

pub use checksum::{BlockSums, ChecksumKind};
pub use dtype::DType;
pub use error::{FormatError, TableError};
pub use file_header::{DATA_MAGIC, FORMAT_VERSION, FileHeader, HEADER_LEN, SUMS_MAGIC};
pub use manifest::{DataFile, MANIFEST_FILE, Manifest, valid_table_name, version_dir_name};
pub use reader::{OpenDataFile, OpenTable, list_table_names};
pub use row_format::{RowFormat, ScaleDType};
pub use row_layout::RowLayout;
pub use synth::{e4m3_from_small_int, e4m3_to_f32, fill_row, row_as_f64, synth_row};
pub use writer::{TableSpec, TableWriter, data_file_name, newest_version, sums_file_name};
