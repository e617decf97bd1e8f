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
///
/// A refresh that would bring in fewer than `min_rows` rows waits for the next period (each
/// refresh rewrites the tier's tags and index on the device, work that lands beside whatever
/// else runs there), but never more than [`MAX_DEFERRED_REFRESHES`] periods in a row: small drift
/// in the counts is taken in at most that many periods later, a warm or a shift in the traffic
/// (many rows wanted) at once. `min_rows` 0 or 1: every refresh that has rows to bring in runs.
pub fn spawn_refresh(cascade: &Arc<Cascade>, gpu: Arc<GpuTier>, every: Duration, min_rows: usize) {
    let weak: Weak<Cascade> = Arc::downgrade(cascade);
    tokio::spawn(async move {
        let mut deferred = 0u32;
        loop {
            tokio::time::sleep(every).await;
            let Some(cascade) = weak.upgrade() else {
                return;
            };
            let at_least = refresh_threshold(min_rows, deferred);
            // A failed refresh (rows that could not be read now: a failing disk) leaves the
            // previous hot set serving; the next one retries.
            let outcome = refresh_if_at_least(&cascade, &gpu, at_least).await;
            tracing::debug!(
                device = gpu.device(),
                at_least,
                ?outcome,
                "VRAM tier refresh"
            );
            deferred = match outcome {
                Ok(Refreshed::Deferred) => deferred + 1,
                _ => 0,
            };
        }
    });
}

/// Periods in a row a background refresh may be deferred for wanting fewer rows than its
/// minimum; the next one runs whatever it wants.
pub const MAX_DEFERRED_REFRESHES: u32 = 10;

/// The fewest rows a background refresh must want to run, after `deferred` refreshes in a row
/// were deferred: `min_rows` (at least 1), or 1 once [`MAX_DEFERRED_REFRESHES`] were.
fn refresh_threshold(min_rows: usize, deferred: u32) -> usize {
    if deferred >= MAX_DEFERRED_REFRESHES {
        1
    } else {
        min_rows.max(1)
    }
}

/// What [`refresh_if_at_least`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refreshed {
    /// Loaded this many rows (0: none wanted).
    Loaded(usize),
    /// Some rows were wanted, fewer than the minimum: nothing done.
    Deferred,
}

/// One refresh of `gpu`, the top tier of `cascade`, now: the hottest rows counted (lookups and
/// hints) that it does not hold are read through the tiers below and written into VRAM, marked
/// under way ([`GpuTier::refresh_underway`]) while they are. Returns the rows loaded (0: none
/// wanted). A refresh that fails leaves the previous hot set serving.
pub async fn refresh_once(cascade: &Arc<Cascade>, gpu: &Arc<GpuTier>) -> Result<usize, TierError> {
    match refresh_if_at_least(cascade, gpu, 1).await? {
        Refreshed::Loaded(n) => Ok(n),
        Refreshed::Deferred => Ok(0),
    }
}

/// [`refresh_once`] if it would bring in at least `min_rows` rows; otherwise nothing (the
/// ranking of the counts aside, which stays on the host).
async fn refresh_if_at_least(
    cascade: &Arc<Cascade>,
    gpu: &Arc<GpuTier>,
    min_rows: usize,
) -> Result<Refreshed, TierError> {
    // Ranking the counts takes milliseconds per million rows counted: off the runtime's
    // workers, which serve lookups.
    let g = gpu.clone();
    let plan = tokio::task::spawn_blocking(move || g.plan_refresh()).await?;
    if plan.entering.is_empty() {
        return Ok(Refreshed::Loaded(0));
    }
    if plan.entering.len() < min_rows {
        return Ok(Refreshed::Deferred);
    }
    let _underway = gpu.refresh_underway(plan.entering.len());
    let rows = cascade.fill_below_top(plan.entering.clone()).await?;
    let g = gpu.clone();
    let loaded = tokio::task::spawn_blocking(move || g.apply_refresh(&plan, &rows)).await??;
    Ok(Refreshed::Loaded(loaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deferred_refresh_runs_after_at_most_max_deferrals() {
        // 0 and 1 both mean: run whenever anything is wanted.
        assert_eq!(refresh_threshold(0, 0), 1);
        assert_eq!(refresh_threshold(1, 0), 1);
        // Deferred up to the limit, then run whatever is wanted.
        for deferred in 0..MAX_DEFERRED_REFRESHES {
            assert_eq!(refresh_threshold(5_000, deferred), 5_000);
        }
        assert_eq!(refresh_threshold(5_000, MAX_DEFERRED_REFRESHES), 1);
        assert_eq!(refresh_threshold(5_000, MAX_DEFERRED_REFRESHES + 3), 1);
    }
}
