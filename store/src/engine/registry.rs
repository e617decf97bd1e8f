//! The set of served tables: opened at start from the data directory, each with its share of the
//! RAM budget (proportional to its data bytes), all reading through one I/O engine; and the
//! Engram groups found there, linked to their layers' tables.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engram_store_cache::io::{IoEngine, IoEngineConfig, IoEngineKind, start_engine};
use engram_store_cache::{LatencyHistogram, PolicyFactory, RowCacheBuilder, policy};

use super::error::LookupError;
use super::group::{NgramRows, ServedGroup, ServedLayer};
use super::ngram_query::NgramQuery;
use super::served_table::ServedTable;
use crate::group::{GroupError, GroupFiles, list_group_names};
use crate::table::{OpenTable, TableError, list_table_names};

/// How the engine serves.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory holding one subdirectory per table.
    pub data_dir: PathBuf,
    /// RAM tier budget over all tables, bytes. Default 0 (no RAM tier).
    pub ram_cache_bytes: u64,
    /// RAM tier policy name. Default: the cache crate's default policy.
    pub ram_policy: Option<String>,
    /// I/O engine. Default auto (io_uring, else pread).
    pub io_engine: IoEngineKind,
    /// Reads in flight at most. Default 128.
    pub queue_depth: usize,
    /// Open data files with O_DIRECT. Default true.
    pub direct_io: bool,
    /// Most ids in one request. Default 1,048,576.
    pub max_batch_ids: usize,
    /// VRAM tier budget over all tables, bytes. Default 0 (no VRAM tier).
    pub gpu_budget_bytes: u64,
    /// CUDA device of the VRAM tier. Default 0.
    pub gpu_device: usize,
    /// How often the VRAM hot set is refreshed. Default 1 s.
    pub gpu_refresh: std::time::Duration,
}

impl EngineConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            ram_cache_bytes: 0,
            ram_policy: None,
            io_engine: IoEngineKind::Auto,
            queue_depth: 128,
            direct_io: true,
            max_batch_ids: 1 << 20,
            gpu_budget_bytes: 0,
            gpu_device: 0,
            gpu_refresh: std::time::Duration::from_secs(1),
        }
    }
}

/// Failure to start the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// A table could not be opened.
    #[error("open table {name:?}: {source}")]
    Table {
        /// Table.
        name: String,
        /// Why.
        #[source]
        source: TableError,
    },
    /// The data directory could not be listed.
    #[error(transparent)]
    DataDir(TableError),
    /// The I/O engine could not start.
    #[error("start the {kind:?} I/O engine: {source}")]
    Io {
        /// Engine asked for.
        kind: IoEngineKind,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A VRAM tier was asked for and cannot be had.
    #[error("--gpu-budget was given but {0}")]
    Gpu(String),
    /// An unknown RAM policy name.
    #[error("unknown RAM policy {0:?}; known: {known}", known = policy::POLICY_NAMES.join(", "))]
    UnknownPolicy(String),
    /// An Engram group could not be loaded.
    #[error("open Engram group {name:?}: {source}")]
    GroupFiles {
        /// Group.
        name: String,
        /// Why.
        #[source]
        source: GroupError,
    },
    /// An Engram group's tables do not match its layout.
    #[error("open Engram group {name:?}: {message}")]
    Group {
        /// Group.
        name: String,
        /// Why.
        message: String,
    },
}

/// Every served table, and the engine-wide counters.
#[derive(Debug)]
pub struct Engine {
    tables: BTreeMap<String, Arc<ServedTable>>,
    groups: BTreeMap<String, Arc<ServedGroup>>,
    io: Arc<dyn IoEngine>,
    config: EngineConfig,
    started: Instant,
    /// Whole-request latency.
    pub request_latency: LatencyHistogram,
    /// Counters of requests, rows, bytes, errors.
    pub counters: RequestCounters,
}

/// Engine-wide request counters.
#[derive(Debug, Default)]
pub struct RequestCounters {
    /// Requests answered (ok or not).
    pub requests: std::sync::atomic::AtomicU64,
    /// Rows returned.
    pub rows: std::sync::atomic::AtomicU64,
    /// Row bytes returned.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Requests that failed.
    pub errors: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Opens every table under `config.data_dir`, and every Engram group there over them.
    pub fn open(config: EngineConfig) -> Result<Self, EngineError> {
        let factory: Option<PolicyFactory> = match &config.ram_policy {
            None => None,
            Some(name) => {
                if policy::by_name(name, 0).is_none() {
                    return Err(EngineError::UnknownPolicy(name.clone()));
                }
                let name = name.clone();
                Some(Arc::new(move |cap| {
                    policy::by_name(&name, cap).unwrap_or_else(|| policy::default_policy(cap))
                }))
            }
        };
        if config.gpu_budget_bytes > 0 {
            #[cfg(not(feature = "cuda"))]
            return Err(EngineError::Gpu(
                "this build has no GPU support (rebuild with --features cuda)".into(),
            ));
            #[cfg(feature = "cuda")]
            {
                engram_store_cache::gpu::probe(config.gpu_device)
                    .map_err(|e| EngineError::Gpu(e.to_string()))?;
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(EngineError::Gpu(
                        "the engine was opened outside an async runtime".into(),
                    ));
                }
            }
        }
        let io = start_engine(
            config.io_engine,
            IoEngineConfig {
                queue_depth: config.queue_depth,
            },
        )
        .map_err(|source| EngineError::Io {
            kind: config.io_engine,
            source,
        })?;
        let names = list_table_names(&config.data_dir).map_err(EngineError::DataDir)?;
        let mut opened = Vec::new();
        for name in names {
            let table = OpenTable::open_newest(&config.data_dir, &name, config.direct_io).map_err(
                |source| EngineError::Table {
                    name: name.clone(),
                    source,
                },
            )?;
            opened.push(table);
        }
        let total_bytes: u128 = opened
            .iter()
            .map(|t| u128::from(t.manifest.data_bytes()))
            .sum();
        let mut tables = BTreeMap::new();
        for table in opened {
            let share = (u128::from(config.ram_cache_bytes)
                * u128::from(table.manifest.data_bytes()))
            .checked_div(total_bytes)
            .map_or(0, |s| s as u64);
            let cache = (share > 0).then(|| {
                let b = RowCacheBuilder::new(table.manifest.row_bytes as usize)
                    .budget_bytes(share)
                    .key_bound(table.manifest.rows)
                    // Unless a policy was asked for, a table that fits is held whole.
                    .whole_table_when_it_fits(factory.is_none());
                match &factory {
                    Some(f) => b.policy(f.clone()),
                    None => b,
                }
            });
            let name = table.manifest.name.clone();
            #[cfg(feature = "cuda")]
            let gpu_share = (u128::from(config.gpu_budget_bytes)
                * u128::from(table.manifest.data_bytes()))
            .checked_div(total_bytes)
            .map_or(0, |s| s as u64);
            #[cfg(feature = "cuda")]
            let row_bytes = table.manifest.row_bytes as usize;
            let served = ServedTable::new(table, cache, io.clone());
            #[cfg(feature = "cuda")]
            let served = if gpu_share > 0 {
                let mut c = engram_store_cache::gpu::GpuTierConfig::new(
                    config.gpu_device,
                    gpu_share,
                    row_bytes,
                );
                c.max_batch = config.max_batch_ids.min(1 << 20);
                let tier = engram_store_cache::gpu::GpuTier::new(&c).map_err(|e| {
                    EngineError::Gpu(format!("the VRAM tier of table {name:?} failed: {e}"))
                })?;
                served.with_gpu(tier)
            } else {
                served
            };
            let served = Arc::new(served);
            #[cfg(feature = "cuda")]
            if served.gpu().is_some() {
                super::gpu_path::spawn_refresh(&served, config.gpu_refresh);
            }
            tables.insert(name, served);
        }
        let mut groups = BTreeMap::new();
        let group_names =
            list_group_names(&config.data_dir).map_err(|source| EngineError::GroupFiles {
                name: String::new(),
                source,
            })?;
        for name in group_names {
            let files = GroupFiles::load(&config.data_dir, &name).map_err(|source| {
                EngineError::GroupFiles {
                    name: name.clone(),
                    source,
                }
            })?;
            let group =
                ServedGroup::open(files, &tables).map_err(|message| EngineError::Group {
                    name: name.clone(),
                    message,
                })?;
            groups.insert(name, Arc::new(group));
        }
        Ok(Self {
            tables,
            groups,
            io,
            config,
            started: Instant::now(),
            request_latency: LatencyHistogram::new(),
            counters: RequestCounters::default(),
        })
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Result<&Arc<ServedTable>, LookupError> {
        self.tables
            .get(name)
            .ok_or_else(|| LookupError::UnknownTable {
                name: name.to_owned(),
                known: self.tables.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<ServedTable>> {
        self.tables.values()
    }

    /// The Engram group called `name`.
    pub fn group(&self, name: &str) -> Result<&Arc<ServedGroup>, LookupError> {
        self.groups
            .get(name)
            .ok_or_else(|| LookupError::UnknownGroup {
                name: name.to_owned(),
                known: self.groups.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Every Engram group, by name.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<ServedGroup>> {
        self.groups.values()
    }

    /// Layer `layer_id` of group `group`.
    pub fn ngram_layer(
        &self,
        group: &str,
        layer_id: u32,
    ) -> Result<&Arc<ServedLayer>, LookupError> {
        self.group(group)?.layer(layer_id)
    }

    /// Serves an n-gram query: finds the layer, checks the batch limit on the rows it returns,
    /// and looks them up. Returns the layer (for the table's shape) with the rows.
    pub async fn lookup_ngrams(
        &self,
        query: &NgramQuery,
    ) -> Result<(Arc<ServedLayer>, NgramRows), LookupError> {
        let layer = self.ngram_layer(&query.group, query.layer_id)?.clone();
        self.check_batch(layer.output_rows(&query.sequences))?;
        let rows = layer.lookup(&query.sequences, query.compressed).await?;
        Ok((layer, rows))
    }

    /// Checks a batch size against the limit.
    pub fn check_batch(&self, count: usize) -> Result<(), LookupError> {
        if count > self.config.max_batch_ids {
            return Err(LookupError::TooManyIds {
                count,
                max: self.config.max_batch_ids,
            });
        }
        Ok(())
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// `"io_uring"` or `"pread"`.
    pub fn io_engine_name(&self) -> &'static str {
        self.io.name()
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// The VRAM tier's device and CUDA context, if any table has a VRAM tier.
    #[cfg(feature = "cuda")]
    pub fn gpu_context(&self) -> Option<(usize, Arc<engram_store_cache::gpu::CudaContext>)> {
        self.tables
            .values()
            .find_map(|t| t.gpu())
            .map(|g| (self.config.gpu_device, g.context().clone()))
    }

    /// Largest row of any table, bytes.
    pub fn max_row_bytes(&self) -> usize {
        self.tables
            .values()
            .map(|t| t.manifest().row_bytes as usize)
            .max()
            .unwrap_or(0)
    }
}
