//! The `engram_store.v1.EmbeddingStore` gRPC service over the engine: converts messages into
//! engine calls once, at the boundary, and engine results back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use engram_store_cache::LatencySnapshot;
use engram_store_proto::v1 as pb;
use engram_store_proto::v1::embedding_store_server::EmbeddingStore;
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{DedupedIds, Engine, LookupError, NgramQuery, ServedTable, TokenSequence};
use crate::regions::{RegionMemory, RegionRegistry, ShmRegion};
use crate::status::code_of;

/// Pipelined lookups in flight per stream.
const STREAM_PIPELINE: usize = 16;

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct StoreService {
    engine: Arc<Engine>,
    regions: Arc<RegionRegistry>,
}

impl StoreService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self {
            engine,
            regions: Arc::new(RegionRegistry::default()),
        }
    }

    /// One lookup, counted in the engine's request stats.
    async fn lookup_one(&self, req: pb::LookupRequest) -> Result<pb::LookupResponse, LookupError> {
        let start = Instant::now();
        let result = async {
            let ids = row_ids(&self.engine, req.ids, &req.ids_le)?;
            let table = self.engine.table(&req.table)?.clone();
            let rows = table.lookup(&ids).await?;
            Ok(response(&table, rows, ids.len()))
        }
        .await;
        self.record(start, &result);
        result
    }

    fn record(&self, start: Instant, result: &Result<pb::LookupResponse, LookupError>) {
        let c = &self.engine.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(r) => {
                c.rows.fetch_add(r.row_count, Ordering::Relaxed);
                c.bytes.fetch_add(r.rows.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(error = %e, "lookup failed");
            }
        }
        self.engine.request_latency.record(start.elapsed());
    }
}

impl From<pb::LookupNgramsRequest> for NgramQuery {
    fn from(r: pb::LookupNgramsRequest) -> Self {
        NgramQuery {
            group: r.group,
            layer_id: r.layer_id,
            sequences: r
                .sequences
                .into_iter()
                .map(|s| TokenSequence::with_context(s.tokens, s.context))
                .collect(),
            compressed: r.compressed,
        }
    }
}

fn response(table: &ServedTable, rows: bytes::Bytes, count: usize) -> pb::LookupResponse {
    let m = table.manifest();
    pb::LookupResponse {
        rows,
        row_bytes: m.row_bytes,
        row_count: count as u64,
        dtype: m.dtype.to_proto() as i32,
        row_dim: m.row_dim,
        version: m.version,
        error_code: 0,
        error_message: String::new(),
        row_format: Some(m.row_format.to_proto()),
    }
}

fn table_info(table: &ServedTable) -> pb::TableInfo {
    let m = table.manifest();
    pb::TableInfo {
        name: m.name.clone(),
        rows: m.rows,
        row_dim: m.row_dim,
        dtype: m.dtype.to_proto() as i32,
        row_bytes: m.row_bytes,
        version: m.version,
        data_bytes: m.data_bytes(),
        block_size: m.block_size,
        checksum: m.checksum.name().into(),
        row_format: Some(m.row_format.to_proto()),
    }
}

fn latency(s: LatencySnapshot) -> pb::LatencySummary {
    pb::LatencySummary {
        count: s.count,
        p50_us: s.p50_us,
        p90_us: s.p90_us,
        p99_us: s.p99_us,
        p999_us: s.p999_us,
        max_us: s.max_us,
    }
}

type LookupStreamOut = Pin<Box<dyn Stream<Item = Result<pb::LookupResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingStore for StoreService {
    async fn lookup(
        &self,
        request: Request<pb::LookupRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        Ok(Response::new(self.lookup_one(request.into_inner()).await?))
    }

    type LookupStreamStream = LookupStreamOut;

    async fn lookup_stream(
        &self,
        request: Request<Streaming<pb::LookupRequest>>,
    ) -> Result<Response<Self::LookupStreamStream>, Status> {
        let this = self.clone();
        let answers = request
            .into_inner()
            .map(move |msg| {
                let this = this.clone();
                async move {
                    let req = msg?;
                    Ok(match this.lookup_one(req).await {
                        Ok(r) => r,
                        Err(e) => pb::LookupResponse {
                            error_code: code_of(&e) as i32,
                            error_message: e.to_string(),
                            ..Default::default()
                        },
                    })
                }
            })
            .buffered(STREAM_PIPELINE);
        Ok(Response::new(Box::pin(answers)))
    }

    async fn lookup_ngrams(
        &self,
        request: Request<pb::LookupNgramsRequest>,
    ) -> Result<Response<pb::LookupResponse>, Status> {
        let query = NgramQuery::from(request.into_inner());
        let start = Instant::now();
        let result = self
            .engine
            .lookup_ngrams(&query)
            .await
            .map(|(layer, rows)| response(layer.table(), rows.rows, rows.row_count));
        self.record(start, &result);
        Ok(Response::new(result?))
    }

    async fn prefetch(
        &self,
        request: Request<pb::PrefetchRequest>,
    ) -> Result<Response<pb::PrefetchResponse>, Status> {
        match request.into_inner().target {
            Some(pb::prefetch_request::Target::Rows(rows)) => {
                let ids = row_ids(&self.engine, rows.ids, &rows.ids_le)?;
                let table = self.engine.table(&rows.table)?.clone();
                table.check_ids(&ids)?;
                let accepted = ids.len() as u64;
                tokio::spawn(async move {
                    if let Err(e) = table.prefetch(&ids).await {
                        tracing::warn!(error = %e, "prefetch failed");
                    }
                    hint_vram(&table, &ids);
                });
                Ok(Response::new(pb::PrefetchResponse {
                    accepted_rows: accepted,
                }))
            }
            Some(pb::prefetch_request::Target::Ngrams(req)) => {
                let query = NgramQuery::from(req);
                let layer = self
                    .engine
                    .ngram_layer(&query.group, query.layer_id)?
                    .clone();
                self.engine
                    .check_batch(layer.output_rows(&query.sequences))?;
                let ids = layer.distinct_row_ids(&query.sequences, query.compressed)?;
                let accepted = ids.len() as u64;
                let table = layer.table().clone();
                tokio::spawn(async move {
                    if let Err(e) = table.prefetch(&ids).await {
                        tracing::warn!(error = %e, "n-gram prefetch failed");
                    }
                    hint_vram(&table, &ids);
                });
                Ok(Response::new(pb::PrefetchResponse {
                    accepted_rows: accepted,
                }))
            }
            None => Err(Status::invalid_argument(
                "PrefetchRequest names no target (rows or ngrams)",
            )),
        }
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        Ok(Response::new(pb::ListTablesResponse {
            tables: self.engine.tables().map(|t| table_info(t)).collect(),
        }))
    }

    async fn describe_table(
        &self,
        request: Request<pb::DescribeTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        let table = self.engine.table(&request.into_inner().table)?;
        Ok(Response::new(table_info(table)))
    }

    async fn register_region(
        &self,
        request: Request<pb::RegisterRegionRequest>,
    ) -> Result<Response<pb::RegisterRegionResponse>, Status> {
        let memory = match request.into_inner().kind {
            Some(pb::register_region_request::Kind::Shm(shm)) => {
                RegionMemory::Shm(ShmRegion::open(std::path::Path::new(&shm.path), shm.size)?)
            }
            Some(pb::register_region_request::Kind::CudaIpc(ipc)) => self.open_cuda_ipc(ipc)?,
            None => {
                return Err(Status::invalid_argument(
                    "RegisterRegion names no region (shm or cuda_ipc)",
                ));
            }
        };
        let size = match &memory {
            RegionMemory::Shm(m) => m.size(),
            #[cfg(feature = "cuda")]
            RegionMemory::CudaIpc { size, .. } => *size,
        };
        let (region_id, token) = self.regions.register(memory);
        Ok(Response::new(pb::RegisterRegionResponse {
            region_id,
            token,
            size,
        }))
    }

    async fn unregister_region(
        &self,
        request: Request<pb::UnregisterRegionRequest>,
    ) -> Result<Response<pb::UnregisterRegionResponse>, Status> {
        let r = request.into_inner();
        self.regions.unregister(r.region_id, &r.token)?;
        Ok(Response::new(pb::UnregisterRegionResponse {}))
    }

    async fn lookup_into(
        &self,
        request: Request<pb::LookupIntoRequest>,
    ) -> Result<Response<pb::LookupIntoResponse>, Status> {
        let start = Instant::now();
        let result = self.lookup_into_region(request.into_inner()).await;
        let c = &self.engine.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        match &result {
            Ok(r) => {
                c.rows.fetch_add(r.row_count, Ordering::Relaxed);
                c.bytes.fetch_add(r.bytes_written, Ordering::Relaxed);
            }
            Err(_) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.engine.request_latency.record(start.elapsed());
        Ok(Response::new(result?))
    }

    async fn stats(
        &self,
        request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let reset = request.into_inner().reset;
        let e = &self.engine;
        let mut ram = pb::TierStats {
            tier: "ram".into(),
            ..Default::default()
        };
        let mut nvme = pb::TierStats {
            tier: "nvme".into(),
            ..Default::default()
        };
        let ram_latency = engram_store_cache::LatencyHistogram::new();
        let nvme_latency = engram_store_cache::LatencyHistogram::new();
        for t in e.tables() {
            if let Some(cache) = t.cache() {
                let s = cache.stats();
                ram.hits += s.hits;
                ram.misses += s.misses;
                ram.resident_rows += s.resident_rows;
                ram.resident_bytes += s.resident_rows * cache.row_bytes() as u64 + s.metadata_bytes;
                ram.capacity_bytes += cache.budget_bytes();
                if !ram.policy.split(',').any(|p| p == cache.policy_name()) {
                    if !ram.policy.is_empty() {
                        ram.policy.push(',');
                    }
                    ram.policy.push_str(cache.policy_name());
                }
                ram.prefetch_hits += s.prefetch_hits;
                if reset {
                    cache.reset_counters();
                }
            } else {
                // Without a RAM tier every row is a RAM miss.
            }
            ram.bytes += t.ram_stats.row_bytes.load(Ordering::Relaxed);
            ram.prefetch_rows += t.ram_stats.prefetch_rows.load(Ordering::Relaxed);
            ram_latency.merge(&t.ram_stats.latency);
            let d = &t.disk_stats;
            nvme.hits += d.rows.load(Ordering::Relaxed);
            nvme.bytes += d.row_bytes.load(Ordering::Relaxed);
            nvme.reads += d.reads.load(Ordering::Relaxed);
            nvme.resident_bytes += d.bytes_read.load(Ordering::Relaxed);
            nvme.checksum_errors += d.checksum_errors.load(Ordering::Relaxed);
            nvme.misses +=
                d.io_errors.load(Ordering::Relaxed) + d.checksum_errors.load(Ordering::Relaxed);
            nvme_latency.merge(&d.latency);
            if reset {
                t.ram_stats.reset();
                t.disk_stats.reset();
            }
        }
        ram.hit_rate = ratio(ram.hits, ram.hits + ram.misses);
        nvme.hit_rate = ratio(nvme.hits, nvme.hits + nvme.misses);
        ram.latency = Some(latency(ram_latency.snapshot()));
        nvme.latency = Some(latency(nvme_latency.snapshot()));
        let c = &e.counters;
        #[cfg_attr(not(feature = "cuda"), allow(unused_mut))]
        let mut tiers = vec![ram, nvme];
        #[cfg(feature = "cuda")]
        {
            let mut gpu = pb::TierStats {
                tier: "gpu".into(),
                policy: "hot-set".into(),
                ..Default::default()
            };
            let mut any = false;
            for t in e.tables() {
                if let Some(g) = t.gpu() {
                    let s = g.stats();
                    any = true;
                    gpu.hits += s.hits;
                    gpu.misses += s.misses;
                    gpu.bytes += s.hits * g.row_bytes() as u64;
                    gpu.resident_rows += s.resident_rows;
                    gpu.resident_bytes += s.resident_rows * g.row_bytes() as u64;
                    gpu.capacity_bytes += s.device_bytes;
                    gpu.reads += s.refreshes;
                    if reset {
                        g.reset_counters();
                    }
                }
            }
            gpu.hit_rate = ratio(gpu.hits, gpu.hits + gpu.misses);
            if any {
                tiers.insert(0, gpu);
            }
        }
        let out = pb::StatsResponse {
            tiers,
            request_latency: Some(latency(e.request_latency.snapshot())),
            requests: c.requests.load(Ordering::Relaxed),
            rows_served: c.rows.load(Ordering::Relaxed),
            bytes_served: c.bytes.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            io_engine: e.io_engine_name().into(),
            uptime_s: e.uptime_s(),
            process_rss_bytes: process_rss_bytes(),
            fixed_overhead_bytes: e.tables().map(|t| t.fixed_memory_bytes() as u64).sum(),
        };
        if reset {
            e.request_latency.reset();
            for counter in [&c.requests, &c.rows, &c.bytes, &c.errors] {
                counter.store(0, Ordering::Relaxed);
            }
        }
        Ok(Response::new(out))
    }
}

/// Resident set size of this process from /proc/self/statm (0 where unavailable).
fn process_rss_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

impl StoreService {
    /// Opens a worker's device buffer on the VRAM tier's GPU.
    fn open_cuda_ipc(&self, ipc: pb::CudaIpcRegion) -> Result<RegionMemory, Status> {
        #[cfg(feature = "cuda")]
        {
            let Some((device, ctx)) = self.engine.gpu_context() else {
                return Err(Status::failed_precondition(
                    "CUDA IPC regions need a server started with a GPU tier (--gpu-budget)",
                ));
            };
            if ipc.device as usize != device {
                return Err(Status::invalid_argument(format!(
                    "the buffer is on GPU {}, the VRAM tier on GPU {device}",
                    ipc.device
                )));
            }
            if ipc.size == 0 {
                return Err(Status::invalid_argument("CUDA IPC region of size 0"));
            }
            let memory = engram_store_cache::gpu::IpcMemory::open(&ctx, &ipc.ipc_handle)
                .map_err(|e| Status::invalid_argument(format!("CUDA IPC handle: {e}")))?;
            Ok(RegionMemory::CudaIpc {
                memory,
                offset: ipc.offset,
                size: ipc.size,
            })
        }
        #[cfg(not(feature = "cuda"))]
        {
            let _ = ipc;
            Err(Status::failed_precondition(
                "CUDA IPC regions need a server built with --features cuda and started with --gpu-budget",
            ))
        }
    }

    async fn lookup_into_region(
        &self,
        req: pb::LookupIntoRequest,
    ) -> Result<pb::LookupIntoResponse, LookupError> {
        let region = self.regions.get(req.region_id, &req.token)?;
        // Check the request whole (ids, tokens, limits) before touching the region.
        let (table, source) = match req.source {
            Some(pb::lookup_into_request::Source::Rows(rows)) => {
                let ids = row_ids(&self.engine, rows.ids, &rows.ids_le)?;
                let table = self.engine.table(&rows.table)?.clone();
                table.check_ids(&ids)?;
                (table, IntoSource::Rows(ids))
            }
            Some(pb::lookup_into_request::Source::Ngrams(req)) => {
                let query = NgramQuery::from(req);
                let layer = self
                    .engine
                    .ngram_layer(&query.group, query.layer_id)?
                    .clone();
                self.engine
                    .check_batch(layer.output_rows(&query.sequences))?;
                let ids = layer.deduped_row_ids(&query.sequences, query.compressed)?;
                (layer.table().clone(), IntoSource::Ngrams(ids))
            }
            None => {
                return Err(LookupError::InvalidArgument(
                    "LookupInto names no rows".into(),
                ));
            }
        };
        let count = match &source {
            IntoSource::Rows(ids) => ids.len(),
            IntoSource::Ngrams(ids) => ids.len(),
        };
        let rb = u64::from(table.manifest().row_bytes);
        let len = count as u64 * rb;
        let end = req.offset.checked_add(len).ok_or_else(|| {
            LookupError::InvalidArgument(format!("offset {} overflows", req.offset))
        })?;
        let mut lease = region.lease(req.offset..end)?;
        #[cfg_attr(not(feature = "cuda"), allow(unused_mut))]
        let mut gpu_hits = 0;
        match (lease.shm_bytes(), &source) {
            (Some(dst), IntoSource::Rows(ids)) => table.lookup_into(ids, dst).await?,
            (Some(dst), IntoSource::Ngrams(ids)) => table.lookup_deduped_into(ids, dst).await?,
            (None, source) => {
                let Some(_dst) = lease.device_ptr() else {
                    return Err(LookupError::InvalidArgument(
                        "region kind not writable here".into(),
                    ));
                };
                #[cfg(feature = "cuda")]
                {
                    gpu_hits = match source {
                        IntoSource::Rows(ids) => table.lookup_into_device(ids, _dst).await?,
                        IntoSource::Ngrams(d) => {
                            let all: Vec<u64> = (0..d.len()).filter_map(|p| d.id_at(p)).collect();
                            table.lookup_into_device(&all, _dst).await?
                        }
                    };
                }
                #[cfg(not(feature = "cuda"))]
                let _ = source;
            }
        }
        Ok(pb::LookupIntoResponse {
            row_count: count as u64,
            row_bytes: rb as u32,
            bytes_written: len,
            gpu_hits,
        })
    }
}

/// What a LookupInto writes: rows by id, or the deduped rows of an n-gram query.
enum IntoSource {
    Rows(Vec<u64>),
    Ngrams(DedupedIds),
}

/// The row ids of a request, given as `ids` or as `ids_le` (packed little-endian u64s), checked
/// against the batch limit before anything is decoded.
fn row_ids(engine: &Engine, ids: Vec<u64>, ids_le: &[u8]) -> Result<Vec<u64>, LookupError> {
    if ids_le.is_empty() {
        engine.check_batch(ids.len())?;
        return Ok(ids);
    }
    if !ids.is_empty() {
        return Err(LookupError::InvalidArgument(
            "a request carries its row ids in ids or in ids_le, not both".into(),
        ));
    }
    if !ids_le.len().is_multiple_of(8) {
        return Err(LookupError::InvalidArgument(format!(
            "ids_le holds {} bytes, not a whole number of 8-byte ids",
            ids_le.len()
        )));
    }
    engine.check_batch(ids_le.len() / 8)?;
    Ok(ids_le
        .chunks_exact(8)
        .map(|c| {
            let mut id = [0u8; 8];
            id.copy_from_slice(c);
            u64::from_le_bytes(id)
        })
        .collect())
}

/// Counts prefetched rows towards the VRAM tier's next refresh (no-op without a GPU tier), after
/// the prefetch has brought them into RAM so the refresh finds them there.
fn hint_vram(table: &ServedTable, ids: &[u64]) {
    #[cfg(feature = "cuda")]
    table.gpu_hint(ids);
    #[cfg(not(feature = "cuda"))]
    let _ = (table, ids);
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}
