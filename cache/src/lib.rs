//! engram-store's storage tiers and cache policies. Knows nothing of gRPC.
//!
//! - [`policy`]: replacement/admission policies over slots, one file each.
//! - [`RowCache`]: the RAM tier, a sharded slab arena of fixed-size rows under a byte budget.
//! - `gpu` (feature `cuda`): the VRAM tier, gather kernels and CUDA IPC delivery.
//! - [`io`]: aligned block reads from files, through io_uring (O_DIRECT) or a pread thread pool.
//! - [`tier`]: the tiers behind one trait (RAM, NVMe, GPU, in-memory), and [`Cascade`], which
//!   stacks a table's tiers and is the one place a request's way through them is written.
//! - [`RowLayout`], [`BlockSums`]: how rows sit in a table's blocks and the blocks' checksums,
//!   which the NVMe tier reads and verifies.

mod block_sums;
mod cascade;
#[cfg(feature = "cuda")]
pub mod gpu;
mod huge_pages;
pub mod io;
mod key_hash;
mod latency;
pub mod policy;
mod prefetch;
mod ram;
mod row_layout;
mod shared_rows;
pub mod tier;

pub use block_sums::{BlockSums, ChecksumKind};
pub use cascade::{Cascade, PREFETCH_CHUNK_ROWS};
pub use key_hash::{KeyHashBuilder, KeyHasher, mix64, shard_of};
pub use latency::{LatencyHistogram, LatencySnapshot};
pub use policy::{Admitted, Policy, SimPolicy};
pub use ram::{MIN_SHARD_BUDGET, PolicyFactory, RowCache, RowCacheBuilder, RowCacheStats};
pub use row_layout::RowLayout;
pub use shared_rows::SharedRowsFile;
pub use tier::{Tier, TierError, TierKind, TierStats};
