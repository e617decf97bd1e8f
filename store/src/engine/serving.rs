//! The engine: every table of a data directory opened with its tiers (each table's share of the
//! RAM and VRAM budgets proportional to its data bytes, all reading through one I/O engine), the
//! Engram groups over them, the registered regions, and one method per kind of request. The gRPC
//! edge converts a message into a query, calls one of these, and encodes the answer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engram_store_cache::io::{IoEngine, IoEngineConfig, IoEngineKind, start_engine};
use engram_store_cache::{PolicyFactory, RowCacheBuilder, Tier, policy};

use super::answer_budget::{AnswerBudget, AnswerReservation};
use super::config::EngineConfig;
use super::dedup::DedupedIds;
use super::error::LookupError;
use super::group::{GroupOpenError, ServedGroup, ServedLayer};
use super::prefetch_queue::PrefetchQueue;
use super::query::{IntoQuery, NgramQuery, RowSource, RowsQuery};
use super::served_table::ServedTable;
use super::stats::{Delivered, EngineStats, RequestCounters, process_rss_bytes, sum_by_kind};
use crate::channel::{ChannelError, ChannelTarget, Channels};
use crate::group::{GroupError, GroupFiles, list_group_names};
use crate::regions::{
    Owner, Region, RegionError, RegionMemory, RegionRegistry, RegionSpec, ShmRegion,
};
use crate::table::{OpenTable, TableError, list_table_names, remove_stale_leftovers};

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
    /// A GPU budget was given to a build without GPU support.
    #[error(
        "--gpu-budget was given but this build has no GPU support (rebuild with --features cuda)"
    )]
    NoGpuSupport,
    /// The GPU tier could not be set up.
    #[cfg(feature = "cuda")]
    #[error("--gpu-budget was given but {what}: {source}")]
    Gpu {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: engram_store_cache::gpu::GpuError,
    },
    /// The engine needs a tokio runtime (for its background tasks).
    #[error("the engine was opened outside an async runtime")]
    NoRuntime,
    /// An unknown RAM policy name.
    #[error("unknown RAM policy {0:?}; known: {known}", known = policy::POLICY_NAMES.join(", "))]
    UnknownPolicy(String),
    /// The Engram groups could not be listed.
    #[error("list Engram groups: {0}")]
    GroupDir(#[source] GroupError),
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
    #[error("open Engram group {name:?}: {source}")]
    Group {
        /// Group.
        name: String,
        /// Why.
        #[source]
        source: GroupOpenError,
    },
}

/// Rows of a table answering a request, packed in request order.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The table (its shape and version).
    pub table: Arc<ServedTable>,
    /// The packed rows.
    pub rows: Bytes,
    /// Rows in `rows`.
    pub row_count: usize,
    /// The answer's bytes reserved in the in-flight budget: keep it until the answer is sent.
    pub reservation: AnswerReservation,
}

/// A table or group found in the data directory that is not served, and why.
#[derive(Debug, Clone)]
pub struct Unavailable {
    /// Its name.
    pub name: String,
    /// "table" or "Engram group".
    pub kind: &'static str,
    /// Why it is not served.
    pub error: Arc<EngineError>,
}

/// What a LookupInto wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntoAnswer {
    /// Rows written.
    pub row_count: u64,
    /// Bytes per row.
    pub row_bytes: u32,
    /// Bytes written.
    pub bytes_written: u64,
    /// Rows served from VRAM (device regions).
    pub gpu_hits: u64,
}

/// A region just registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredRegion {
    /// Its id.
    pub id: u64,
    /// The secret later calls present.
    pub token: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The row ids an n-gram query reads, deduped, and the layer they belong to.
#[derive(Debug)]
pub struct ResolvedNgrams {
    /// The layer (its table serves the rows).
    pub layer: Arc<ServedLayer>,
    /// Row id of every (sequence, position, column), deduped.
    pub ids: DedupedIds,
}

/// Every served table and group, the regions, and the request counters.
#[derive(Debug)]
pub struct Engine {
    tables: BTreeMap<String, Arc<ServedTable>>,
    groups: BTreeMap<String, Arc<ServedGroup>>,
    unavailable: Vec<Unavailable>,
    removed_leftovers: Vec<std::path::PathBuf>,
    regions: RegionRegistry,
    channels: Channels,
    answers: AnswerBudget,
    prefetches: PrefetchQueue,
    io: Arc<dyn IoEngine>,
    config: EngineConfig,
    counters: RequestCounters,
    #[cfg(feature = "cuda")]
    gpu_context: Option<Arc<engram_store_cache::gpu::CudaContext>>,
}

/// A table's share of `budget`: proportional to its data bytes among `total` bytes.
fn share(budget: u64, bytes: u64, total: u128) -> u64 {
    (u128::from(budget) * u128::from(bytes))
        .checked_div(total)
        .map_or(0, |s| s as u64)
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
            return Err(EngineError::NoGpuSupport);
            #[cfg(feature = "cuda")]
            {
                engram_store_cache::gpu::probe(config.gpu_device).map_err(|source| {
                    EngineError::Gpu {
                        what: format!("GPU {} cannot be used", config.gpu_device),
                        source,
                    }
                })?;
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(EngineError::NoRuntime);
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
        let removed_leftovers = remove_stale_leftovers(&config.data_dir);
        for path in &removed_leftovers {
            tracing::warn!(path = %path.display(), "removed a half-written version left by a crashed ingest");
        }
        let names = list_table_names(&config.data_dir).map_err(EngineError::DataDir)?;
        let mut opened = Vec::new();
        let mut unavailable = Vec::new();
        for name in names {
            match OpenTable::open_newest(&config.data_dir, &name, config.direct_io) {
                Ok(table) => opened.push(table),
                Err(source) => {
                    let error = EngineError::Table {
                        name: name.clone(),
                        source,
                    };
                    tracing::error!(table = %name, error = %error, "table not served");
                    unavailable.push(Unavailable {
                        name,
                        kind: "table",
                        error: Arc::new(error),
                    });
                }
            }
        }
        let total_bytes: u128 = opened
            .iter()
            .map(|t| u128::from(t.manifest.data_bytes()))
            .sum();
        let mut tables = BTreeMap::new();
        #[cfg(feature = "cuda")]
        let mut gpu_context = None;
        for table in opened {
            let m = &table.manifest;
            let ram_share = share(config.ram_cache_bytes, m.data_bytes(), total_bytes);
            let ram = (ram_share > 0).then(|| {
                let b = RowCacheBuilder::new(m.row_bytes as usize)
                    .budget_bytes(ram_share)
                    .key_bound(m.rows)
                    // Unless a policy was asked for, a table that fits is held whole.
                    .whole_table_when_it_fits(factory.is_none());
                match &factory {
                    Some(f) => b.policy(f.clone()),
                    None => b,
                }
            });
            let name = m.name.clone();
            #[cfg(feature = "cuda")]
            let gpu = {
                let gpu_share = share(config.gpu_budget_bytes, m.data_bytes(), total_bytes);
                if gpu_share > 0 {
                    let mut c = engram_store_cache::gpu::GpuTierConfig::new(
                        config.gpu_device,
                        gpu_share,
                        m.row_bytes as usize,
                    );
                    c.max_batch = config.max_batch_ids.min(1 << 20);
                    let tier = engram_store_cache::gpu::GpuTier::new(&c).map_err(|source| {
                        EngineError::Gpu {
                            what: format!("the VRAM tier of table {name:?} failed"),
                            source,
                        }
                    })?;
                    gpu_context.get_or_insert_with(|| tier.context().clone());
                    Some(Arc::new(tier))
                } else {
                    None
                }
            };
            #[cfg(not(feature = "cuda"))]
            let gpu: Option<Arc<dyn Tier>> = None;
            #[cfg(feature = "cuda")]
            let served = ServedTable::new(
                table,
                gpu.clone().map(|g| g as Arc<dyn Tier>),
                ram,
                io.clone(),
            );
            #[cfg(not(feature = "cuda"))]
            let served = ServedTable::new(table, gpu, ram, io.clone());
            let served = Arc::new(served);
            #[cfg(feature = "cuda")]
            if let Some(gpu) = gpu {
                engram_store_cache::tier::spawn_refresh(served.cascade(), gpu, config.gpu_refresh);
            }
            tables.insert(name, served);
        }
        let mut groups = BTreeMap::new();
        let group_names = list_group_names(&config.data_dir).map_err(EngineError::GroupDir)?;
        for name in group_names {
            let opened = GroupFiles::load(&config.data_dir, &name)
                .map_err(|source| EngineError::GroupFiles {
                    name: name.clone(),
                    source,
                })
                .and_then(|files| {
                    ServedGroup::open(files, &tables).map_err(|source| EngineError::Group {
                        name: name.clone(),
                        source,
                    })
                });
            match opened {
                Ok(group) => {
                    groups.insert(name, Arc::new(group));
                }
                Err(error) => {
                    tracing::error!(group = %name, error = %error, "Engram group not served");
                    unavailable.push(Unavailable {
                        name,
                        kind: "Engram group",
                        error: Arc::new(error),
                    });
                }
            }
        }
        Ok(Self {
            tables,
            groups,
            unavailable,
            removed_leftovers,
            regions: RegionRegistry::new(config.max_regions_per_connection, config.max_regions),
            channels: Channels::new(config.max_channels_per_connection, config.max_channels),
            answers: AnswerBudget::new(config.answer_budget_bytes, config.answer_wait),
            prefetches: PrefetchQueue::new(config.prefetch_queue_rows, config.prefetch_tasks),
            io,
            config,
            counters: RequestCounters::default(),
            #[cfg(feature = "cuda")]
            gpu_context,
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

    /// Tables and groups found in the data directory but not served, and why.
    pub fn unavailable(&self) -> &[Unavailable] {
        &self.unavailable
    }

    /// Half-written versions of crashed ingests removed at start.
    pub fn removed_leftovers(&self) -> &[std::path::PathBuf] {
        &self.removed_leftovers
    }

    /// Checks a batch of `count` rows (counted in `unit`) against the limit.
    fn check_batch(&self, count: usize, unit: &'static str) -> Result<(), LookupError> {
        let max = self.config.max_batch_ids;
        if count > max {
            return Err(LookupError::TooManyRows { count, unit, max });
        }
        Ok(())
    }

    /// The table and checked ids of a rows query.
    fn resolve_rows(&self, q: &RowsQuery) -> Result<&Arc<ServedTable>, LookupError> {
        self.check_batch(q.ids.len(), "ids")?;
        let table = self.table(&q.table)?;
        table.check_ids(&q.ids)?;
        Ok(table)
    }

    /// The deduped row ids an n-gram query reads: finds the layer, checks its columns and the
    /// rows it returns (positions x columns) against the batch limit, hashes every position
    /// with its dead tokens. Used by every n-gram request kind.
    pub fn resolve_ngrams(&self, q: &NgramQuery) -> Result<ResolvedNgrams, LookupError> {
        let layer = self.group(&q.group)?.layer(q.layer_id)?.clone();
        let columns = layer.columns(q.columns.as_ref())?;
        self.check_batch(layer.output_rows(&q.sequences, &columns), "rows")?;
        let ids = DedupedIds::new(&layer.row_ids(&q.sequences, q.compressed, columns)?);
        Ok(ResolvedNgrams { layer, ids })
    }

    /// Reserves the bytes of an answer of `rows` rows of `table` in the in-flight budget.
    async fn reserve(
        &self,
        table: &ServedTable,
        rows: usize,
    ) -> Result<AnswerReservation, LookupError> {
        let bytes = rows as u64 * u64::from(table.manifest().row_bytes);
        self.answers.reserve(bytes).await
    }

    /// Rows by id.
    pub async fn lookup(&self, q: &RowsQuery) -> Result<Answer, LookupError> {
        let table = self.resolve_rows(q)?.clone();
        let reservation = self.reserve(&table, q.ids.len()).await?;
        let rows = table.lookup(&q.ids).await?;
        Ok(Answer {
            table,
            rows,
            row_count: q.ids.len(),
            reservation,
        })
    }

    /// The rows an Engram layer consumes for token sequences.
    pub async fn lookup_ngrams(&self, q: &NgramQuery) -> Result<Answer, LookupError> {
        let ResolvedNgrams { layer, ids } = self.resolve_ngrams(q)?;
        let reservation = self.reserve(layer.table(), ids.len()).await?;
        let rows = layer.table().lookup_deduped(&ids).await?;
        Ok(Answer {
            table: layer.table().clone(),
            rows,
            row_count: ids.len(),
            reservation,
        })
    }

    /// Checks a prefetch, then brings its rows into the cache tiers in the background, if the
    /// prefetch queue has room (else the prefetch is dropped and counted). Returns the distinct
    /// rows accepted (0 when dropped).
    pub fn prefetch(&self, source: &RowSource) -> Result<u64, LookupError> {
        let (table, mut ids) = match source {
            RowSource::Rows(q) => (self.resolve_rows(q)?.clone(), q.ids.clone()),
            RowSource::Ngrams(q) => {
                let r = self.resolve_ngrams(q)?;
                (r.layer.table().clone(), r.ids.distinct().to_vec())
            }
        };
        ids.sort_unstable();
        ids.dedup();
        let accepted = ids.len();
        let queued = self.prefetches.submit(accepted, async move {
            if let Err(e) = table.prefetch(&ids).await {
                tracing::warn!(error = %e, "prefetch failed");
            }
        });
        Ok(if queued { accepted as u64 } else { 0 })
    }

    /// Registers memory of the caller's, for `owner` (the connection it came on), that
    /// LookupInto may write rows into.
    pub fn register_region(
        &self,
        spec: RegionSpec,
        owner: Owner,
    ) -> Result<RegisteredRegion, LookupError> {
        let memory = match spec {
            RegionSpec::ShmPath => return Err(RegionError::PathRefused.into()),
            RegionSpec::Memfd { fd, size } => RegionMemory::Shm(ShmRegion::from_memfd(&fd, size)?),
            RegionSpec::CudaIpc {
                handle,
                offset,
                size,
                device,
            } => self.open_cuda_ipc(&handle, offset, size, device)?,
        };
        let size = memory.size();
        let (id, token) = self.regions.register(memory, owner)?;
        Ok(RegisteredRegion { id, token, size })
    }

    /// A connection closed: forgets everything it registered (channels, then regions).
    pub fn release_connection(&self, owner: Owner) {
        let channels = self.channels.release_owner(owner);
        let regions = self.regions.release_owner(owner);
        if regions + channels > 0 {
            tracing::debug!(
                owner,
                regions,
                channels,
                "connection closed: released what it held"
            );
        }
    }

    /// Opens a sidecar channel for `owner` (see [`crate::channel`]): its ring, the region its
    /// rows go to, what it serves and its capacity in rows.
    pub fn open_channel(
        self: &Arc<Self>,
        ring: crate::channel::Ring,
        region: &crate::regions::RegionKey,
        target: ChannelTarget,
        capacity: usize,
        owner: Owner,
    ) -> Result<Arc<crate::channel::Channel>, ChannelError> {
        let region = self.region(region)?;
        self.channels.open(
            self.clone(),
            tokio::runtime::Handle::current(),
            crate::channel::ChannelSpec {
                ring,
                region,
                target,
                capacity,
                owner,
            },
        )
    }

    /// Closes channel `id` of `owner`; false if it has none of that id.
    pub fn close_channel(&self, id: u64, owner: Owner) -> bool {
        self.channels.close(id, owner)
    }

    /// Sidecar channels open now.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Forgets a region.
    pub fn unregister_region(&self, key: &crate::regions::RegionKey) -> Result<(), LookupError> {
        Ok(self.regions.unregister(key)?)
    }

    #[cfg(feature = "cuda")]
    fn open_cuda_ipc(
        &self,
        handle: &[u8],
        offset: u64,
        size: u64,
        device: u32,
    ) -> Result<RegionMemory, RegionError> {
        let Some(ctx) = &self.gpu_context else {
            return Err(RegionError::NoGpu);
        };
        if device as usize != self.config.gpu_device {
            return Err(RegionError::WrongDevice {
                buffer: device,
                served: self.config.gpu_device,
            });
        }
        if size == 0 {
            return Err(RegionError::Empty);
        }
        let memory = engram_store_cache::gpu::IpcMemory::open(ctx, handle)
            .map_err(|e| RegionError::Ipc(Arc::new(e)))?;
        Ok(RegionMemory::CudaIpc {
            memory,
            offset,
            size,
        })
    }

    #[cfg(not(feature = "cuda"))]
    fn open_cuda_ipc(&self, _: &[u8], _: u64, _: u64, _: u32) -> Result<RegionMemory, RegionError> {
        Err(RegionError::NoGpu)
    }

    /// Writes rows into a registered region: checks the request whole (ids, tokens, limits,
    /// bounds) before touching the region.
    pub async fn lookup_into(&self, q: &IntoQuery) -> Result<IntoAnswer, LookupError> {
        let region = self.regions.get(&q.region)?;
        self.lookup_into_region(&region, q.offset, &q.source).await
    }

    /// The region a key names, if the token is its token.
    pub fn region(&self, key: &crate::regions::RegionKey) -> Result<Arc<Region>, LookupError> {
        Ok(self.regions.get(key)?)
    }

    /// Writes the rows of `source` into `region` from byte `offset` (see
    /// [`Engine::lookup_into`]; the sidecar channel calls this for each of its slots).
    pub async fn lookup_into_region(
        &self,
        region: &Arc<Region>,
        offset: u64,
        source: &RowSource,
    ) -> Result<IntoAnswer, LookupError> {
        let (table, ids, deduped) = match source {
            RowSource::Rows(rows) => (self.resolve_rows(rows)?.clone(), Some(&rows.ids), None),
            RowSource::Ngrams(ngrams) => {
                let r = self.resolve_ngrams(ngrams)?;
                (r.layer.table().clone(), None, Some(r.ids))
            }
        };
        let count = ids.map_or_else(|| deduped.as_ref().map_or(0, DedupedIds::len), Vec::len);
        let rb = u64::from(table.manifest().row_bytes);
        let len = count as u64 * rb;
        let end = offset
            .checked_add(len)
            .ok_or(RegionError::Overflow { offset, len })?;
        let mut lease = region.lease(offset..end)?;
        let mut gpu_hits = 0;
        if let Some(dst) = lease.shm_bytes() {
            match (ids, &deduped) {
                (Some(ids), _) => table.lookup_into(ids, dst).await?,
                (None, Some(d)) => table.lookup_deduped_into(d, dst).await?,
                (None, None) => {}
            }
        } else if let Some(dst) = lease.device_ptr() {
            gpu_hits = match (ids, &deduped) {
                (Some(ids), _) => table.lookup_into_device(ids, dst).await?,
                (None, Some(d)) => {
                    let all: Vec<u64> = (0..d.len()).filter_map(|p| d.id_at(p)).collect();
                    table.lookup_into_device(&all, dst).await?
                }
                (None, None) => 0,
            };
        }
        Ok(IntoAnswer {
            row_count: count as u64,
            row_bytes: rb as u32,
            bytes_written: len,
            gpu_hits,
        })
    }

    /// Regions registered now.
    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    /// Counts one request: how long it took and what it delivered.
    pub fn record_request(&self, took: Duration, delivered: Delivered) {
        self.counters.record(took, delivered);
    }

    /// A snapshot of every tier and counter; zeroes the counters if `reset`.
    pub fn stats(&self, reset: bool) -> EngineStats {
        let tiers = sum_by_kind(self.tables.values().map(|t| t.tier_stats()));
        let (prefetch_dropped_rows, prefetch_dropped_requests) = self.prefetches.dropped();
        let mut stats = EngineStats {
            fixed_overhead_bytes: tiers.iter().map(|(_, s)| s.fixed_bytes).sum(),
            tiers,
            regions: self.regions.len() as u64,
            channels: self.channels.len() as u64,
            prefetch_queued_rows: self.prefetches.queued_rows() as u64,
            prefetch_dropped_rows,
            prefetch_dropped_requests,
            answer_bytes_in_flight: self.answers.reserved_bytes(),
            answer_budget_bytes: self.answers.total_bytes(),
            unavailable: self
                .unavailable
                .iter()
                .map(|u| {
                    (
                        u.name.clone(),
                        format!("{} {}: {}", u.kind, u.name, u.error),
                    )
                })
                .collect(),
            request_latency: Default::default(),
            requests: 0,
            rows: 0,
            bytes: 0,
            errors: 0,
            io_engine: self.io.name(),
            uptime_s: 0,
            process_rss_bytes: process_rss_bytes(),
        };
        self.counters.snapshot_into(&mut stats, reset);
        if reset {
            for t in self.tables.values() {
                t.reset_stats();
            }
        }
        stats
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// `"io_uring"` or `"pread"`.
    pub fn io_engine_name(&self) -> &'static str {
        self.io.name()
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
