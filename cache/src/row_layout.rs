//! Where a row lives: rows are packed into I/O blocks so that no row straddles a block, and a
//! row larger than a block starts on a block boundary. One row therefore costs one aligned read
//! of a *unit*: one block holding `rows_per_unit` rows, or the `unit_blocks` blocks of one big row.

use serde::{Deserialize, Serialize};

/// Packing of fixed-size rows into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowLayout {
    /// Bytes per row.
    pub row_bytes: u32,
    /// I/O block size; a multiple of 512.
    pub block_size: u32,
}

impl RowLayout {
    /// Layout of `row_bytes`-byte rows in `block_size` blocks.
    pub fn new(row_bytes: u32, block_size: u32) -> Self {
        Self {
            row_bytes,
            block_size,
        }
    }

    /// Rows in one read unit.
    pub fn rows_per_unit(&self) -> u64 {
        if self.row_bytes <= self.block_size {
            u64::from(self.block_size / self.row_bytes.max(1))
        } else {
            1
        }
    }

    /// Blocks in one read unit.
    pub fn unit_blocks(&self) -> u64 {
        u64::from(self.row_bytes.div_ceil(self.block_size)).max(1)
    }

    /// Bytes in one read unit.
    pub fn unit_bytes(&self) -> u64 {
        self.unit_blocks() * u64::from(self.block_size)
    }

    /// Read units needed for `rows` rows.
    pub fn units_for(&self, rows: u64) -> u64 {
        rows.div_ceil(self.rows_per_unit())
    }

    /// Unit of a file-relative row, and the row's byte offset inside that unit.
    pub fn locate(&self, file_row: u64) -> (u64, usize) {
        let rpu = self.rows_per_unit();
        (
            file_row / rpu,
            ((file_row % rpu) * u64::from(self.row_bytes)) as usize,
        )
    }

    /// Fraction of data bytes that are row bytes (the rest is block padding).
    pub fn efficiency(&self) -> f64 {
        (self.rows_per_unit() * u64::from(self.row_bytes)) as f64 / self.unit_bytes() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rows_never_straddle_blocks() {
        let l = RowLayout::new(160, 4096);
        assert_eq!(l.rows_per_unit(), 25);
        assert_eq!(l.unit_blocks(), 1);
        for r in 0..1000u64 {
            let (unit, off) = l.locate(r);
            assert_eq!(unit, r / 25);
            assert!(off + 160 <= 4096);
        }
    }

    #[test]
    fn big_rows_start_on_block_boundaries() {
        let l = RowLayout::new(5000, 4096);
        assert_eq!(l.rows_per_unit(), 1);
        assert_eq!(l.unit_blocks(), 2);
        assert_eq!(l.locate(7), (7, 0));
        let exact = RowLayout::new(4096, 4096);
        assert_eq!((exact.rows_per_unit(), exact.unit_blocks()), (1, 1));
    }
}
