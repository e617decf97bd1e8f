//! A table's tiers stacked fastest first: a request's way through them reads top-down here and
//! nowhere else. Each tier serves what the tiers above it missed; what a tier below served is
//! offered, by the cascade, to the tiers above (no tier calls another).
//!
//! Three ways in: [`Cascade::serve`] (rows into host memory), [`Cascade::serve_to_device`] (rows
//! into device memory, when the top tier is a [`DeviceTier`]: hits gathered on the device,
//! misses read from the tiers below by several tasks and scattered in), and
//! [`Cascade::prefetch`] (rows no cache tier holds are read from the bottom tier and offered to
//! every tier above as prefetched; every tier is hinted).

use std::ops::Range;
use std::sync::Arc;

use crate::tier::{DeviceTier, Offer, OfferReason, Tier, TierError, Want};

/// Below a top [`DeviceTier`], misses are read by up to this many tasks at once, each of at
/// least [`FILL_MIN_ROWS`] rows: the RAM tier's shards serve them in parallel, and one task took
/// 4.4 ms for the 6,000 misses of a 65,536-row batch (H200 host, 16 cores, 2026-11-29).
const FILL_TASKS: usize = 16;
const FILL_MIN_ROWS: usize = 256;

/// A prefetch reads at most this many rows at a time, so its scratch memory stays bounded.
pub const PREFETCH_CHUNK_ROWS: usize = 4096;

/// The tiers of one table, fastest first; the last holds every row.
#[derive(Debug)]
pub struct Cascade {
    tiers: Vec<Arc<dyn Tier>>,
    row_bytes: usize,
}

impl Cascade {
    /// Stacks `tiers` (fastest first; the last must hold every row) of `row_bytes`-byte rows.
    pub fn new(tiers: Vec<Arc<dyn Tier>>, row_bytes: usize) -> Self {
        Self { tiers, row_bytes }
    }

    /// The tiers, fastest first.
    pub fn tiers(&self) -> &[Arc<dyn Tier>] {
        &self.tiers
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Writes the rows of `want` into their places in `out` (host memory, `row_bytes` per
    /// row). On error `out` may hold some rows; the caller must not use them.
    pub async fn serve(self: &Arc<Self>, want: Want<'_>, out: &mut [u8]) -> Result<(), TierError> {
        if self.top_is_device() && want.len() > FILL_MIN_ROWS {
            // The device tier answers in one synchronous gather; the host tiers below do the
            // real work for its misses, in parallel.
            let mut missed = Vec::new();
            self.tiers[0].serve(want, out, &mut missed).await?;
            if missed.is_empty() {
                return Ok(());
            }
            let ids: Vec<u64> = missed.iter().map(|&k| want.ids[k]).collect();
            let rows = self.fill_below_top(ids).await?;
            let rb = self.row_bytes;
            for (row, &k) in rows.chunks_exact(rb).zip(&missed) {
                let at = want.place(k) * rb;
                out[at..at + rb].copy_from_slice(row);
            }
            return Ok(());
        }
        self.serve_levels(0..self.tiers.len(), 0, OfferReason::Read, want, out)
            .await
    }

    /// Writes the rows of `ids` into device memory at `dst` (`ids.len() * row_bytes` bytes that
    /// the caller guarantees are valid device memory of the top tier's GPU): hits by the top
    /// tier's gather, misses read from the tiers below and scattered in. Returns the top tier's
    /// hits; `None` when the top tier cannot write device memory.
    pub async fn serve_to_device(
        self: &Arc<Self>,
        ids: &[u64],
        dst: u64,
    ) -> Option<Result<u64, TierError>> {
        let device = self.tiers.first()?.as_device()?;
        Some(self.serve_to_device_with(device, ids, dst).await)
    }

    async fn serve_to_device_with(
        self: &Arc<Self>,
        device: &dyn DeviceTier,
        ids: &[u64],
        dst: u64,
    ) -> Result<u64, TierError> {
        let start = std::time::Instant::now();
        let mut hit = Vec::with_capacity(ids.len());
        let hits = tokio::task::block_in_place(|| device.gather_to_device(ids, dst, &mut hit))?;
        let gathered = start.elapsed();
        let miss_positions: Vec<u32> = (0..ids.len() as u32)
            .filter(|&i| !hit[i as usize])
            .collect();
        let (mut filled, mut scattered) = (gathered, gathered);
        if !miss_positions.is_empty() {
            let miss_ids = miss_positions.iter().map(|&i| ids[i as usize]).collect();
            let packed = self.fill_below_top(miss_ids).await?;
            filled = start.elapsed();
            tokio::task::block_in_place(|| {
                device.scatter_to_device(&packed, &miss_positions, dst)
            })?;
            scattered = start.elapsed();
        }
        // Where a write into device memory spends its time (RUST_LOG=engram_store::gpu_stages=debug).
        tracing::debug!(
            target: "engram_store::gpu_stages",
            rows = ids.len(),
            hits,
            gather_us = gathered.as_micros() as u64,
            fill_us = (filled - gathered).as_micros() as u64,
            scatter_us = (scattered - filled).as_micros() as u64,
            "into device"
        );
        Ok(hits)
    }

    /// Brings the rows of `ids` that no cache tier holds up from the bottom tier, offering them
    /// to every tier above as prefetched, in chunks of [`PREFETCH_CHUNK_ROWS`]; every tier is
    /// hinted that all of `ids` are about to be used. Returns the rows read.
    pub async fn prefetch(&self, ids: &[u64]) -> Result<usize, TierError> {
        let Some(bottom) = self.tiers.len().checked_sub(1) else {
            return Ok(0);
        };
        for tier in &self.tiers {
            tier.hint(ids);
        }
        let caches = &self.tiers[..bottom];
        let mut scratch = vec![0u8; ids.len().min(PREFETCH_CHUNK_ROWS) * self.row_bytes];
        let mut read = 0;
        // Chunk by chunk, yielding between chunks: a prefetch is background work and must not
        // hold a runtime worker from the lookups beside it.
        for chunk in ids.chunks(PREFETCH_CHUNK_ROWS) {
            let cold: Vec<u64> = chunk
                .iter()
                .copied()
                .filter(|&id| !caches.iter().any(|t| t.contains(id)))
                .collect();
            if !cold.is_empty() {
                let out = &mut scratch[..cold.len() * self.row_bytes];
                self.serve_levels(
                    bottom..bottom + 1,
                    0,
                    OfferReason::Prefetch,
                    Want::packed(&cold),
                    out,
                )
                .await?;
                read += cold.len();
            }
            tokio::task::yield_now().await;
        }
        Ok(read)
    }

    /// Serves `want` from the tiers `levels`, each the misses of the one before; rows served by
    /// a tier are offered to the tiers from `offer_from` up to it, for `reason`.
    async fn serve_levels(
        &self,
        levels: Range<usize>,
        offer_from: usize,
        reason: OfferReason,
        want: Want<'_>,
        out: &mut [u8],
    ) -> Result<(), TierError> {
        let mut missed = Vec::new();
        let (mut ids, mut places): (Vec<u64>, Vec<usize>) = (Vec::new(), Vec::new());
        let mut first = true;
        // A row not yet served, if any.
        let mut left = want.ids.first().copied();
        for level in levels {
            let current = if first {
                want
            } else {
                Want {
                    ids: &ids,
                    places: Some(&places),
                }
            };
            first = false;
            missed.clear();
            self.tiers[level].serve(current, out, &mut missed).await?;
            if offer_from < level {
                self.offer_up(offer_from..level, reason, current, &mut missed, out);
            }
            if missed.is_empty() {
                return Ok(());
            }
            let next_ids: Vec<u64> = missed.iter().map(|&k| current.ids[k]).collect();
            let next_places: Vec<usize> = missed.iter().map(|&k| current.place(k)).collect();
            ids = next_ids;
            places = next_places;
            left = ids.first().copied();
        }
        match left {
            Some(row) => Err(TierError::NotHeld { row }),
            None => Ok(()),
        }
    }

    /// Offers the rows of `served` that are not in `missed` (sorted here) to `tiers`.
    fn offer_up(
        &self,
        tiers: Range<usize>,
        reason: OfferReason,
        served: Want<'_>,
        missed: &mut [usize],
        out: &[u8],
    ) {
        if missed.is_empty() {
            for tier in &self.tiers[tiers] {
                tier.offer(Offer {
                    want: served,
                    rows: out,
                    reason,
                });
            }
            return;
        }
        missed.sort_unstable();
        let mut ids = Vec::with_capacity(served.len() - missed.len());
        let mut places = Vec::with_capacity(ids.capacity());
        let mut skip = missed.iter().peekable();
        for (k, &id) in served.ids.iter().enumerate() {
            if skip.peek() == Some(&&k) {
                skip.next();
                continue;
            }
            ids.push(id);
            places.push(served.place(k));
        }
        let want = Want {
            ids: &ids,
            places: Some(&places),
        };
        for tier in &self.tiers[tiers] {
            tier.offer(Offer {
                want,
                rows: out,
                reason,
            });
        }
    }

    fn top_is_device(&self) -> bool {
        self.tiers.first().is_some_and(|t| t.as_device().is_some())
    }

    /// The rows of `ids` from the tiers below the top one, packed in order, read by up to
    /// [`FILL_TASKS`] tasks at once.
    pub async fn fill_below_top(self: &Arc<Self>, ids: Vec<u64>) -> Result<Vec<u8>, TierError> {
        let rb = self.row_bytes;
        let levels = 1.min(self.tiers.len())..self.tiers.len();
        let per_task = ids.len().div_ceil(FILL_TASKS).max(FILL_MIN_ROWS);
        if ids.len() <= per_task {
            let mut rows = vec![0u8; ids.len() * rb];
            let from = levels.start;
            self.serve_levels(
                levels,
                from,
                OfferReason::Read,
                Want::packed(&ids),
                &mut rows,
            )
            .await?;
            return Ok(rows);
        }
        // The caller serves the first chunk itself while tasks serve the others: it would only
        // wait otherwise, and a small fill (a decode step's misses) then needs one task woken,
        // not two.
        let mut chunks = ids.chunks(per_task);
        let first = chunks.next().unwrap_or(&[]);
        let tasks: Vec<_> = chunks
            .map(|chunk| {
                let (this, chunk, levels) = (self.clone(), chunk.to_vec(), levels.clone());
                tokio::spawn(async move {
                    let mut rows = vec![0u8; chunk.len() * rb];
                    let from = levels.start;
                    this.serve_levels(
                        levels,
                        from,
                        OfferReason::Read,
                        Want::packed(&chunk),
                        &mut rows,
                    )
                    .await
                    .map(|()| rows)
                })
            })
            .collect();
        let mut packed = vec![0u8; ids.len() * rb];
        let (head, tail) = packed.split_at_mut(first.len() * rb);
        let from = levels.start;
        self.serve_levels(levels, from, OfferReason::Read, Want::packed(first), head)
            .await?;
        let mut at = 0;
        for task in tasks {
            let rows = task.await??;
            tail[at..at + rows.len()].copy_from_slice(&rows);
            at += rows.len();
        }
        Ok(packed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::{MemoryTier, TierKind};

    const RB: usize = 4;

    fn table(rows: u64) -> Vec<u8> {
        (0..rows)
            .flat_map(|r| (r as u32 * 7 + 1).to_le_bytes())
            .collect()
    }

    fn row(r: u64) -> [u8; RB] {
        (r as u32 * 7 + 1).to_le_bytes()
    }

    fn stack(rows: u64) -> (Arc<Cascade>, Arc<MemoryTier>, Arc<MemoryTier>) {
        let cache = Arc::new(MemoryTier::cache(RB));
        let backing = Arc::new(MemoryTier::backing(&table(rows), RB));
        let cascade = Arc::new(Cascade::new(
            vec![cache.clone() as Arc<dyn Tier>, backing.clone()],
            RB,
        ));
        (cascade, cache, backing)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fill_split_over_tasks_packs_every_row_in_order() {
        let (cascade, _, _) = stack(100_000);
        // Sizes below one task's share, at it, and over several tasks (the caller serving the
        // first chunk itself), duplicates and a descending run included.
        for n in [0usize, 1, FILL_MIN_ROWS, FILL_MIN_ROWS + 1, 5_000, 70_001] {
            let ids: Vec<u64> = (0..n as u64)
                .map(|i| (i * 7_919 + 13) % 100_000)
                .chain((0..n as u64 / 3).rev())
                .collect();
            let packed = cascade.fill_below_top(ids.clone()).await.expect("fill");
            assert_eq!(packed.len(), ids.len() * RB, "{n}");
            for (k, &id) in ids.iter().enumerate() {
                assert_eq!(&packed[k * RB..(k + 1) * RB], &row(id), "{n}: position {k}");
            }
        }
    }

    #[tokio::test]
    async fn misses_come_from_below_and_are_offered_up() {
        let (cascade, cache, backing) = stack(100);
        let ids = [5u64, 9, 5, 99, 0];
        let mut out = vec![0u8; ids.len() * RB];
        cascade
            .serve(Want::packed(&ids), &mut out)
            .await
            .expect("serve");
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(out[k * RB..(k + 1) * RB], row(id), "row {id}");
        }
        assert!(cache.contains(99) && cache.contains(5));
        assert_eq!(backing.stats().hits, 5);
        // Again: everything from the cache now, nothing read below.
        let mut again = vec![0u8; out.len()];
        cascade
            .serve(Want::packed(&ids), &mut again)
            .await
            .expect("serve");
        assert_eq!(again, out);
        assert_eq!(backing.stats().hits, 5);
        assert_eq!(cache.stats().hits, 5);
        assert_eq!(cache.kind(), TierKind::Memory);
    }

    #[tokio::test]
    async fn places_are_honoured_at_every_level() {
        let (cascade, cache, _) = stack(50);
        cache.offer(Offer {
            want: Want::packed(&[3]),
            rows: &row(3),
            reason: OfferReason::Read,
        });
        let ids = [3u64, 40, 7];
        let places = [2usize, 0, 1];
        let mut out = vec![0u8; 3 * RB];
        let want = Want {
            ids: &ids,
            places: Some(&places),
        };
        cascade.serve(want, &mut out).await.expect("serve");
        assert_eq!(out[0..RB], row(40));
        assert_eq!(out[RB..2 * RB], row(7));
        assert_eq!(out[2 * RB..], row(3));
    }

    #[tokio::test]
    async fn a_row_no_tier_holds_is_an_error() {
        let (cascade, _, _) = stack(10);
        let mut out = vec![0u8; 2 * RB];
        let err = cascade
            .serve(Want::packed(&[1, 10]), &mut out)
            .await
            .expect_err("row 10 is not held");
        assert!(matches!(err, TierError::NotHeld { row: 10 }), "{err}");
    }

    #[tokio::test]
    async fn prefetch_reads_only_cold_rows_and_offers_them_as_prefetched() {
        let (cascade, cache, backing) = stack(10_000);
        cache.offer(Offer {
            want: Want::packed(&[1]),
            rows: &row(1),
            reason: OfferReason::Read,
        });
        let ids: Vec<u64> = (0..(PREFETCH_CHUNK_ROWS as u64 + 10)).collect();
        let read = cascade.prefetch(&ids).await.expect("prefetch");
        assert_eq!(read, ids.len() - 1);
        assert_eq!(cache.offered().1, ids.len() as u64 - 1);
        assert_eq!(backing.stats().hits, ids.len() as u64 - 1);
        let mut out = vec![0u8; RB];
        cascade
            .serve(Want::packed(&[4100]), &mut out)
            .await
            .expect("serve");
        assert_eq!(out, row(4100));
        assert_eq!(
            backing.stats().hits,
            ids.len() as u64 - 1,
            "served from the cache"
        );
    }
}
