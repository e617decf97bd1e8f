//! Rows returned by a lookup: one contiguous buffer, row-major in request order.

use bytes::Bytes;

use engram_store_proto::v1::DType;

/// The rows of one lookup.
#[derive(Debug, Clone)]
pub struct Rows {
    bytes: Bytes,
    row_bytes: usize,
    row_dim: u32,
    dtype: DType,
    version: u64,
}

impl Rows {
    pub(crate) fn new(
        bytes: Bytes,
        row_bytes: usize,
        row_dim: u32,
        dtype: DType,
        version: u64,
    ) -> Self {
        Self {
            bytes,
            row_bytes,
            row_dim,
            dtype,
            version,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.bytes.len().checked_div(self.row_bytes).unwrap_or(0)
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Row `i` (panics if `i >= len()`, like slice indexing).
    pub fn row(&self, i: usize) -> &[u8] {
        &self.bytes[i * self.row_bytes..(i + 1) * self.row_bytes]
    }

    /// Every row, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.bytes.chunks_exact(self.row_bytes.max(1))
    }

    /// All row bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Elements per row.
    pub fn row_dim(&self) -> u32 {
        self.row_dim
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Table version that served them.
    pub fn version(&self) -> u64 {
        self.version
    }
}
