//! Building one table version's tiers from its opened files and its shares of the RAM and VRAM
//! budgets: the same at start and for a version that appears while serving. A version gets one
//! VRAM tier per device served (`--gpu-device 0,1`), each of the same share of that device's
//! budget, each refreshed in the background through its own device's cascade. Also where the
//! VRAM tiers are filled at once (a new version is warmed before it is swapped in) instead of at
//! their next background refresh.

use std::sync::Arc;

use engram_store_cache::io::IoEngine;
use engram_store_cache::{PolicyFactory, RowCacheBuilder};

use super::config::EngineConfig;
use super::served_table::ServedTable;
use super::serving::EngineError;
use crate::table::OpenTable;

/// Rows a VRAM tier gathers or scatters per kernel call: its batch scratch (ids, rows, flags:
/// 276 B a row for 264-B rows, 36 MB) is taken from its budget, so a smaller one leaves more
/// room for rows (a decode step asks for 1,536-6,144 rows; a 4,096-token prefill chunk of V4.1,
/// 98,304). Larger requests are served in chunks of this many.
#[cfg(feature = "cuda")]
const GPU_BATCH_ROWS: usize = 1 << 17;

/// A table's share of `budget`: proportional to its data bytes among `total` bytes.
pub(crate) fn share(budget: u64, bytes: u64, total: u128) -> u64 {
    (u128::from(budget) * u128::from(bytes))
        .checked_div(total)
        .map_or(0, |s| s as u64)
}

/// Builds served table versions.
pub(crate) struct TableBuilder {
    factory: Option<PolicyFactory>,
    /// Where whole-table RAM tiers keep their rows as shared-memory files.
    share_memory_dir: Option<std::path::PathBuf>,
    io: Arc<dyn IoEngine>,
    #[cfg(feature = "cuda")]
    gpu: GpuSettings,
}

#[cfg(feature = "cuda")]
struct GpuSettings {
    /// Each device served and its CUDA context, once a tier on it exists.
    devices: Vec<(
        usize,
        std::sync::OnceLock<Arc<engram_store_cache::gpu::CudaContext>>,
    )>,
    max_batch: usize,
    refresh: std::time::Duration,
}

impl std::fmt::Debug for TableBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableBuilder")
            .field("policy", &self.factory.as_ref().map(|_| "configured"))
            .field("io", &self.io.name())
            .finish()
    }
}

/// A table version built, not yet served.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) table: Arc<ServedTable>,
    /// Its share of the RAM budget, bytes.
    pub(crate) ram_share: u64,
    /// Its share of each device's VRAM budget, bytes.
    pub(crate) gpu_share: u64,
    /// Its VRAM tiers, one per device served (none without a share).
    #[cfg(feature = "cuda")]
    pub(crate) gpus: Vec<Arc<engram_store_cache::gpu::GpuTier>>,
}

impl TableBuilder {
    pub(crate) fn new(
        factory: Option<PolicyFactory>,
        io: Arc<dyn IoEngine>,
        config: &EngineConfig,
    ) -> Self {
        Self {
            factory,
            share_memory_dir: config.share_memory_dir.clone(),
            io,
            #[cfg(feature = "cuda")]
            gpu: GpuSettings {
                devices: config
                    .gpu_devices
                    .as_slice()
                    .iter()
                    .map(|&d| (d, std::sync::OnceLock::new()))
                    .collect(),
                max_batch: config.max_batch_ids.min(GPU_BATCH_ROWS),
                refresh: config.gpu_refresh,
            },
        }
    }

    /// The I/O engine every table reads through.
    pub(crate) fn io(&self) -> &Arc<dyn IoEngine> {
        &self.io
    }

    /// The CUDA context of the VRAM tiers on `device`, once one exists.
    #[cfg(feature = "cuda")]
    pub(crate) fn gpu_context(
        &self,
        device: usize,
    ) -> Option<&Arc<engram_store_cache::gpu::CudaContext>> {
        self.gpu
            .devices
            .iter()
            .find(|(d, _)| *d == device)
            .and_then(|(_, context)| context.get())
    }

    /// Serves `table` with a RAM tier of `ram_share` bytes and, on each device served, a VRAM
    /// tier of `gpu_share` bytes (each 0: none); a VRAM tier refreshes itself in the background
    /// from then on.
    pub(crate) fn build(
        &self,
        table: OpenTable,
        ram_share: u64,
        gpu_share: u64,
    ) -> Result<Built, EngineError> {
        let m = &table.manifest;
        let ram = (ram_share > 0).then(|| {
            let b = RowCacheBuilder::new(m.row_bytes as usize)
                .budget_bytes(ram_share)
                .key_bound(m.rows)
                // Unless a policy was asked for, a table that fits is held whole.
                .whole_table_when_it_fits(self.factory.is_none())
                .share_whole_table_in(self.share_memory_dir.clone());
            match &self.factory {
                Some(f) => b.policy(f.clone()),
                None => b,
            }
        });
        #[cfg(feature = "cuda")]
        {
            let mut gpus = Vec::new();
            for (device, context) in &self.gpu.devices {
                if gpu_share == 0 {
                    break;
                }
                let mut c = engram_store_cache::gpu::GpuTierConfig::new(
                    *device,
                    gpu_share,
                    m.row_bytes as usize,
                );
                c.max_batch = self.gpu.max_batch;
                c.table_rows = Some(m.rows);
                let tier = engram_store_cache::gpu::GpuTier::new(&c).map_err(|source| {
                    EngineError::Gpu {
                        what: format!(
                            "the VRAM tier of table {:?} version {} on GPU {device} failed",
                            m.name, m.version
                        ),
                        source,
                    }
                })?;
                let _ = context.set(tier.context().clone());
                gpus.push(Arc::new(tier));
            }
            let on_devices = gpus
                .iter()
                .map(|g| super::served_table::DeviceTierOn {
                    device: g.device(),
                    tier: g.clone() as Arc<dyn engram_store_cache::Tier>,
                })
                .collect();
            let served = Arc::new(ServedTable::new(table, on_devices, ram, self.io.clone()));
            for g in &gpus {
                if let Some(cascade) = served.cascade_for(Some(g.device())) {
                    engram_store_cache::tier::spawn_refresh(cascade, g.clone(), self.gpu.refresh);
                }
            }
            Ok(Built {
                table: served,
                ram_share,
                gpu_share,
                gpus,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            Ok(Built {
                table: Arc::new(ServedTable::new(table, Vec::new(), ram, self.io.clone())),
                ram_share,
                gpu_share,
            })
        }
    }

    /// Serves `table` from its files alone (an older version kept for clients that pin it).
    pub(crate) fn files_only(&self, table: OpenTable) -> Arc<ServedTable> {
        Arc::new(ServedTable::new(table, Vec::new(), None, self.io.clone()).files_only())
    }
}

/// Fills each of `built`'s VRAM tiers now with the hottest rows it has been told of (counted
/// lookups and prefetch hints on its device), as its background refresh would at its next turn.
/// Returns the rows loaded, over all devices.
#[cfg(feature = "cuda")]
pub(crate) async fn refresh_gpu_now(built: &Built) -> Result<usize, String> {
    let mut loaded = 0;
    for gpu in &built.gpus {
        let device = gpu.device();
        let Some(cascade) = built.table.cascade_for(Some(device)).cloned() else {
            continue;
        };
        let g = gpu.clone();
        let plan = tokio::task::spawn_blocking(move || {
            g.flush_counts();
            g.plan_refresh()
        })
        .await
        .map_err(|e| format!("plan the VRAM refresh of GPU {device}: {e}"))?;
        if plan.entering.is_empty() {
            continue;
        }
        let rows = cascade
            .fill_below_top(plan.entering.clone())
            .await
            .map_err(|e| format!("read the rows to warm GPU {device} with: {e}"))?;
        let g = gpu.clone();
        loaded += tokio::task::spawn_blocking(move || g.apply_refresh(&plan, &rows))
            .await
            .map_err(|e| format!("warm GPU {device}: {e}"))?
            .map_err(|e| format!("warm GPU {device}: {e}"))?;
    }
    Ok(loaded)
}
