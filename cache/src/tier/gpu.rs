//! The VRAM tier as a [`Tier`] (feature `cuda`): [`GpuTier`] serves the hot rows it holds by its
//! gather kernel, into host memory or (as a [`DeviceTier`]) straight into a worker's device
//! buffer, counts every lookup towards its next refresh, and takes prefetch hints. It fills
//! itself in the background ([`spawn_refresh`]) from its own counts, so rows offered from below
//! are ignored; one refresh is [`refresh_once`] (a new table version's warm runs it too).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use super::{DeviceTier, Offer, Tier, TierError, TierKind, TierStats, Want};
use crate::Cascade;
use crate::gpu::GpuTier;

impl Tier for GpuTier {
    fn kind(&self) -> TierKind {
        TierKind::Gpu
    }

    fn serve<'a>(
        &'a self,
        want: Want<'a>,
        out: &'a mut [u8],
        missed: &'a mut Vec<usize>,
    ) -> BoxFuture<'a, Result<(), TierError>> {
        let result = tokio::task::block_in_place(|| self.serve_host(want, out, missed));
        Box::pin(std::future::ready(result))
    }

    fn offer(&self, _offer: Offer<'_>) {}

    fn hint(&self, ids: &[u64]) {
        GpuTier::hint(self, ids);
    }

    fn contains(&self, row: u64) -> bool {
        GpuTier::contains(self, row)
    }

    fn stats(&self) -> TierStats {
        let s = GpuTier::stats(self);
        let rb = self.row_bytes() as u64;
        TierStats {
            hits: s.hits,
            misses: s.misses,
            bytes: s.hits * rb,
            resident_rows: s.resident_rows,
            resident_bytes: s.resident_rows * rb,
            capacity_bytes: s.device_bytes,
            reads: s.refreshes,
            rows_entering: s.rows_entering,
            policy: "hot-set".into(),
            device: Some(self.device() as u32),
            ..Default::default()
        }
    }

    fn reset_stats(&self) {
        self.reset_counters();
    }

    fn as_device(&self) -> Option<&dyn DeviceTier> {
        Some(self)
    }
}

impl GpuTier {
    fn serve_host(
        &self,
        want: Want<'_>,
        out: &mut [u8],
        missed: &mut Vec<usize>,
    ) -> Result<(), TierError> {
        self.record(want.ids);
        let rb = self.row_bytes();
        let mut hit = Vec::with_capacity(want.len());
        match want.places {
            None => {
                self.gather_to_host(want.ids, &mut out[..want.len() * rb], &mut hit)?;
            }
            Some(places) => {
                let mut packed = vec![0u8; want.len() * rb];
                self.gather_to_host(want.ids, &mut packed, &mut hit)?;
                for (k, row) in packed.chunks_exact(rb).enumerate() {
                    if hit[k] {
                        out[places[k] * rb..(places[k] + 1) * rb].copy_from_slice(row);
                    }
                }
            }
        }
        missed.extend((0..want.len()).filter(|&k| !hit[k]));
        Ok(())
    }
}

impl DeviceTier for GpuTier {
    fn gather_to_device(
        &self,
        ids: &[u64],
        dst: u64,
        hit: &mut Vec<bool>,
    ) -> Result<u64, TierError> {
        self.record(ids);
        Ok(GpuTier::gather_to_device(self, ids, dst, hit)?)
    }

    fn scatter_to_device(
        &self,
        packed: &[u8],
        positions: &[u32],
        dst: u64,
    ) -> Result<(), TierError> {
        Ok(GpuTier::scatter_to_device(self, packed, positions, dst)?)
    }

    fn share(&self) -> Result<crate::gpu::SharedGpuTier, TierError> {
        Ok(GpuTier::share(self)?)
    }
}

/// Refreshes `gpu`, the top tier of `cascade`, every `every` until the cascade is dropped: the
/// hottest rows not yet resident are read through the tiers below it and written into VRAM.
pub fn spawn_refresh(cascade: &Arc<Cascade>, gpu: Arc<GpuTier>, every: Duration) {
    let weak: Weak<Cascade> = Arc::downgrade(cascade);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(cascade) = weak.upgrade() else {
                return;
            };
            // A failed refresh (rows that could not be read now: a failing disk) leaves the
            // previous hot set serving; the next one retries.
            let _ = refresh_once(&cascade, &gpu).await;
        }
    });
}

/// One refresh of `gpu`, the top tier of `cascade`, now: the hottest rows counted (lookups and
/// hints) that it does not hold are read through the tiers below and written into VRAM, marked
/// under way ([`GpuTier::refresh_underway`]) while they are. Returns the rows loaded (0: none
/// wanted). A refresh that fails leaves the previous hot set serving.
pub async fn refresh_once(cascade: &Arc<Cascade>, gpu: &Arc<GpuTier>) -> Result<usize, TierError> {
    // Ranking the counts takes milliseconds per million rows counted: off the runtime's
    // workers, which serve lookups.
    let g = gpu.clone();
    let plan = tokio::task::spawn_blocking(move || g.plan_refresh()).await?;
    if plan.entering.is_empty() {
        return Ok(0);
    }
    let _underway = gpu.refresh_underway(plan.entering.len());
    let rows = cascade.fill_below_top(plan.entering.clone()).await?;
    let g = gpu.clone();
    Ok(tokio::task::spawn_blocking(move || g.apply_refresh(&plan, &rows)).await??)
}
