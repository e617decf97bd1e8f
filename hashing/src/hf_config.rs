//! DeepSeek-V4.1 layouts: the `engram_*` keys of a Hugging Face `config.json` and the rule that
//! turns them (with the tokenizer's compression map) into a [`Layout`].
//!
//! The rule, as vLLM's `EngramLayout` and `compute_hash_multipliers` apply it:
//!
//! - primes: for every layer (in `engram_layer_ids` order) and every n-gram order `2..=max`, the
//!   search restarts at `engram_vocab_size - 1` and each of the `engram_n_heads` heads takes the
//!   smallest prime above the previous head's (above the start, for the first head) that no head
//!   of any order or layer has taken yet; the primes of a layer must sum to its
//!   `engram_num_embeddings` entry, its table's row count;
//! - multipliers: `numpy.random.default_rng(10007 * layer_id).integers(0, bound,
//!   size=max_ngram_size, dtype=int64) * 2 + 1` with `bound = max(1, (2^63 - 1) //
//!   compressed_vocab_size // 2)` (no seed term);
//! - pad: the compressed id of `engram_pad_token_id`;
//! - compressed vocabulary: the map's, which must equal `engram_compressed_vocab_size`.
//!
//! With a single vocabulary size for every order this is also the public Engram demo's rule at
//! seed 0, so the demo layout is a V4.1-style layout too (the tests hold them equal).

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::compress::CompressionMap;
use crate::error::EngramConfigError;
use crate::layout::{LayerSpec, Layout, LayoutSpec};
use crate::numpy_rng::Pcg64;
use crate::prime::is_prime;

/// Seed stride between layers: layer `l` draws its multipliers from `default_rng(10007 * l)`
/// (the demo adds its `seed`).
pub const LAYER_SEED_STRIDE: u64 = 10_007;

/// The Engram keys of a DeepSeek-V4.1 `config.json` (under `text_config`, or at the top level of
/// a text-only config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngramConfig {
    /// `engram_layer_ids`: the transformer layers with an Engram table.
    #[serde(rename = "engram_layer_ids")]
    pub layer_ids: Vec<u32>,
    /// `engram_num_embeddings`: rows of each layer's table, in `layer_ids` order.
    #[serde(rename = "engram_num_embeddings")]
    pub num_embeddings: Vec<u64>,
    /// `engram_max_ngram_size`: n-gram orders are `2..=max_ngram_size`.
    #[serde(rename = "engram_max_ngram_size")]
    pub max_ngram_size: usize,
    /// `engram_n_heads`: hash heads per n-gram order.
    #[serde(rename = "engram_n_heads")]
    pub n_heads: usize,
    /// `engram_head_dim`: elements per table row.
    #[serde(rename = "engram_head_dim")]
    pub head_dim: usize,
    /// `engram_vocab_size`: the prime search of every order starts above `vocab_size - 1`.
    #[serde(rename = "engram_vocab_size")]
    pub vocab_size: u64,
    /// `engram_compressed_vocab_size`: ids of the tokenizer's compression map.
    #[serde(rename = "engram_compressed_vocab_size")]
    pub compressed_vocab_size: u64,
    /// `engram_pad_token_id`: the raw token id whose compressed id pads.
    #[serde(rename = "engram_pad_token_id")]
    pub pad_token_id: u32,
}

/// The JSON keys, in [`EngramConfig`] field order.
const KEYS: [&str; 8] = [
    "engram_layer_ids",
    "engram_num_embeddings",
    "engram_max_ngram_size",
    "engram_n_heads",
    "engram_head_dim",
    "engram_vocab_size",
    "engram_compressed_vocab_size",
    "engram_pad_token_id",
];

impl EngramConfig {
    /// The Engram keys of a `config.json`'s text: taken from `text_config` when it has
    /// `engram_layer_ids`, else from the top level. Other keys are ignored.
    pub fn from_config_json(json: &str) -> Result<Self, EngramConfigError> {
        let root: serde_json::Value =
            serde_json::from_str(json).map_err(EngramConfigError::Json)?;
        let scope = match root.get("text_config") {
            Some(text) if text.get(KEYS[0]).is_some() => text,
            _ => &root,
        };
        let mut picked = serde_json::Map::new();
        for key in KEYS {
            let value = scope.get(key).ok_or(EngramConfigError::MissingKey(key))?;
            picked.insert(key.to_owned(), value.clone());
        }
        let config: Self = serde_json::from_value(serde_json::Value::Object(picked))
            .map_err(EngramConfigError::Json)?;
        config.check()?;
        Ok(config)
    }

    /// Reads a `config.json` (see [`EngramConfig::from_config_json`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EngramConfigError> {
        let path = path.as_ref();
        let json = std::fs::read_to_string(path).map_err(|source| EngramConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_config_json(&json).map_err(|source| EngramConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(source),
        })
    }

    /// Checks the keys against each other (not yet against the primes or a tokenizer).
    pub fn check(&self) -> Result<(), EngramConfigError> {
        let bad = |key, value: String, why| Err(EngramConfigError::BadValue { key, value, why });
        if self.layer_ids.is_empty() {
            return bad(
                "engram_layer_ids",
                "[]".into(),
                "it must name at least one layer",
            );
        }
        if self.layer_ids.len() != self.num_embeddings.len() {
            return Err(EngramConfigError::LayerCount {
                layers: self.layer_ids.len(),
                num_embeddings: self.num_embeddings.len(),
            });
        }
        let mut seen = HashSet::new();
        if let Some(dup) = self.layer_ids.iter().find(|&&id| !seen.insert(id)) {
            return bad(
                "engram_layer_ids",
                format!("{:?} (layer {dup} twice)", self.layer_ids),
                "layer ids must be distinct",
            );
        }
        if self.max_ngram_size < 2 {
            return bad(
                "engram_max_ngram_size",
                self.max_ngram_size.to_string(),
                "it must be at least 2",
            );
        }
        if self.n_heads == 0 {
            return bad("engram_n_heads", "0".into(), "it must be at least 1");
        }
        if self.head_dim == 0 {
            return bad("engram_head_dim", "0".into(), "it must be at least 1");
        }
        if self.vocab_size < 2 {
            return bad(
                "engram_vocab_size",
                self.vocab_size.to_string(),
                "it must be at least 2",
            );
        }
        if self.compressed_vocab_size == 0 || self.compressed_vocab_size > u64::from(u32::MAX) {
            return bad(
                "engram_compressed_vocab_size",
                self.compressed_vocab_size.to_string(),
                "it must be between 1 and 2^32 - 1",
            );
        }
        Ok(())
    }

    /// Hash columns per position: `(max_ngram_size - 1) * n_heads`.
    pub fn heads_total(&self) -> usize {
        (self.max_ngram_size - 1) * self.n_heads
    }

    /// `primes[layer][order - 2][head]` by the V4.1 rule (see the module doc), layers in
    /// `layer_ids` order.
    pub fn primes(&self) -> Vec<Vec<Vec<u64>>> {
        let mut taken = HashSet::new();
        self.layer_ids
            .iter()
            .map(|_| {
                (2..=self.max_ngram_size)
                    .map(|_| {
                        let mut current = self.vocab_size - 1;
                        (0..self.n_heads)
                            .map(|_| {
                                current = next_free_prime(current, &taken);
                                taken.insert(current);
                                current
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    /// The layout, given the tokenizer's compression map: checks that the map has
    /// `engram_compressed_vocab_size` ids and covers `engram_pad_token_id`, then builds it as
    /// [`EngramConfig::layout_with_pad`] does with the pad token's compressed id.
    pub fn layout(&self, map: &CompressionMap) -> Result<Layout, EngramConfigError> {
        if map.compressed_vocab_size() != self.compressed_vocab_size {
            return Err(EngramConfigError::CompressedVocab {
                config: self.compressed_vocab_size,
                tokenizer: map.compressed_vocab_size(),
            });
        }
        let pad_id =
            map.compress(self.pad_token_id)
                .map_err(|_| EngramConfigError::PadOutsideMap {
                    pad_token_id: self.pad_token_id,
                    map_len: map.len(),
                })?;
        let layout = self.layout_with_pad(pad_id)?;
        // Every compressed id is below the map's size, which is the layout's: cannot fail, but
        // keeps the two checks in one place.
        map.check_layout(&layout)
            .map_err(|_| EngramConfigError::CompressedVocab {
                config: self.compressed_vocab_size,
                tokenizer: map.compressed_vocab_size(),
            })?;
        Ok(layout)
    }

    /// The layout with compressed pad id `pad_id`: primes by the V4.1 rule, each layer's checked
    /// to sum to its `engram_num_embeddings`, multipliers from `default_rng(10007 * layer_id)`.
    pub fn layout_with_pad(&self, pad_id: u32) -> Result<Layout, EngramConfigError> {
        self.check()?;
        let compressed_vocab_size = self.compressed_vocab_size as u32;
        let start = self.vocab_size - 1;
        let layers = self
            .layer_ids
            .iter()
            .zip(&self.num_embeddings)
            .zip(self.primes())
            .map(|((&layer_id, &rows), primes)| {
                let primes_sum: u64 = primes.iter().flatten().sum();
                if primes_sum != rows {
                    return Err(EngramConfigError::RowCount {
                        layer_id,
                        config: rows,
                        primes_sum,
                        start,
                    });
                }
                Ok(LayerSpec {
                    layer_id,
                    multipliers: layer_multipliers(
                        LAYER_SEED_STRIDE * u64::from(layer_id),
                        self.max_ngram_size,
                        compressed_vocab_size,
                    ),
                    primes,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Layout::try_from(LayoutSpec {
            compressed_vocab_size,
            pad_id,
            max_ngram_size: self.max_ngram_size,
            n_head_per_ngram: self.n_heads,
            row_dim: self.head_dim,
            layers,
        })
        .map_err(EngramConfigError::Layout)
    }
}

/// The smallest prime above `after` that is not in `taken`.
fn next_free_prime(after: u64, taken: &HashSet<u64>) -> u64 {
    let mut candidate = after + 1;
    while !is_prime(candidate) || taken.contains(&candidate) {
        candidate += 1;
    }
    candidate
}

/// The odd hash multipliers numpy draws for one layer: `default_rng(rng_seed).integers(0, bound,
/// size=max_ngram_size, dtype=int64) * 2 + 1`, `bound = max(1, (2^63 - 1) //
/// compressed_vocab_size // 2)`. DeepSeek-V4.1 seeds with `10007 * layer_id`, the Engram demo with
/// `seed + 10007 * layer_id`.
///
/// ```
/// use engram_store_hashing::{Layout, layer_multipliers};
/// let demo = Layout::demo();
/// let layer = demo.layer(15).expect("demo layer 15");
/// assert_eq!(layer_multipliers(10_007 * 15, 3, demo.compressed_vocab_size()), layer.multipliers());
/// ```
pub fn layer_multipliers(
    rng_seed: u64,
    max_ngram_size: usize,
    compressed_vocab_size: u32,
) -> Vec<u64> {
    let bound = (i64::MAX as u64 / u64::from(compressed_vocab_size.max(1)) / 2).max(1);
    Pcg64::from_seed(rng_seed)
        .integers_below(bound, max_ngram_size)
        .into_iter()
        .map(|v| v * 2 + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::EngramConfig;
    use crate::error::EngramConfigError;

    /// The Engram keys of DeepSeek-V4.1-Flash as the issue gives its tables: layers 1 and 14,
    /// 2..4-grams x 8 heads, 256-element rows, 384,006,168 and 384,016,682 rows.
    fn v41_flash() -> EngramConfig {
        EngramConfig {
            layer_ids: vec![1, 14],
            num_embeddings: vec![384_006_168, 384_016_682],
            max_ngram_size: 4,
            n_heads: 8,
            head_dim: 256,
            vocab_size: 16_000_000,
            compressed_vocab_size: 100_000,
            pad_token_id: 0,
        }
    }

    #[test]
    fn v41_flash_row_counts_follow_from_the_prime_rule() {
        let config = v41_flash();
        let primes = config.primes();
        let sums: Vec<u64> = primes
            .iter()
            .map(|layer| layer.iter().flatten().sum())
            .collect();
        assert_eq!(sums, config.num_embeddings);
        let all: Vec<u64> = primes.iter().flatten().flatten().copied().collect();
        assert_eq!(all.len(), 48);
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 48, "no prime is reused");
        assert!(all.iter().all(|&p| p >= 16_000_000));
        let layout = config
            .layout_with_pad(0)
            .expect("the real shape is consistent");
        assert_eq!(layout.heads_total(), 24);
        assert_eq!(layout.layer(14).map(|l| l.row_count()), Some(384_016_682));
    }

    #[test]
    fn a_row_count_that_is_not_the_sum_of_primes_names_both() {
        let mut config = v41_flash();
        config.num_embeddings[1] += 1;
        match config.layout_with_pad(0) {
            Err(e @ EngramConfigError::RowCount { .. }) => {
                let message = e.to_string();
                assert!(message.contains("384016683"), "{message}");
                assert!(message.contains("384016682"), "{message}");
                assert!(message.contains("layer 14"), "{message}");
            }
            other => panic!("expected a row count error, got {other:?}"),
        }
    }

    #[test]
    fn reads_text_config_or_the_top_level() {
        let keys = serde_json::to_value(v41_flash()).expect("serialize");
        let nested = serde_json::json!({"model_type": "deepseek_v41", "hidden_size": 4096,
            "text_config": keys.clone()});
        let parsed = EngramConfig::from_config_json(&nested.to_string()).expect("nested");
        assert_eq!(parsed, v41_flash());
        let flat = EngramConfig::from_config_json(&keys.to_string()).expect("flat");
        assert_eq!(flat, v41_flash());
        let mut missing = keys.clone();
        missing
            .as_object_mut()
            .expect("object")
            .remove("engram_head_dim");
        let err = EngramConfig::from_config_json(&missing.to_string()).expect_err("missing key");
        assert!(err.to_string().contains("engram_head_dim"), "{err}");
        let mut short = keys;
        short["engram_num_embeddings"] = serde_json::json!([384_006_168u64]);
        let err = EngramConfig::from_config_json(&short.to_string()).expect_err("short list");
        assert!(matches!(
            err,
            EngramConfigError::LayerCount {
                layers: 2,
                num_embeddings: 1
            }
        ));
    }
}
