//! engram-store's storage tiers and cache policies. Knows nothing of gRPC.
//!
//! - [`policy`]: replacement/admission policies over slots, one file each.
//! - [`RowCache`]: the RAM tier, a sharded slab arena of fixed-size rows under a byte budget.
//! - `gpu` (feature `cuda`): the VRAM tier, gather kernels and CUDA IPC delivery.
//! - [`io`]: aligned block reads from files, through io_uring (O_DIRECT) or a pread thread pool.

#[cfg(feature = "cuda")]
pub mod gpu;
mod huge_pages;
pub mod io;
mod key_hash;
mod latency;
pub mod policy;
mod prefetch;
mod ram;

pub use key_hash::{KeyHashBuilder, KeyHasher, mix64, shard_of};
pub use latency::{LatencyHistogram, LatencySnapshot};
pub use policy::{Admitted, Policy, SimPolicy};
pub use ram::{MIN_SHARD_BUDGET, PolicyFactory, RowCache, RowCacheBuilder, RowCacheStats};
