//! The engine: every table of a data directory opened with its tiers (each table's share of the
//! RAM budget proportional to its data bytes, of the VRAM budget to its data bytes times its
//! `--gpu-weight`, all reading through one I/O engine), the Engram groups over them, the
//! registered regions, and one method per kind of request. The gRPC edge converts a message into
//! a query, calls one of these, and encodes the answer.
//!
//! What is served lives in a [`Catalog`], replaced whole when a new table version is swapped in
//! (`super::versions`); each request reads one snapshot of it. Requests are admitted by their
//! rows ([`super::admission`]) before any work is done for them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engram_store_cache::io::{IoEngineConfig, IoEngineKind, start_engine};
use engram_store_cache::{PolicyFactory, policy};

use super::admission::Admission;
use super::answer_budget::{AnswerBudget, AnswerReservation};
use super::build::{BudgetSplit, TableBuilder};
use super::catalog::{Catalog, CatalogCell, TableVersions, Unavailable};
use super::config::EngineConfig;
use super::dedup::DedupedIds;
use super::error::LookupError;
use super::fd_handoff::FdHandoff;
use super::group::{GroupOpenError, ServedGroup, ServedLayer};
use super::prefetch_queue::PrefetchQueue;
use super::query::{IntoQuery, NgramQuery, RowSource, RowsQuery};
use super::served_table::ServedTable;
use super::stats::{Delivered, EngineStats, RequestCounters, process_rss_bytes, sum_by_kind};
use super::versions::Versions;
use crate::channel::{ChannelError, ChannelTarget, Channels};
use crate::group::{GroupError, GroupFiles, list_group_names};
use crate::regions::{
    Owner, Region, RegionError, RegionMemory, RegionRegistry, RegionSpec, ShmRegion,
};
use crate::table::{
    OpenTable, TableError, complete_versions, list_table_names, remove_stale_leftovers,
    version_dir_name,
};

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
    /// A table version could not be taken in while serving.
    #[error("{0}")]
    Reload(String),
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
    /// Version of the table that served the rows.
    pub version: u64,
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
    catalog: CatalogCell,
    removed_leftovers: Vec<std::path::PathBuf>,
    regions: RegionRegistry,
    channels: Channels,
    answers: AnswerBudget,
    admission: Admission,
    prefetches: PrefetchQueue,
    builder: TableBuilder,
    pub(crate) versions: Versions,
    /// Hands a shared VRAM tier's memory to the worker that asked (ShareTable).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fd_handoff: FdHandoff,
    config: EngineConfig,
    counters: RequestCounters,
}

impl Engine {
    /// Opens every table under `config.data_dir` (its newest complete version that opens, and
    /// the `keep_versions - 1` before it for clients that pin them), and every Engram group
    /// there over them.
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
                for &device in config.gpu_devices.as_slice() {
                    engram_store_cache::gpu::probe(device).map_err(|source| EngineError::Gpu {
                        what: format!("GPU {device} cannot be used"),
                        source,
                    })?;
                }
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
        let builder = TableBuilder::new(factory, io, &config);
        let versions = Versions::new();
        let removed_leftovers = remove_stale_leftovers(&config.data_dir);
        for path in &removed_leftovers {
            tracing::warn!(path = %path.display(), "removed a half-written version left by a crashed ingest");
        }
        let names = list_table_names(&config.data_dir).map_err(EngineError::DataDir)?;
        let mut opened = Vec::new();
        let mut catalog = Catalog::default();
        for name in names {
            let table_dir = config.data_dir.join(&name);
            let on_disk = complete_versions(&table_dir);
            let mut failure = None;
            for &v in &on_disk {
                match OpenTable::open_dir(&table_dir.join(version_dir_name(v)), config.direct_io) {
                    Ok(table) => {
                        if let Some((_, error)) = failure.take() {
                            tracing::error!(table = %name, version = v, error = %error,
                                "the newest version does not open: serving the one before it");
                        }
                        opened.push((name.clone(), table, on_disk.clone()));
                        break;
                    }
                    Err(source) => {
                        versions.refuse(&table_dir, &name, v, &source.to_string());
                        failure.get_or_insert((v, source));
                    }
                }
            }
            if let Some((_, source)) = failure {
                let error = EngineError::Table {
                    name: name.clone(),
                    source,
                };
                tracing::error!(table = %name, error = %error, "table not served");
                catalog.unavailable.push(Unavailable {
                    name,
                    kind: "table",
                    error: Arc::new(error),
                });
            }
        }
        for (table, weight) in config.gpu_weights.iter() {
            if !opened.iter().any(|(name, ..)| name == table) {
                tracing::warn!(
                    table,
                    weight,
                    "--gpu-weight (or gpu_weights) names a table that is not served: its weight \
                     applies if the table appears"
                );
            }
        }
        let split = BudgetSplit::among(
            &config,
            opened
                .iter()
                .map(|(name, t, _)| (name.as_str(), t.manifest.data_bytes())),
        );
        for (name, table, on_disk) in opened {
            let bytes = table.manifest.data_bytes();
            let current_version = table.manifest.version;
            let (ram_share, gpu_share) = split.shares(&name, bytes);
            let built = builder.build(table, ram_share, gpu_share)?;
            let table_dir = config.data_dir.join(&name);
            let older = on_disk
                .iter()
                .filter(|&&v| v < current_version)
                .take(config.keep_versions.max(1) - 1)
                .filter_map(|&v| {
                    match OpenTable::open_dir(
                        &table_dir.join(version_dir_name(v)),
                        config.direct_io,
                    ) {
                        Ok(t) => Some(builder.files_only(t)),
                        Err(e) => {
                            tracing::warn!(table = %name, version = v, error = %e,
                                "an older version does not open: it cannot be pinned");
                            None
                        }
                    }
                })
                .collect();
            catalog.tables.insert(
                name,
                TableVersions {
                    current: built.table,
                    older,
                    ram_share,
                    gpu_share,
                },
            );
        }
        let current = catalog.current_tables();
        let group_names = list_group_names(&config.data_dir).map_err(EngineError::GroupDir)?;
        for name in group_names {
            match open_group(&config.data_dir, &name, &current) {
                Ok(group) => {
                    catalog.groups.insert(name, Arc::new(group));
                }
                Err(error) => {
                    tracing::error!(group = %name, error = %error, "Engram group not served");
                    catalog.unavailable.push(Unavailable {
                        name,
                        kind: "Engram group",
                        error: Arc::new(error),
                    });
                }
            }
        }
        Ok(Self {
            catalog: CatalogCell::new(catalog),
            removed_leftovers,
            regions: RegionRegistry::new(config.max_regions_per_connection, config.max_regions),
            channels: Channels::new(config.max_channels_per_connection, config.max_channels),
            answers: AnswerBudget::new(config.answer_budget_bytes, config.answer_wait),
            admission: Admission::new(config.max_rows_in_flight),
            prefetches: PrefetchQueue::new(config.prefetch_queue_rows, config.prefetch_tasks),
            builder,
            versions,
            fd_handoff: FdHandoff::new(
                config
                    .share_memory_dir
                    .clone()
                    .unwrap_or_else(std::env::temp_dir),
            ),
            config,
            counters: RequestCounters::default(),
        })
    }

    /// What is served now: a snapshot that does not change (a new version makes a new one).
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load()
    }

    /// Replaces what is served (a reload).
    pub(crate) fn publish(&self, catalog: Catalog) {
        self.catalog.store(catalog);
        self.versions.changed();
    }

    /// Builds table versions.
    pub(crate) fn builder(&self) -> &TableBuilder {
        &self.builder
    }

    /// The version served now of the table called `name`.
    pub fn table(&self, name: &str) -> Result<Arc<ServedTable>, LookupError> {
        self.catalog().table(name).cloned()
    }

    /// The version served now of every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = Arc<ServedTable>> + use<> {
        let catalog = self.catalog();
        let tables: Vec<_> = catalog.tables().cloned().collect();
        tables.into_iter()
    }

    /// The Engram group called `name`, as served now.
    pub fn group(&self, name: &str) -> Result<Arc<ServedGroup>, LookupError> {
        self.catalog().group(name).cloned()
    }

    /// Every Engram group, by name.
    pub fn groups(&self) -> impl Iterator<Item = Arc<ServedGroup>> + use<> {
        let catalog = self.catalog();
        let groups: Vec<_> = catalog.groups().cloned().collect();
        groups.into_iter()
    }

    /// Tables and groups found in the data directory but not served, and why.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        self.catalog().unavailable().to_vec()
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

    /// The table version and checked ids of a rows query.
    fn resolve_rows(&self, q: &RowsQuery) -> Result<Arc<ServedTable>, LookupError> {
        self.check_batch(q.ids.len(), "ids")?;
        let table = self.catalog().table_at(&q.table, q.version)?.clone();
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

    /// The version of a layer's table an n-gram query reads: the one its group was linked to
    /// when the query was resolved, or the version it pins.
    fn layer_table(
        &self,
        layer: &ServedLayer,
        version: Option<u64>,
    ) -> Result<Arc<ServedTable>, LookupError> {
        let table = layer.table();
        match version {
            Some(v) if v != table.version() => self
                .catalog()
                .table_at(&table.manifest().name, Some(v))
                .cloned(),
            _ => Ok(table.clone()),
        }
    }

    /// Reserves `bytes` of the answer budget for an answer the server builds itself (a
    /// `ReadTableFile` stream's chunks), held until the reservation is dropped.
    pub async fn reserve_answer(&self, bytes: u64) -> Result<AnswerReservation, LookupError> {
        self.answers.reserve(bytes).await
    }

    /// Admits a request of `rows` rows of `table` (or refuses it at once), then reserves the
    /// bytes of its answer in the in-flight budget; the reservation holds both.
    async fn admit_answer(
        &self,
        table: &ServedTable,
        rows: usize,
    ) -> Result<AnswerReservation, LookupError> {
        let admitted = self.admission.admit(rows)?;
        let bytes = rows as u64 * u64::from(table.manifest().row_bytes);
        Ok(self.answers.reserve(bytes).await?.holding(admitted))
    }

    /// Rows by id.
    pub async fn lookup(&self, q: &RowsQuery) -> Result<Answer, LookupError> {
        let table = self.resolve_rows(q)?;
        let reservation = self.admit_answer(&table, q.ids.len()).await?;
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
        let table = self.layer_table(&layer, q.version)?;
        let reservation = self.admit_answer(&table, ids.len()).await?;
        let rows = table.lookup_deduped(&ids).await?;
        Ok(Answer {
            table,
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
            RowSource::Rows(q) => (self.resolve_rows(q)?, q.ids.clone()),
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

    /// Whether connection `owner` holds something it registered (a region or a channel): the
    /// idle reaper leaves such a connection open, since closing it would take them away from
    /// a client still using them (a worker that registered its buffers over gRPC and then
    /// reads rows through a channel sends no further gRPC request).
    pub fn connection_holds(&self, owner: Owner) -> bool {
        self.regions.owns(owner) || self.channels.owns(owner)
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
        if self.config.gpu_budget_bytes == 0 {
            return Err(RegionError::NoGpu);
        }
        let served = &self.config.gpu_devices;
        if !served.contains(device as usize) {
            return Err(RegionError::WrongDevice {
                buffer: device,
                served: served.to_string(),
            });
        }
        // The buffer is opened in its own device's context, that of the VRAM tiers there.
        let Some(ctx) = self.builder.gpu_context(device as usize) else {
            return Err(RegionError::NoGpu);
        };
        if size == 0 {
            return Err(RegionError::Empty);
        }
        let memory = engram_store_cache::gpu::IpcMemory::open(ctx, handle)
            .map_err(|e| RegionError::Ipc(Arc::new(e)))?;
        Ok(RegionMemory::CudaIpc {
            memory,
            device: device as usize,
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
            RowSource::Rows(rows) => (self.resolve_rows(rows)?, Some(&rows.ids), None),
            RowSource::Ngrams(ngrams) => {
                let r = self.resolve_ngrams(ngrams)?;
                let table = self.layer_table(&r.layer, ngrams.version)?;
                (table, None, Some(r.ids))
            }
        };
        let count = ids.map_or_else(|| deduped.as_ref().map_or(0, DedupedIds::len), Vec::len);
        let rb = u64::from(table.manifest().row_bytes);
        let len = count as u64 * rb;
        let end = offset
            .checked_add(len)
            .ok_or(RegionError::Overflow { offset, len })?;
        let mut lease = region.lease(offset..end)?;
        let _admitted = self.admission.admit(count)?;
        let mut gpu_hits = 0;
        if let Some(dst) = lease.shm_bytes() {
            match (ids, &deduped) {
                (Some(ids), _) => table.lookup_into(ids, dst).await?,
                (None, Some(d)) => table.lookup_deduped_into(d, dst).await?,
                (None, None) => {}
            }
        } else if let Some((device, dst)) = lease.device_ptr() {
            // The region's device picks the VRAM tier (and the hot set the ids count towards).
            gpu_hits = match (ids, &deduped) {
                (Some(ids), _) => table.lookup_into_device(device, ids, dst).await?,
                (None, Some(d)) => {
                    let all: Vec<u64> = (0..d.len()).filter_map(|p| d.id_at(p)).collect();
                    table.lookup_into_device(device, &all, dst).await?
                }
                (None, None) => 0,
            };
        }
        Ok(IntoAnswer {
            row_count: count as u64,
            row_bytes: rb as u32,
            bytes_written: len,
            gpu_hits,
            version: table.version(),
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
        let catalog = self.catalog();
        let tiers = sum_by_kind(
            catalog
                .table_versions()
                .flat_map(|(_, v)| v.all())
                .map(|t| t.tier_stats()),
        );
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
            rows_in_flight: self.admission.in_flight(),
            max_rows_in_flight: self.admission.limit(),
            refused_requests: self.admission.refused(),
            unavailable: catalog
                .unavailable()
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
            io_engine: self.builder.io().name(),
            uptime_s: 0,
            process_rss_bytes: process_rss_bytes(),
        };
        self.counters.snapshot_into(&mut stats, reset);
        if reset {
            for t in catalog.table_versions().flat_map(|(_, v)| v.all()) {
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
        self.builder.io().name()
    }

    /// Largest row of any table served now, bytes.
    pub fn max_row_bytes(&self) -> usize {
        self.tables()
            .map(|t| t.manifest().row_bytes as usize)
            .max()
            .unwrap_or(0)
    }
}

/// Loads Engram group `name` from `data_dir` and links it to the tables served.
pub(crate) fn open_group(
    data_dir: &std::path::Path,
    name: &str,
    tables: &BTreeMap<String, Arc<ServedTable>>,
) -> Result<ServedGroup, EngineError> {
    let files = GroupFiles::load(data_dir, name).map_err(|source| EngineError::GroupFiles {
        name: name.to_owned(),
        source,
    })?;
    ServedGroup::open(files, tables).map_err(|source| EngineError::Group {
        name: name.to_owned(),
        source,
    })
}
