//! How the engine serves: data directory, tier budgets and policies, I/O engine, limits, and how
//! new table versions are picked up.

use std::path::PathBuf;
use std::time::Duration;

use engram_store_cache::io::IoEngineKind;

use super::gpu_devices::GpuDevices;
use super::gpu_weights::GpuWeights;

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
    /// Most rows one request may ask for. Default 1,048,576.
    pub max_batch_ids: usize,
    /// VRAM tier budget of each device in `gpu_devices`, over all tables, bytes. Default 0 (no
    /// VRAM tier).
    pub gpu_budget_bytes: u64,
    /// Weights of tables on `gpu_budget_bytes`: each device's budget is split among tables in
    /// proportion to data bytes times weight, so a table on the critical path (an Engram
    /// model's layer-1 table) can be given more of the VRAM tier. The RAM budget is split by
    /// bytes alone. A table not named weighs 1; a name no table served has is kept (the table
    /// may appear later). Default: none named (the split by bytes).
    pub gpu_weights: GpuWeights,
    /// CUDA devices with a VRAM tier (one per table on each, under `gpu_budget_bytes` each); a
    /// LookupInto or channel into a device buffer uses its device's tier, host requests the
    /// first device's. Default device 0.
    pub gpu_devices: GpuDevices,
    /// How often the VRAM hot set is refreshed. Default 1 s.
    pub gpu_refresh: Duration,
    /// A background refresh that would bring in fewer rows than this waits for the next
    /// period (at most `engram_store_cache::tier::MAX_DEFERRED_REFRESHES` in a row). Default 0:
    /// every refresh with rows to bring in runs.
    pub gpu_refresh_min_rows: usize,
    /// Bytes of answers built in server memory and not yet sent, at most. Default 1 GiB.
    pub answer_budget_bytes: u64,
    /// How long a request waits for room in the answer budget before RESOURCE_EXHAUSTED.
    /// Default 100 ms.
    pub answer_wait: Duration,
    /// Rows of prefetches queued or running, at most; beyond, prefetches are dropped (and
    /// counted). Default 4,194,304.
    pub prefetch_queue_rows: usize,
    /// Prefetches running at once. Default 1.
    pub prefetch_tasks: usize,
    /// Regions one connection may hold. Default 64.
    pub max_regions_per_connection: usize,
    /// Regions the server holds in all. Default 1,024.
    pub max_regions: usize,
    /// Rows of requests admitted and not yet answered, over all requests; a request that would
    /// go past it is refused at once with RESOURCE_EXHAUSTED (one larger than the whole bound is
    /// admitted alone). Default 2,097,152.
    pub max_rows_in_flight: usize,
    /// Versions of each table kept open and on disk: the one served and those before it, which
    /// clients may pin; older versions' files are removed once no request reads them. At least
    /// 1. Default 2.
    pub keep_versions: usize,
    /// How often the data directory is looked at for new table versions (zero: never; a Reload
    /// still looks at once). Default 2 s.
    pub version_watch: Duration,
    /// Directory of a memory file system (`/dev/shm`) where tables held whole in RAM keep their
    /// rows as one shared-memory file, for the ShareTable RPC: a worker on this host maps it
    /// (and the VRAM tier over CUDA IPC) and reads rows with its own kernels. Default none.
    pub share_memory_dir: Option<PathBuf>,
    /// Sidecar channels one connection may hold. Default 8.
    pub max_channels_per_connection: usize,
    /// Sidecar channels the server holds in all. Default 64.
    pub max_channels: usize,
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
            gpu_weights: GpuWeights::default(),
            gpu_devices: GpuDevices::default(),
            gpu_refresh: Duration::from_secs(1),
            gpu_refresh_min_rows: 0,
            answer_budget_bytes: 1 << 30,
            answer_wait: Duration::from_millis(100),
            prefetch_queue_rows: 1 << 22,
            prefetch_tasks: 1,
            max_regions_per_connection: 64,
            max_regions: 1024,
            max_rows_in_flight: 1 << 21,
            keep_versions: 2,
            version_watch: Duration::from_secs(2),
            share_memory_dir: None,
            max_channels_per_connection: 8,
            max_channels: 64,
        }
    }
}
