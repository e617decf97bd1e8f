//! Checking rows that either system returned against the synthetic content they were made from
//! ([`engram_store::table::fill_row`]), so a benchmark that serves wrong rows fails instead of
//! reporting a fast number.
//!
//! A full check recomputes every column. The cheap check, used on a share of the responses while
//! measuring, recomputes only the first [`PREFIX_COLS`] columns: the synthetic content of a column
//! depends only on (seed, row, column), so the first `k` columns of a row are the row of a
//! `k`-column table with the same seed.

use engram_store::table::{DType, fill_row};

/// Columns compared by [`RowCheck::prefix`].
pub const PREFIX_COLS: usize = 8;

/// What the rows of a table must hold.
#[derive(Debug, Clone, Copy)]
pub struct RowCheck {
    seed: u64,
    dtype: DType,
    dim: usize,
}

impl RowCheck {
    /// Rows of `dim` elements of `dtype`, made with `seed`.
    pub fn new(seed: u64, dtype: DType, dim: usize) -> Self {
        Self { seed, dtype, dim }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.dim * self.dtype.size()
    }

    /// Writes the expected row `id` into `out` ([`Self::row_bytes`] long).
    pub fn fill(&self, id: u64, out: &mut [u8]) {
        fill_row(self.seed, self.dtype, self.dim, id, out);
    }

    /// Rows of `rows` (packed, in the order of `ids`) that differ from the expected rows, in full.
    /// A buffer of the wrong length counts every id as wrong.
    pub fn full(&self, ids: &[u64], rows: &[u8]) -> u64 {
        self.compare(ids, rows, self.dim)
    }

    /// Like [`Self::full`], comparing only the first [`PREFIX_COLS`] columns of each row.
    pub fn prefix(&self, ids: &[u64], rows: &[u8]) -> u64 {
        self.compare(ids, rows, self.dim.min(PREFIX_COLS))
    }

    fn compare(&self, ids: &[u64], rows: &[u8], cols: usize) -> u64 {
        let rb = self.row_bytes();
        if rows.len() != ids.len() * rb {
            return ids.len() as u64;
        }
        let n = cols * self.dtype.size();
        let mut expect = vec![0u8; n];
        let mut bad = 0;
        for (&id, row) in ids.iter().zip(rows.chunks_exact(rb.max(1))) {
            fill_row(self.seed, self.dtype, cols, id, &mut expect);
            if row[..n] != expect[..] {
                bad += 1;
            }
        }
        bad
    }
}

#[cfg(test)]
mod tests {
    use engram_store::table::synth_row;

    use super::*;

    fn packed(check: &RowCheck, ids: &[u64]) -> Vec<u8> {
        ids.iter()
            .flat_map(|&id| synth_row(check.seed, check.dtype, check.dim, id))
            .collect()
    }

    #[test]
    fn accepts_synthetic_rows_and_catches_wrong_ones() {
        for dtype in DType::ALL {
            let check = RowCheck::new(7, dtype, 20);
            let ids = [0, 5, 5, 1 << 40];
            let mut rows = packed(&check, &ids);
            assert_eq!(check.full(&ids, &rows), 0, "{dtype}");
            assert_eq!(check.prefix(&ids, &rows), 0, "{dtype}");
            // A late column is only seen by the full check; a first column by both.
            let rb = check.row_bytes();
            rows[rb - 1] ^= 0x40;
            assert_eq!(check.full(&ids, &rows), 1, "{dtype}");
            assert_eq!(check.prefix(&ids, &rows), 0, "{dtype}");
            rows[2 * rb] ^= 0x01;
            assert_eq!(check.full(&ids, &rows), 2, "{dtype}");
            assert_eq!(check.prefix(&ids, &rows), 1, "{dtype}");
            assert_eq!(check.full(&ids, &rows[1..]), 4, "{dtype}");
        }
    }

    #[test]
    fn the_other_seeds_rows_are_wrong() {
        let check = RowCheck::new(1, DType::Bf16, 80);
        let ids: Vec<u64> = (0..100).collect();
        let rows = packed(&RowCheck::new(2, DType::Bf16, 80), &ids);
        assert_eq!(check.prefix(&ids, &rows), 100);
    }
}
