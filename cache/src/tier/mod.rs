//! The tiers a table's rows are served from, behind one trait: each serves the rows it holds
//! into place and reports what it missed, accepts rows offered from below, and owns its stats.
//!
//! One file per tier: [`RamTier`] (the row cache under a byte budget), [`NvmeTier`] (the table's
//! data files: addressing, in-flight sharing, checksum verification, error classification;
//! it holds every row and never promotes), `gpu` (the VRAM tier, feature `cuda`), and
//! [`MemoryTier`] (rows in a map, so every path runs in tests without disk or GPU). A
//! [`Cascade`](crate::Cascade) stacks them, fastest first.

mod error;
#[cfg(feature = "cuda")]
mod gpu;
mod memory;
mod nvme;
mod ram;
mod stats;

use futures::future::BoxFuture;

pub use error::{TaskEnd, TierError};
#[cfg(feature = "cuda")]
pub use gpu::{MAX_DEFERRED_REFRESHES, refresh_once, spawn_refresh};
pub use memory::MemoryTier;
pub use nvme::{NvmeFile, NvmeTier};
pub use ram::RamTier;
pub use stats::{TierKind, TierStats};

/// Rows asked of a tier: row `ids[k]` goes to row `place(k)` of the output.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// Row ids.
    pub ids: &'a [u64],
    /// Output row of each id; `None`: id `k` goes to row `k`.
    pub places: Option<&'a [usize]>,
}

impl<'a> Want<'a> {
    /// `ids[k]` into row `k`.
    pub fn packed(ids: &'a [u64]) -> Self {
        Self { ids, places: None }
    }

    /// Output row of `ids[k]`.
    #[inline]
    pub fn place(&self, k: usize) -> usize {
        self.places.map_or(k, |p| p[k])
    }

    /// Number of rows asked for.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing is asked for.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// Why rows are offered to a tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferReason {
    /// A lookup read them from a tier below.
    Read,
    /// A prefetch brought them in ahead of use.
    Prefetch,
}

/// Rows a tier below served, offered to a tier above for admission: row `ids[k]` is at row
/// `place(k)` of `rows`.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// Which rows, and where they lie in `rows`.
    pub want: Want<'a>,
    /// The output they were served into.
    pub rows: &'a [u8],
    /// Why.
    pub reason: OfferReason,
}

/// A tier of a table's rows.
pub trait Tier: Send + Sync + std::fmt::Debug {
    /// Which tier this is.
    fn kind(&self) -> TierKind;

    /// Writes every row of `want` this tier holds into its place in `out` (`row_bytes` per
    /// row) and pushes the index `k` of every row it does not hold onto `missed`, in order.
    /// On error `out` may hold some rows; the caller must not use them.
    fn serve<'a>(
        &'a self,
        want: Want<'a>,
        out: &'a mut [u8],
        missed: &'a mut Vec<usize>,
    ) -> BoxFuture<'a, Result<(), TierError>>;

    /// Rows served from below, for the tier to admit or ignore (a tier that holds everything,
    /// or fills itself in the background, ignores them).
    fn offer(&self, offer: Offer<'_>);

    /// Rows about to be used (a prefetch): a tier that fills itself from its own counts weighs
    /// them. Default: nothing.
    fn hint(&self, _ids: &[u64]) {}

    /// True if `row` is resident (records no access).
    fn contains(&self, row: u64) -> bool;

    /// Counters, residency and budget.
    fn stats(&self) -> TierStats;

    /// Zeroes the counters (residency stays).
    fn reset_stats(&self);

    /// This tier writes straight into device memory ([`DeviceTier`]), if it can.
    fn as_device(&self) -> Option<&dyn DeviceTier> {
        None
    }
}

/// A tier that writes rows straight into device memory of its GPU (the VRAM tier).
pub trait DeviceTier: Send + Sync {
    /// Writes the resident rows of `ids` into device memory at `dst` (`ids.len() * row_bytes`
    /// bytes the caller guarantees are valid device memory of this tier's context) and sets
    /// `hit[i]`; returns the hits.
    fn gather_to_device(
        &self,
        ids: &[u64],
        dst: u64,
        hit: &mut Vec<bool>,
    ) -> Result<u64, TierError>;

    /// Writes packed host rows into device memory at `dst`, row `i` at row `positions[i]`.
    fn scatter_to_device(
        &self,
        packed: &[u8],
        positions: &[u32],
        dst: u64,
    ) -> Result<(), TierError>;

    /// Shares the tier with a worker process on the same GPU (see `GpuTier::share`).
    #[cfg(feature = "cuda")]
    fn share(&self) -> Result<crate::gpu::SharedGpuTier, TierError>;
}
