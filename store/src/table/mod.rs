//! The on-disk table format: a directory per table holding one directory per version
//! (`v00000001/`), each with a `manifest.json`, data files of fixed-stride rows packed into I/O
//! blocks (block 0 a header), and checksum files with one checksum per data block. A row is
//! `row_dim` elements of `dtype` in a [`RowFormat`] (plain, or fp8 with block or table scales).

mod dtype;
mod error;
mod file_header;
mod held_rows;
mod leftovers;
mod manifest;
mod reader;
mod row_format;
mod synth;
mod writer;

pub use dtype::DType;
pub use engram_store_cache::{BlockSums, ChecksumKind, RowLayout};
pub use error::{FormatError, TableError};
pub use file_header::{DATA_MAGIC, FORMAT_VERSION, FileHeader, HEADER_LEN, SUMS_MAGIC};
pub use held_rows::{HELD_ROWS_FILE, HeldRows};
pub use leftovers::remove_stale_leftovers;
pub use manifest::{DataFile, MANIFEST_FILE, Manifest, valid_table_name, version_dir_name};
pub use reader::{OpenDataFile, OpenTable, list_table_names};
pub use row_format::{RowFormat, ScaleDType};
pub use synth::{
    e4m3_from_small_int, e4m3_to_f32, fill_row, row_as_f64, synth_row, synth_row_filler,
};
pub use writer::{
    TableSpec, TableWriter, complete_versions, data_file_name, newest_version, sums_file_name,
};
