//! Engram hashing for engram-store: which table rows a token sequence reads.
//!
//! An Engram layer looks up, for every token position and every (n-gram order, head) pair `j`, one
//! row of an embedding table. This crate computes those row ids exactly as the reference
//! (numpy, int64) does, so that a server and a model agree bit for bit:
//!
//! - [`Layout`]: the shape of the tables of one model (multipliers and primes per layer), loaded
//!   from JSON and validated; [`Layout::demo`] and [`Layout::engram27b`] are built in.
//! - [`CompressionMap`]: raw tokenizer id -> compressed id, loaded from a `.npy` file.
//! - [`is_prime`]: the deterministic primality test the layout validation uses.

mod compress;
mod error;
mod layout;
mod npy;
mod prime;

pub use compress::CompressionMap;
pub use error::{CompressError, CompressionMapError, HashError, LayoutError};
pub use layout::{LayerLayout, LayerSpec, Layout, LayoutSpec};
pub use prime::is_prime;
