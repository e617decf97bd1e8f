//! The RAM tier: a [`RowCache`] (slab arenas under a byte budget, a policy per shard) serving
//! batches in place, admitting the rows offered from below, and counting what the cache itself
//! does not: bytes served, its latency, rows brought in by prefetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use futures::future::BoxFuture;

use super::{Offer, OfferReason, Tier, TierError, TierKind, TierStats, Want};
use crate::{LatencyHistogram, RowCache};

/// The RAM tier of one table.
#[derive(Debug)]
pub struct RamTier {
    cache: RowCache,
    bytes: AtomicU64,
    prefetch_rows: AtomicU64,
    latency: LatencyHistogram,
}

impl RamTier {
    /// A tier over `cache`.
    pub fn new(cache: RowCache) -> Self {
        Self {
            cache,
            bytes: AtomicU64::new(0),
            prefetch_rows: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &RowCache {
        &self.cache
    }

    /// Serves `want` into `out`, synchronously (the cache never waits on I/O).
    pub fn serve_now(&self, want: Want<'_>, out: &mut [u8], missed: &mut Vec<usize>) {
        let start = Instant::now();
        let hits = self.cache.get_many_into(want.ids, want.places, out, missed);
        self.bytes
            .fetch_add(hits * self.cache.row_bytes() as u64, Ordering::Relaxed);
        self.latency.record(start.elapsed());
    }
}

impl Tier for RamTier {
    fn kind(&self) -> TierKind {
        TierKind::Ram
    }

    fn serve<'a>(
        &'a self,
        want: Want<'a>,
        out: &'a mut [u8],
        missed: &'a mut Vec<usize>,
    ) -> BoxFuture<'a, Result<(), TierError>> {
        self.serve_now(want, out, missed);
        Box::pin(std::future::ready(Ok(())))
    }

    fn offer(&self, offer: Offer<'_>) {
        let rb = self.cache.row_bytes();
        let prefetch = offer.reason == OfferReason::Prefetch;
        for (k, &row) in offer.want.ids.iter().enumerate() {
            let at = offer.want.place(k) * rb;
            let bytes = &offer.rows[at..at + rb];
            if prefetch {
                self.cache.insert_prefetched(row, bytes);
            } else {
                self.cache.insert(row, bytes);
            }
        }
        if prefetch {
            self.prefetch_rows
                .fetch_add(offer.want.len() as u64, Ordering::Relaxed);
        }
    }

    fn contains(&self, row: u64) -> bool {
        self.cache.contains(row)
    }

    fn stats(&self) -> TierStats {
        let s = self.cache.stats();
        TierStats {
            hits: s.hits,
            misses: s.misses,
            bytes: self.bytes.load(Ordering::Relaxed),
            resident_rows: s.resident_rows,
            resident_bytes: s.resident_rows * self.cache.row_bytes() as u64 + s.metadata_bytes,
            capacity_bytes: self.cache.budget_bytes(),
            prefetch_rows: self.prefetch_rows.load(Ordering::Relaxed),
            prefetch_hits: s.prefetch_hits,
            policy: self.cache.policy_name().into(),
            ..Default::default()
        }
        .with_latency(&self.latency)
    }

    fn reset_stats(&self) {
        self.cache.reset_counters();
        self.bytes.store(0, Ordering::Relaxed);
        self.prefetch_rows.store(0, Ordering::Relaxed);
        self.latency.reset();
    }
}
