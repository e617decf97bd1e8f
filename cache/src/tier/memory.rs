//! An in-memory tier: rows in a map, so the cascade and everything above it run in tests with no
//! disk and no GPU. As a backing tier ([`MemoryTier::backing`]) it holds every row of a table
//! and ignores offers; as a cache ([`MemoryTier::cache`]) it starts empty, admits every row
//! offered (no budget: tests only) and records what it was offered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use parking_lot::RwLock;

use super::{Offer, OfferReason, Tier, TierError, TierKind, TierStats, Want};

/// Rows in a map.
#[derive(Debug)]
pub struct MemoryTier {
    row_bytes: usize,
    rows: RwLock<HashMap<u64, Box<[u8]>>>,
    admits_offers: bool,
    hits: AtomicU64,
    misses: AtomicU64,
    offered: AtomicU64,
    prefetch_offered: AtomicU64,
}

impl MemoryTier {
    /// A tier holding row `r` = `rows[r * row_bytes..][..row_bytes]` for every `r`.
    pub fn backing(rows: &[u8], row_bytes: usize) -> Self {
        let map = rows
            .chunks_exact(row_bytes)
            .enumerate()
            .map(|(r, bytes)| (r as u64, bytes.into()))
            .collect();
        Self::with(row_bytes, map, false)
    }

    /// An empty tier that admits every row offered to it.
    pub fn cache(row_bytes: usize) -> Self {
        Self::with(row_bytes, HashMap::new(), true)
    }

    fn with(row_bytes: usize, rows: HashMap<u64, Box<[u8]>>, admits_offers: bool) -> Self {
        Self {
            row_bytes,
            rows: RwLock::new(rows),
            admits_offers,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            offered: AtomicU64::new(0),
            prefetch_offered: AtomicU64::new(0),
        }
    }

    /// Rows offered so far (by reads, by prefetches).
    pub fn offered(&self) -> (u64, u64) {
        (
            self.offered.load(Ordering::Relaxed),
            self.prefetch_offered.load(Ordering::Relaxed),
        )
    }
}

impl Tier for MemoryTier {
    fn kind(&self) -> TierKind {
        TierKind::Memory
    }

    fn serve<'a>(
        &'a self,
        want: Want<'a>,
        out: &'a mut [u8],
        missed: &'a mut Vec<usize>,
    ) -> BoxFuture<'a, Result<(), TierError>> {
        let rb = self.row_bytes;
        let rows = self.rows.read();
        let mut hits = 0;
        for (k, id) in want.ids.iter().enumerate() {
            match rows.get(id) {
                Some(bytes) => {
                    let at = want.place(k) * rb;
                    out[at..at + rb].copy_from_slice(bytes);
                    hits += 1;
                }
                None => missed.push(k),
            }
        }
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses
            .fetch_add(want.len() as u64 - hits, Ordering::Relaxed);
        Box::pin(std::future::ready(Ok(())))
    }

    fn offer(&self, offer: Offer<'_>) {
        let counter = match offer.reason {
            OfferReason::Read => &self.offered,
            OfferReason::Prefetch => &self.prefetch_offered,
        };
        counter.fetch_add(offer.want.len() as u64, Ordering::Relaxed);
        if !self.admits_offers {
            return;
        }
        let rb = self.row_bytes;
        let mut rows = self.rows.write();
        for (k, &id) in offer.want.ids.iter().enumerate() {
            let at = offer.want.place(k) * rb;
            rows.insert(id, offer.rows[at..at + rb].into());
        }
    }

    fn contains(&self, row: u64) -> bool {
        self.rows.read().contains_key(&row)
    }

    fn stats(&self) -> TierStats {
        let hits = self.hits.load(Ordering::Relaxed);
        let resident = self.rows.read().len() as u64;
        TierStats {
            hits,
            misses: self.misses.load(Ordering::Relaxed),
            bytes: hits * self.row_bytes as u64,
            resident_rows: resident,
            resident_bytes: resident * self.row_bytes as u64,
            prefetch_rows: self.prefetch_offered.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn reset_stats(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }
}
