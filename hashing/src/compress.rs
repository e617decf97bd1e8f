//! The compression map: raw tokenizer id -> compressed id.
//!
//! Engram hashes compressed ids, where tokens whose text normalizes alike (NFKC, NFD, accents
//! stripped, lowercase, whitespace collapsed) share one id. The map is built offline (see the
//! Python `engram_store.layout` tool) and stored as a 1-D `.npy` array indexed by raw id.

use std::path::Path;

use crate::error::{CompressError, CompressionMapError};
use crate::layout::Layout;
use crate::npy;

/// Raw token id -> compressed token id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionMap {
    ids: Vec<u32>,
    /// Largest compressed id + 1 (0 when empty).
    compressed_vocab_size: u64,
}

impl CompressionMap {
    /// A map from its table: `ids[raw]` is the compressed id of `raw`.
    pub fn from_ids(ids: Vec<u32>) -> Self {
        let compressed_vocab_size = ids.iter().max().map_or(0, |&max| u64::from(max) + 1);
        Self {
            ids,
            compressed_vocab_size,
        }
    }

    /// Parses a `.npy` file's bytes: a 1-D C-order array of little-endian int64, int32 or uint32
    /// values, each in `0..=u32::MAX` (format versions 1.0, 2.0, 3.0).
    pub fn from_npy_bytes(bytes: &[u8]) -> Result<Self, CompressionMapError> {
        npy::read_u32_ids(bytes).map(Self::from_ids)
    }

    /// Reads and parses a `.npy` file (see [`CompressionMap::from_npy_bytes`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, CompressionMapError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CompressionMapError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_npy_bytes(&bytes).map_err(|source| CompressionMapError::InFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The compressed id of one raw id.
    #[inline]
    pub fn compress(&self, raw_id: u32) -> Result<u32, CompressError> {
        self.ids
            .get(raw_id as usize)
            .copied()
            .ok_or(CompressError::UnknownRawId {
                raw_id,
                len: self.ids.len(),
            })
    }

    /// Compresses a sequence into `out` (cleared first; its capacity is reused). On error `out`
    /// holds the ids before the bad one.
    pub fn compress_into(&self, raw_ids: &[u32], out: &mut Vec<u32>) -> Result<(), CompressError> {
        out.clear();
        out.reserve(raw_ids.len());
        for (position, &raw_id) in raw_ids.iter().enumerate() {
            let id = self
                .ids
                .get(raw_id as usize)
                .ok_or(CompressError::UnknownRawIdAt {
                    position,
                    raw_id,
                    len: self.ids.len(),
                })?;
            out.push(*id);
        }
        Ok(())
    }

    /// Copies ids that are already compressed into `out` (cleared first), checking each is
    /// below `compressed_vocab_size`. On error `out` holds the ids before the bad one.
    pub fn copy_compressed_into(
        ids: &[u32],
        compressed_vocab_size: u32,
        out: &mut Vec<u32>,
    ) -> Result<(), CompressError> {
        out.clear();
        if let Some(position) = ids.iter().position(|&id| id >= compressed_vocab_size) {
            out.extend_from_slice(&ids[..position]);
            return Err(CompressError::NotCompressedAt {
                position,
                id: ids[position],
                compressed_vocab_size,
            });
        }
        out.extend_from_slice(ids);
        Ok(())
    }

    /// Compresses a sequence with a dead mask (empty, or one byte per id, non-zero = dead) into
    /// `out`: a dead token's raw id is not looked up (an image placeholder need not be in the
    /// map) and its slot holds 0, which the hasher never reads. On error `out` holds the ids
    /// before the bad one.
    pub fn compress_masked_into(
        &self,
        raw_ids: &[u32],
        dead: &[u8],
        out: &mut Vec<u32>,
    ) -> Result<(), CompressError> {
        if dead.is_empty() {
            return self.compress_into(raw_ids, out);
        }
        out.clear();
        out.reserve(raw_ids.len());
        for (position, &raw_id) in raw_ids.iter().enumerate() {
            if dead.get(position).is_some_and(|&d| d != 0) {
                out.push(0);
                continue;
            }
            let id = self
                .ids
                .get(raw_id as usize)
                .ok_or(CompressError::UnknownRawIdAt {
                    position,
                    raw_id,
                    len: self.ids.len(),
                })?;
            out.push(*id);
        }
        Ok(())
    }

    /// Number of raw ids covered (`0..len()`).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the map covers no raw id.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Largest compressed id + 1 (0 for an empty map). For a map that numbers its distinct
    /// normalized tokens densely this is the layout's `compressed_vocab_size`.
    pub fn compressed_vocab_size(&self) -> u64 {
        self.compressed_vocab_size
    }

    /// The table: `as_slice()[raw]` is the compressed id of `raw`.
    pub fn as_slice(&self) -> &[u32] {
        &self.ids
    }

    /// Checks that every compressed id has rows in `layout` (is below its
    /// `compressed_vocab_size`), naming the first raw id that does not.
    pub fn check_layout(&self, layout: &Layout) -> Result<(), CompressionMapError> {
        let limit = layout.compressed_vocab_size();
        match self.ids.iter().position(|&id| id >= limit) {
            None => Ok(()),
            Some(raw_id) => Err(CompressionMapError::OutsideLayout {
                raw_id,
                compressed_id: self.ids[raw_id],
                compressed_vocab_size: limit,
            }),
        }
    }
}
