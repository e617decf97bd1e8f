//! The table layout of one Engram model: per layer, the hash multipliers and the prime modulus of
//! every (n-gram order, head) pair, which fix how many rows each layer's table has and where each
//! head's rows start.
//!
//! [`LayoutSpec`] is the plain JSON shape (the `layout` object of the shared test vectors);
//! [`Layout`] is a spec that passed validation, with derived offsets. Only validated layouts reach
//! the hasher, so the hot path needs no checks of its own beyond the token range.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::LayoutError;
use crate::prime::is_prime;

/// The Engram demo layout (vocab 646,400 per order, layers 1 and 15, row_dim 64).
const DEMO_JSON: &str = include_str!("../layouts/demo.json");
/// The Engram-27B layout (vocab 2,262,400 per order, layers 2 and 15, row_dim 80).
const ENGRAM27B_JSON: &str = include_str!("../layouts/engram27b.json");

/// A layout as written in JSON, not yet validated. Turn it into a [`Layout`] with
/// [`Layout::try_from`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayoutSpec {
    /// Number of compressed token ids; ids are `0..compressed_vocab_size`.
    pub compressed_vocab_size: u32,
    /// Compressed id standing for positions before the start of a sequence.
    pub pad_id: u32,
    /// Largest n-gram order; orders are `2..=max_ngram_size`.
    pub max_ngram_size: usize,
    /// Hash heads per n-gram order.
    pub n_head_per_ngram: usize,
    /// Elements per embedding row.
    pub row_dim: usize,
    /// One entry per Engram layer.
    pub layers: Vec<LayerSpec>,
}

/// One layer of a [`LayoutSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The transformer layer this Engram table belongs to.
    pub layer_id: u32,
    /// `multipliers[k]` multiplies the token `k` positions back; `max_ngram_size` odd numbers.
    pub multipliers: Vec<u64>,
    /// `primes[order - 2][head]`: the modulus, and so the row count, of each head.
    pub primes: Vec<Vec<u64>>,
}

/// A validated table layout.
///
/// Every multiplier is odd and small enough that `(compressed_vocab_size - 1) * multiplier` fits
/// `i64`, so `u64` arithmetic gives the same hashes as the int64 reference; every modulus is
/// prime; shapes agree with `max_ngram_size` and `n_head_per_ngram`; layer ids are unique.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LayoutSpec", into = "LayoutSpec")]
pub struct Layout {
    compressed_vocab_size: u32,
    pad_id: u32,
    max_ngram_size: usize,
    n_head_per_ngram: usize,
    row_dim: usize,
    layers: Vec<LayerLayout>,
}

/// One validated layer of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerLayout {
    layer_id: u32,
    multipliers: Vec<u64>,
    primes: Vec<Vec<u64>>,
    /// First row of each head, in j order (order 2 heads 0..H, order 3 heads 0..H, ...).
    offsets: Vec<u64>,
    /// Sum of all primes: the rows of this layer's table.
    row_count: u64,
}

impl Layout {
    /// Parses and validates a layout from JSON text (the shape of [`LayoutSpec`]).
    pub fn from_json_str(json: &str) -> Result<Self, LayoutError> {
        let spec: LayoutSpec = serde_json::from_str(json).map_err(LayoutError::Json)?;
        Self::try_from(spec)
    }

    /// Reads, parses and validates a layout JSON file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LayoutError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_str(&json).map_err(|source| LayoutError::InFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// The layout as pretty-printed JSON, in the shape [`Layout::from_json_str`] reads.
    pub fn to_json(&self) -> Result<String, LayoutError> {
        serde_json::to_string_pretty(&self.to_spec()).map_err(LayoutError::Json)
    }

    /// The plain spec this layout was built from.
    pub fn to_spec(&self) -> LayoutSpec {
        LayoutSpec {
            compressed_vocab_size: self.compressed_vocab_size,
            pad_id: self.pad_id,
            max_ngram_size: self.max_ngram_size,
            n_head_per_ngram: self.n_head_per_ngram,
            row_dim: self.row_dim,
            layers: self
                .layers
                .iter()
                .map(|layer| LayerSpec {
                    layer_id: layer.layer_id,
                    multipliers: layer.multipliers.clone(),
                    primes: layer.primes.clone(),
                })
                .collect(),
        }
    }

    /// The layout of the public Engram demo: DeepSeek-V3 compressed vocab, vocab 646,400 per
    /// n-gram order, layers 1 and 15, max n-gram 3, 8 heads per order, row_dim 64.
    pub fn demo() -> Self {
        Self::builtin(DEMO_JSON)
    }

    /// The layout of the paper's Engram-27B tables: vocab 2,262,400 per n-gram order, layers 2 and
    /// 15, max n-gram 3, 8 heads per order, row_dim 80.
    pub fn engram27b() -> Self {
        Self::builtin(ENGRAM27B_JSON)
    }

    fn builtin(json: &str) -> Self {
        match Self::from_json_str(json) {
            Ok(layout) => layout,
            // The files are part of the crate and checked by its tests; reaching this is a
            // build defect, not bad input.
            Err(e) => panic!("built-in layout is invalid: {e}"),
        }
    }

    /// Number of compressed token ids.
    pub fn compressed_vocab_size(&self) -> u32 {
        self.compressed_vocab_size
    }

    /// Compressed id used for positions before the start of a sequence.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// Largest n-gram order (orders are `2..=max_ngram_size`).
    pub fn max_ngram_size(&self) -> usize {
        self.max_ngram_size
    }

    /// Hash heads per n-gram order.
    pub fn n_head_per_ngram(&self) -> usize {
        self.n_head_per_ngram
    }

    /// Elements per embedding row.
    pub fn row_dim(&self) -> usize {
        self.row_dim
    }

    /// Row ids per token position and layer: `(max_ngram_size - 1) * n_head_per_ngram`.
    pub fn heads_total(&self) -> usize {
        (self.max_ngram_size - 1) * self.n_head_per_ngram
    }

    /// The layers, in file order.
    pub fn layers(&self) -> &[LayerLayout] {
        &self.layers
    }

    /// The layer with this id.
    pub fn layer(&self, layer_id: u32) -> Option<&LayerLayout> {
        self.layers.iter().find(|layer| layer.layer_id == layer_id)
    }
}

impl LayerLayout {
    /// The transformer layer this table belongs to.
    pub fn layer_id(&self) -> u32 {
        self.layer_id
    }

    /// `multipliers()[k]` multiplies the token `k` positions back.
    pub fn multipliers(&self) -> &[u64] {
        &self.multipliers
    }

    /// `primes()[order - 2][head]`.
    pub fn primes(&self) -> &[Vec<u64>] {
        &self.primes
    }

    /// First row id of each head, in j order (order 2 heads `0..H`, order 3 heads `0..H`, ...):
    /// exclusive prefix sums of the primes.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Rows in this layer's table: the sum of its primes.
    pub fn row_count(&self) -> u64 {
        self.row_count
    }

    /// The table rows that the columns `columns` (j order) own: one contiguous range, from the
    /// first column's offset to the end of the last column's rows. `None` for an empty range or
    /// one past the layer's columns.
    pub fn column_rows(&self, columns: std::ops::Range<usize>) -> Option<std::ops::Range<u64>> {
        if columns.start >= columns.end || columns.end > self.offsets.len() {
            return None;
        }
        let end = self
            .offsets
            .get(columns.end)
            .copied()
            .unwrap_or(self.row_count);
        Some(self.offsets[columns.start]..end)
    }
}

impl From<Layout> for LayoutSpec {
    fn from(layout: Layout) -> Self {
        layout.to_spec()
    }
}

impl TryFrom<LayoutSpec> for Layout {
    type Error = LayoutError;

    fn try_from(spec: LayoutSpec) -> Result<Self, Self::Error> {
        let LayoutSpec {
            compressed_vocab_size,
            pad_id,
            max_ngram_size,
            n_head_per_ngram,
            row_dim,
            layers,
        } = spec;
        if max_ngram_size < 2 {
            return Err(LayoutError::NgramTooSmall(max_ngram_size));
        }
        if n_head_per_ngram == 0 {
            return Err(LayoutError::NoHeads);
        }
        if row_dim == 0 {
            return Err(LayoutError::ZeroRowDim);
        }
        if pad_id >= compressed_vocab_size {
            return Err(LayoutError::PadOutOfRange {
                pad_id,
                compressed_vocab_size,
            });
        }
        if layers.is_empty() {
            return Err(LayoutError::NoLayers);
        }
        // pad_id < compressed_vocab_size, so this does not underflow.
        let max_id = compressed_vocab_size - 1;
        let mut seen = HashSet::with_capacity(layers.len());
        let layers = layers
            .into_iter()
            .map(|layer| {
                if !seen.insert(layer.layer_id) {
                    return Err(LayoutError::DuplicateLayer(layer.layer_id));
                }
                validate_layer(layer, max_id, max_ngram_size, n_head_per_ngram)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            compressed_vocab_size,
            pad_id,
            max_ngram_size,
            n_head_per_ngram,
            row_dim,
            layers,
        })
    }
}

/// Checks one layer against the layout's shape and computes its offsets.
fn validate_layer(
    layer: LayerSpec,
    max_id: u32,
    max_ngram_size: usize,
    n_head_per_ngram: usize,
) -> Result<LayerLayout, LayoutError> {
    let LayerSpec {
        layer_id,
        multipliers,
        primes,
    } = layer;
    if multipliers.len() != max_ngram_size {
        return Err(LayoutError::MultiplierCount {
            layer_id,
            expected: max_ngram_size,
            found: multipliers.len(),
        });
    }
    for (index, &value) in multipliers.iter().enumerate() {
        if value % 2 == 0 {
            return Err(LayoutError::EvenMultiplier {
                layer_id,
                index,
                value,
            });
        }
        if u128::from(max_id) * u128::from(value) > i64::MAX as u128 {
            return Err(LayoutError::MultiplierOverflow {
                layer_id,
                index,
                value,
                max_id,
            });
        }
    }
    if primes.len() != max_ngram_size - 1 {
        return Err(LayoutError::PrimeOrderCount {
            layer_id,
            expected: max_ngram_size - 1,
            found: primes.len(),
        });
    }
    let mut offsets = Vec::with_capacity((max_ngram_size - 1) * n_head_per_ngram);
    let mut row_count: u64 = 0;
    for (order_index, heads) in primes.iter().enumerate() {
        let order = order_index + 2;
        if heads.len() != n_head_per_ngram {
            return Err(LayoutError::PrimeHeadCount {
                layer_id,
                order,
                expected: n_head_per_ngram,
                found: heads.len(),
            });
        }
        for (head, &value) in heads.iter().enumerate() {
            if !is_prime(value) {
                return Err(LayoutError::NotPrime {
                    layer_id,
                    order,
                    head,
                    value,
                });
            }
            offsets.push(row_count);
            row_count = row_count
                .checked_add(value)
                .ok_or(LayoutError::RowCountOverflow { layer_id })?;
        }
    }
    Ok(LayerLayout {
        layer_id,
        multipliers,
        primes,
        offsets,
        row_count,
    })
}

#[cfg(test)]
mod tests {
    use super::Layout;

    #[test]
    fn builtin_layouts_are_valid() {
        for layout in [Layout::demo(), Layout::engram27b()] {
            assert_eq!(layout.heads_total(), 16);
            assert_eq!(layout.layers().len(), 2);
            for layer in layout.layers() {
                let sum: u64 = layer.primes().iter().flatten().sum();
                assert_eq!(layer.row_count(), sum);
                assert_eq!(layer.offsets()[0], 0);
            }
        }
    }

    #[test]
    fn demo_offsets_are_prefix_sums_in_j_order() {
        let layout = Layout::demo();
        let layer = layout.layer(1).expect("demo has layer 1");
        assert_eq!(&layer.offsets()[..3], &[0, 646_403, 646_403 + 646_411]);
        let order2: u64 = layer.primes()[0].iter().sum();
        assert_eq!(layer.offsets()[8], order2);
        assert!(layout.layer(2).is_none());
    }
}
