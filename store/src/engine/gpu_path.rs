//! The VRAM tier on the lookup path (`cuda` feature): gathering hits on the device into a host
//! buffer or straight into a worker's device buffer, filling misses from the host tiers, and
//! the background refresh that moves the hottest rows into VRAM.

use std::sync::Arc;
use std::time::Duration;

use engram_store_cache::gpu::{GpuError, GpuTier};

use super::error::LookupError;
use super::served_table::ServedTable;

fn gpu_error(e: GpuError) -> LookupError {
    LookupError::Io {
        table: String::new(),
        file: 0,
        block: 0,
        message: format!("GPU tier: {e}"),
        transient: false,
    }
}

/// Gathers the VRAM-resident rows of `ids` into `out`; returns which positions were served.
pub(crate) fn gather(gpu: &GpuTier, ids: &[u64], out: &mut [u8]) -> Result<Vec<bool>, LookupError> {
    gpu.record(ids);
    let mut hit = Vec::with_capacity(ids.len());
    tokio::task::block_in_place(|| gpu.gather_to_host(ids, out, &mut hit)).map_err(gpu_error)?;
    Ok(hit)
}

impl ServedTable {
    /// Writes the rows of `ids` into device memory at `dst` (valid for `ids.len() * row_bytes`
    /// bytes on the tier's device): hits by the gather kernel straight from VRAM, misses
    /// gathered on the host and delivered by one host-to-device copy. Returns the VRAM hits.
    pub async fn lookup_into_device(
        self: &Arc<Self>,
        ids: &[u64],
        dst: u64,
    ) -> Result<u64, LookupError> {
        self.check_ids(ids)?;
        let gpu = self.gpu().ok_or_else(|| {
            LookupError::InvalidArgument(format!(
                "table {:?} has no GPU tier",
                self.manifest().name
            ))
        })?;
        gpu.record(ids);
        let mut hit = Vec::with_capacity(ids.len());
        let hits = tokio::task::block_in_place(|| gpu.gather_to_device(ids, dst, &mut hit))
            .map_err(gpu_error)?;
        let miss_positions: Vec<u32> = (0..ids.len() as u32)
            .filter(|&i| !hit[i as usize])
            .collect();
        if miss_positions.is_empty() {
            return Ok(hits);
        }
        let miss_ids: Vec<u64> = miss_positions.iter().map(|&i| ids[i as usize]).collect();
        let rb = self.manifest().row_bytes as usize;
        let mut packed = vec![0u8; miss_ids.len() * rb];
        self.fill_from_host(&miss_ids, &mut packed, None).await?;
        tokio::task::block_in_place(|| gpu.scatter_to_device(&packed, &miss_positions, dst))
            .map_err(gpu_error)?;
        Ok(hits)
    }

    /// Hints that `ids` will be used soon: they weigh more in the next VRAM refresh.
    pub fn gpu_hint(&self, ids: &[u64]) {
        if let Some(gpu) = self.gpu() {
            gpu.hint(ids);
        }
    }
}

/// Refreshes the VRAM tier of `table` every `every` until the table is dropped: the hottest
/// rows not yet resident are read through the host tiers and written into VRAM.
pub(crate) fn spawn_refresh(table: &Arc<ServedTable>, every: Duration) {
    let weak = Arc::downgrade(table);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(table) = weak.upgrade() else { return };
            let Some(gpu) = table.gpu() else { return };
            let plan = gpu.plan_refresh();
            if plan.entering.is_empty() {
                continue;
            }
            let rb = table.manifest().row_bytes as usize;
            let mut rows = vec![0u8; plan.entering.len() * rb];
            if let Err(e) = table.fill_from_host(&plan.entering, &mut rows, None).await {
                tracing::warn!(error = %e, "VRAM refresh: reading rows failed");
                continue;
            }
            let t = table.clone();
            let result = tokio::task::spawn_blocking(move || {
                t.gpu().map(|g| g.apply_refresh(&plan, &rows)).transpose()
            })
            .await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "VRAM refresh failed"),
                Err(e) => tracing::warn!(error = %e, "VRAM refresh task failed"),
            }
        }
    });
}
