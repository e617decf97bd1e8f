//! Building one table version's tiers from its opened files and its shares of the RAM and VRAM
//! budgets (split here, [`BudgetSplit`]: RAM by data bytes, VRAM by data bytes times each table's
//! `--gpu-weight`): the same at start and for a version that appears while serving. A version gets one
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
    weighted_share(budget, u128::from(bytes), total)
}

/// A table's share of `budget`: its `part` of `whole` (the sum of the parts of every table the
/// budget is split among), rounded down; 0 when `whole` is. The one place a share is computed,
/// so the shares of one split never sum above the budget. Exact while `budget * whole` fits in
/// 128 bits; past that, `part` and `whole` are first shifted right alike, by as few bits as make
/// it fit (the same for every table of the split), which keeps the sum within the budget.
pub(crate) fn weighted_share(budget: u64, part: u128, whole: u128) -> u64 {
    let shift = match u128::from(budget).checked_mul(whole) {
        Some(_) => 0,
        None => {
            (u64::BITS - budget.leading_zeros()) + (u128::BITS - whole.leading_zeros()) - u128::BITS
        }
    };
    let (part, whole) = ((part >> shift).min(whole >> shift), whole >> shift);
    // `part <= whole` and `budget * whole` fits: so does `budget * part`, and the share is at
    // most `budget`.
    (u128::from(budget) * part)
        .checked_div(whole)
        .map_or(0, |s| s as u64)
}

/// How the RAM and VRAM budgets are split among a set of tables: the RAM budget by data bytes,
/// each device's VRAM budget by data bytes times the table's weight (`--gpu-weight`).
#[derive(Debug)]
pub(crate) struct BudgetSplit<'a> {
    config: &'a EngineConfig,
    /// Data bytes of every table of the split.
    total_bytes: u128,
    /// Their weighted bytes ([`super::GpuWeights::weighted_bytes`]).
    total_weighted: u128,
}

impl<'a> BudgetSplit<'a> {
    /// The split of `config`'s budgets among `tables`, (name, data bytes) each.
    pub(crate) fn among<'t>(
        config: &'a EngineConfig,
        tables: impl IntoIterator<Item = (&'t str, u64)>,
    ) -> Self {
        let (mut total_bytes, mut total_weighted) = (0u128, 0u128);
        for (name, bytes) in tables {
            total_bytes += u128::from(bytes);
            total_weighted += config.gpu_weights.weighted_bytes(name, bytes);
        }
        Self {
            config,
            total_bytes,
            total_weighted,
        }
    }

    /// The shares of `table`, one of the split, of `bytes` data bytes: of the RAM budget, and of
    /// each device's VRAM budget.
    pub(crate) fn shares(&self, table: &str, bytes: u64) -> (u64, u64) {
        let c = self.config;
        (
            share(c.ram_cache_bytes, bytes, self.total_bytes),
            weighted_share(
                c.gpu_budget_bytes,
                c.gpu_weights.weighted_bytes(table, bytes),
                self.total_weighted,
            ),
        )
    }
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
    refresh_min_rows: usize,
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
                refresh_min_rows: config.gpu_refresh_min_rows,
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
                    engram_store_cache::tier::spawn_refresh(
                        cascade,
                        g.clone(),
                        self.gpu.refresh,
                        self.gpu.refresh_min_rows,
                    );
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
        let Some(cascade) = built.table.cascade_for(Some(device)) else {
            continue;
        };
        // The plan counts every access and hint handed over before it (`plan_refresh`).
        loaded += engram_store_cache::tier::refresh_once(cascade, gpu)
            .await
            .map_err(|e| format!("warm GPU {device}: {e}"))?;
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::engine::GpuWeights;

    /// The split before weights: `budget * bytes / total`, rounded down.
    fn by_bytes(budget: u64, bytes: u64, total: u128) -> u64 {
        (u128::from(budget) * u128::from(bytes) / total) as u64
    }

    fn config(ram: u64, gpu: u64, weights: &[&str]) -> EngineConfig {
        let mut c = EngineConfig::new("unused");
        c.ram_cache_bytes = ram;
        c.gpu_budget_bytes = gpu;
        c.gpu_weights =
            GpuWeights::new(weights.iter().map(|w| w.parse().expect(w))).expect("weights");
        c
    }

    #[test]
    fn weights_two_to_one_on_equal_tables_give_two_thirds_and_one_third() {
        let c = config(3 << 30, 3 << 30, &["v41.layer1=2"]);
        let tables = [("v41.layer1", 1u64 << 30), ("v41.layer14", 1 << 30)];
        let split = BudgetSplit::among(&c, tables);
        let (ram1, gpu1) = split.shares("v41.layer1", 1 << 30);
        let (ram14, gpu14) = split.shares("v41.layer14", 1 << 30);
        assert_eq!((gpu1, gpu14), (2 << 30, 1 << 30), "VRAM by weight");
        assert_eq!((ram1, ram14), (3 << 29, 3 << 29), "RAM by bytes alone");
        // Not a multiple of 3: each rounded down, nothing past the budget.
        let c = config(0, 1000, &["a=2"]);
        let split = BudgetSplit::among(&c, [("a", 64), ("b", 64)]);
        assert_eq!(
            (split.shares("a", 64).1, split.shares("b", 64).1),
            (666, 333)
        );
        // Weights 0.5 and 1.5 are the same 1:3 split as 1 and 3.
        let c = config(0, 4 << 20, &["a=0.5", "b=1.5"]);
        let split = BudgetSplit::among(&c, [("a", 10 << 20), ("b", 10 << 20)]);
        assert_eq!(split.shares("a", 10 << 20).1, 1 << 20);
        assert_eq!(split.shares("b", 10 << 20).1, 3 << 20);
    }

    #[test]
    fn default_weights_reproduce_the_split_by_bytes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let bits = rng.random_range(0..48);
            let budget = rng.random_range(0..=1u64 << bits);
            let tables: Vec<(String, u64)> = (0..rng.random_range(1..6))
                .map(|k| (format!("t{k}"), rng.random_range(0..=1u64 << 44)))
                .collect();
            let total: u128 = tables.iter().map(|(_, b)| u128::from(*b)).sum();
            // No weight named, and weights naming tables not in the split: both the old split.
            for weights in [&[][..], &["other=5"][..]] {
                let c = config(budget, budget, weights);
                let split = BudgetSplit::among(&c, tables.iter().map(|(n, b)| (n.as_str(), *b)));
                for (name, bytes) in &tables {
                    let want = if total == 0 {
                        0
                    } else {
                        by_bytes(budget, *bytes, total)
                    };
                    assert_eq!(
                        split.shares(name, *bytes),
                        (want, want),
                        "{name} of {tables:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn shares_never_sum_above_the_budget() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..5_000 {
            let budget = match round % 3 {
                0 => rng.random_range(0..1_000),
                1 => rng.random_range(0..=1u64 << 40),
                _ => rng.random(),
            };
            let n = rng.random_range(1..8);
            let tables: Vec<(String, u64)> = (0..n)
                .map(|k| {
                    let bytes = match round % 2 {
                        0 => rng.random_range(0..=1u64 << 40),
                        _ => rng.random(), // past 2^64 in all: the shifted path
                    };
                    (format!("t{k}"), bytes)
                })
                .collect();
            let mut weights = Vec::new();
            for (name, _) in &tables {
                if rng.random_bool(0.5) {
                    let w = 10f64.powf(rng.random_range(-6.0..6.0));
                    weights.push(format!("{name}={w}"));
                }
            }
            let weights: Vec<&str> = weights.iter().map(String::as_str).collect();
            let c = config(budget, budget, &weights);
            let split = BudgetSplit::among(&c, tables.iter().map(|(n, b)| (n.as_str(), *b)));
            let (mut ram, mut gpu) = (0u128, 0u128);
            for (name, bytes) in &tables {
                let (r, g) = split.shares(name, *bytes);
                ram += u128::from(r);
                gpu += u128::from(g);
            }
            assert!(
                ram <= u128::from(budget),
                "RAM {ram} > {budget}: {tables:?}"
            );
            assert!(
                gpu <= u128::from(budget),
                "VRAM {gpu} > {budget}: {tables:?} {weights:?}"
            );
        }
    }

    #[test]
    fn weighted_share_stays_within_the_budget_at_the_extremes() {
        assert_eq!(weighted_share(100, 5, 0), 0, "nothing to split");
        assert_eq!(weighted_share(u64::MAX, 1, 1), u64::MAX);
        assert_eq!(weighted_share(u64::MAX, u128::MAX, u128::MAX), u64::MAX);
        assert_eq!(
            weighted_share(u64::MAX, u128::MAX / 2, u128::MAX),
            u64::MAX / 2
        );
        assert_eq!(
            weighted_share(1000, 7, 3),
            1000,
            "a part past the whole is all of it"
        );
        assert_eq!(share(1000, 1, 3), 333);
    }
}
