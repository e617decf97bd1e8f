//! Engram hashing for engram-store: which table rows a token sequence reads.
//!
//! An Engram layer looks up, for every token position and every (n-gram order, head) pair `j`, one
//! row of an embedding table. This crate computes those row ids exactly as the reference
//! (numpy, int64) does, so that a server and a model agree bit for bit:
//!
//! - [`Layout`]: the shape of the tables of one model (multipliers and primes per layer), loaded
//!   from JSON and validated; [`Layout::demo`] and [`Layout::engram27b`] are built in.
//! - [`CompressionMap`]: raw tokenizer id -> compressed id, loaded from a `.npy` file.
//! - [`LayerHasher`]: compressed ids of a sequence -> row ids `[position][j]`, into a caller's
//!   buffer.
//! - [`EngramConfig`]: the `engram_*` keys of a DeepSeek-V4.1 `config.json`, and the V4.1 rule
//!   that builds a [`Layout`] from them and the tokenizer's compression map (primes, numpy
//!   multipliers via [`layer_multipliers`], pad id), checking every promise of the config.
//! - [`HashInput`]: a sequence with its context and per-token **dead** masks (image spans), for
//!   [`LayerHasher::rows_into`], which also computes only a range of hash columns.
//! - [`head_shard`]: the columns a tensor-parallel rank serves (vLLM's `engram_head_shard`).
//! - [`is_prime`]: the deterministic primality test the layout validation uses.
//!
//! ```
//! use engram_store_hashing::{LayerHasher, Layout};
//!
//! let layout = Layout::demo();
//! let hasher = LayerHasher::new(&layout, 1)?;
//! let mut rows = Vec::new();
//! hasher.row_ids_into(&[1134, 15695, 237], &[], &mut rows)?;
//! assert_eq!(rows.len(), 3 * layout.heads_total());
//! assert_eq!(rows[0], 456_765);
//! # Ok::<(), engram_store_hashing::HashError>(())
//! ```

mod compress;
mod divisor;
mod error;
mod hasher;
mod hf_config;
mod layout;
mod npy;
mod numpy_rng;
mod prime;
mod shard;

pub use compress::CompressionMap;
pub use error::{
    CompressError, CompressionMapError, EngramConfigError, HashError, LayoutError, ShardError,
};
pub use hasher::{HashInput, LayerHasher};
pub use hf_config::{EngramConfig, LAYER_SEED_STRIDE, layer_multipliers};
pub use layout::{LayerLayout, LayerSpec, Layout, LayoutSpec};
pub use prime::is_prime;
pub use shard::head_shard;
