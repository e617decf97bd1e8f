//! The VRAM tier of one table: a slot arena of rows in device memory, two device hash indexes
//! (row id -> slot; one active, one being rebuilt), preallocated scratch for one batch at a time,
//! and the sampled counts that choose which rows belong here.
//!
//! A lookup copies its ids to the device, runs the gather kernel against the active index, and
//! gets rows plus a hit flag per row (into a host buffer, or straight into another device buffer
//! such as a worker's tensor opened over CUDA IPC). A refresh never blocks lookups for longer
//! than a pointer swap: (1) publish an index without the rows that leave, and wait until no
//! lookup uses the old index; (2) write the entering rows into the freed slots, which no index
//! references; (3) publish the index with them. Device memory (arena + two indexes + scratch)
//! stays within the configured budget.
//!
//! The index is kept on the host too (12 bytes a bucket: 15 to 30 bytes of host memory per
//! slot) and edited in place; a publish uploads only the buckets that differ between it and the
//! inactive device buffer, which holds the index as of the publish before: the buckets that
//! publish and this one changed. (Uploading whole indexes, 101 MB each for a 6.7M-row tier and
//! four per refresh of a table, ran beside a model's own GPU work every second.)
//!
//! A tier can be shared with a worker process on the same GPU ([`GpuTier::share`]): the arena,
//! both index buffers, a tag per slot (the row id it holds, `u64::MAX` while free) and a control
//! word (which index is active) are shareable allocations exported as file descriptors
//! ([`DeviceBuffer::shareable`]), and the worker's own kernel probes the active index and reads
//! the rows. Such a reader cannot
//! take the epoch lock, so once shared, whatever the store stops referencing (a freed slot, the
//! index buffer that was active) is rewritten only [`SHARED_GRACE`] later, and a reader checks
//! the slot's tag before and after it copies the row (a mismatch: the row is read elsewhere).
//! When a shared tier ends (its table version is retired), its memory outlives it by
//! [`SHARED_RETIRE`], marked retired in the control block, so a reader takes no row from it.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use parking_lot::{Mutex, RwLock};

use super::device_buffer::DeviceBuffer;
use super::hot_counter::HotCounter;
use super::hot_index::{HotIndex, buckets_for};
use super::kernels::Kernels;
use super::recorder::Recorder;
use super::{GpuError, probe};
use crate::key_hash::KeyHashBuilder;

#[cfg(feature = "gpu-bench")]
mod bench;
mod index_lag;
mod refresh;

use index_lag::Lag;
pub use refresh::{RefreshPlan, RefreshUnderway};

/// How to build a [`GpuTier`].
#[derive(Debug, Clone)]
pub struct GpuTierConfig {
    /// CUDA device ordinal.
    pub device: usize,
    /// Device bytes the tier may hold in all (arena, indexes, scratch).
    pub budget_bytes: u64,
    /// Bytes per row.
    pub row_bytes: usize,
    /// Most ids per gather call (larger calls are chunked). Default 1,048,576.
    pub max_batch: usize,
    /// Rows written per refresh step. Default 65,536.
    pub refresh_chunk: usize,
    /// Rows of the table, if known: the access counts are then one byte a row where that is
    /// less memory than a map of the counted ids (see [`HotCounter::for_table`]).
    pub table_rows: Option<u64>,
}

impl GpuTierConfig {
    /// Defaults for `row_bytes`-byte rows under `budget_bytes` on `device`.
    pub fn new(device: usize, budget_bytes: u64, row_bytes: usize) -> Self {
        Self {
            device,
            budget_bytes,
            row_bytes,
            max_batch: 1 << 20,
            refresh_chunk: 1 << 16,
            table_rows: None,
        }
    }
}

/// Counters of the tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuStats {
    /// Rows found in VRAM.
    pub hits: u64,
    /// Rows looked for and not found.
    pub misses: u64,
    /// Rows resident.
    pub resident_rows: u64,
    /// Slots.
    pub capacity_rows: u64,
    /// Device bytes held.
    pub device_bytes: u64,
    /// Refreshes applied.
    pub refreshes: u64,
    /// Rows the refresh under way is bringing in (0: none running; see
    /// [`GpuTier::refresh_underway`]).
    pub rows_entering: u64,
    /// Looked-up ids left uncounted because the counting thread was behind.
    pub counts_dropped: u64,
}

struct Scratch {
    stream: Arc<CudaStream>,
    ids: DeviceBuffer,
    rows: DeviceBuffer,
    flags: DeviceBuffer,
    host_flags: Vec<u32>,
}

/// The refresh's state, held for a whole refresh (grace waits included).
struct Residency {
    stream: Arc<CudaStream>,
    rows: DeviceBuffer,
    slots: DeviceBuffer,
    /// Host copy of the active device index (after a publish: of the one just published).
    index: HotIndex,
    /// What the inactive device index lacks of `index`.
    lag: Lag,
    free: Vec<u32>,
    generation: u64,
    /// When an index was last published (the grace of a shared tier counts from it).
    published_at: Instant,
}

/// How long a shared tier leaves what it stopped referencing (freed slots, the index buffer
/// that was active) untouched before rewriting it: far longer than a worker's gather kernel
/// runs, time slices and preemption included.
pub const SHARED_GRACE: Duration = Duration::from_millis(500);

/// How long a shared tier's memory outlives the tier (a table version retired while a worker
/// reads it): the control block says "retired" at once, so the worker's kernels read every row
/// from host memory, and it has this long to share the new version and close its mappings.
pub const SHARED_RETIRE: Duration = Duration::from_secs(30);

/// The device memory a shared tier exports.
struct SharedMemory {
    arena: DeviceBuffer,
    /// Both indexes' keys, index `k` from bucket `k * buckets`.
    index_keys: DeviceBuffer,
    /// Both indexes' slots, likewise.
    index_slots: DeviceBuffer,
    /// Row id held per slot, [`FREE_TAG`] for none.
    tags: DeviceBuffer,
    /// Word 0: the active index; word 1: nonzero once the tier is retired.
    control: DeviceBuffer,
}

/// Tag of a slot that holds no row (or one being written).
const FREE_TAG: u64 = u64::MAX;

/// Bytes of the control block: word 0 (u32) is the active index, 0 or 1; word 1 (u32) is
/// nonzero once the tier is retired (readers then take no row from it).
const CONTROL_BYTES: usize = 64;

/// The buffers a shared tier exports, in the order of [`SharedGpuTier::parts`].
pub const SHARED_PARTS: [&str; 5] = ["arena", "index_keys", "index_slots", "tags", "control"];

/// One exported buffer of a shared tier.
#[derive(Debug, Clone)]
pub struct SharedPart {
    /// A file descriptor naming the allocation (a POSIX fd shareable handle), for a process on
    /// the same GPU to import.
    pub fd: Arc<OwnedFd>,
    /// Bytes the importer maps (the allocation's size).
    pub bytes: u64,
}

/// What a worker process on the same GPU needs to read a shared tier (see [`GpuTier::share`]).
#[derive(Debug, Clone)]
pub struct SharedGpuTier {
    /// CUDA device ordinal.
    pub device: usize,
    /// Bytes per row; slot `s` is at `s * row_bytes` of the arena.
    pub row_bytes: usize,
    /// Slots in the arena.
    pub capacity: usize,
    /// Buckets per index (a power of two); index `k` is at bucket `k * buckets`.
    pub buckets: usize,
    /// The buffers, as [`SHARED_PARTS`] names them: the arena; the two indexes' keys (`u64`,
    /// `u64::MAX` empty), `2 * buckets`; their slots (`u32`), `2 * buckets`; the slot tags
    /// (`u64` row id held, `u64::MAX` none), `capacity`; the control block (`u32` active index
    /// at byte 0, `u32` retired at byte 4).
    pub parts: [SharedPart; 5],
}

/// The VRAM tier of one table.
pub struct GpuTier {
    device: usize,
    ctx: Arc<CudaContext>,
    kernels: Kernels,
    row_bytes: usize,
    capacity: usize,
    buckets: usize,
    max_batch: usize,
    refresh_chunk: usize,
    /// What a worker in another process may read (kept past the tier's end once shared).
    mem: Arc<SharedMemory>,
    /// Set once the tier was shared: rewrites then wait [`SHARED_GRACE`].
    shared: AtomicBool,
    active: AtomicUsize,
    epoch: RwLock<()>,
    scratch: Mutex<Scratch>,
    residency: Mutex<Residency>,
    /// Row id -> slot of every resident row (the host view): locked only briefly, so residency
    /// checks and stats never wait for a refresh in progress.
    resident: RwLock<HashMap<u64, u32, KeyHashBuilder>>,
    counter: Arc<HotCounter>,
    recorder: Recorder,
    hits: AtomicU64,
    misses: AtomicU64,
    refreshes: AtomicU64,
    /// Rows of the refresh under way (0: none), for stats.
    entering: AtomicU64,
    device_bytes: u64,
}

impl std::fmt::Debug for GpuTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuTier")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Batches of looked-up ids that may wait for the counting thread before more are dropped.
const RECORD_QUEUE: usize = 64;

fn grid(threads: u64) -> LaunchConfig {
    let block = 256u32;
    LaunchConfig {
        grid_dim: (threads.div_ceil(u64::from(block)).max(1) as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl GpuTier {
    /// Opens the device, sizes the tier to the budget and allocates everything up front.
    pub fn new(config: &GpuTierConfig) -> Result<Self, GpuError> {
        // Fault injection: the device memory cannot be had.
        #[cfg(feature = "failpoints")]
        fail::fail_point!("gpu_alloc_fail", |_| Err(GpuError::Cuda {
            what: "allocate the VRAM tier",
            message: "out of device memory (failpoint gpu_alloc_fail)".into(),
        }));
        let ctx = probe(config.device)?;
        // SAFETY: this tier orders its own work explicitly (one stream per role, synchronised
        // before results are used), so cudarc's implicit cross-stream events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let kernels = Kernels::load(&ctx)?;
        let rb = config.row_bytes.max(1) as u64;
        let max_batch = config.max_batch.max(1);
        let refresh_chunk = config.refresh_chunk.max(1);
        let scratch_bytes =
            max_batch as u64 * (8 + rb + 4) + refresh_chunk as u64 * (rb.max(8) + 4);
        let room = config.budget_bytes.checked_sub(scratch_bytes).ok_or_else(|| {
            GpuError::Budget(format!(
                "a GPU budget of {} bytes does not cover the {} bytes of batch scratch (max batch {})",
                config.budget_bytes, scratch_bytes, max_batch
            ))
        })?;
        // The shared buffers' bytes for `cap` slots, each rounded up to the granularity of a
        // shareable allocation (as allocated below).
        let granularity = DeviceBuffer::shareable_granularity(&ctx)? as u64;
        let shared_bytes = |cap: usize| {
            let buckets = buckets_for(cap) as u64;
            [
                cap as u64 * rb,
                2 * buckets * 8,
                2 * buckets * 4,
                cap as u64 * 8,
                CONTROL_BYTES as u64,
            ]
            .iter()
            .map(|b| b.div_ceil(granularity) * granularity)
            .sum::<u64>()
        };
        // Largest capacity whose arena and two indexes fit the room left (binary search: the
        // index grows in power-of-two steps).
        let fits = |cap: usize| shared_bytes(cap) <= room;
        let (mut lo, mut hi) = (0usize, (room / rb) as usize);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let capacity = lo;
        if capacity == 0 {
            return Err(GpuError::Budget(format!(
                "a GPU budget of {} bytes holds no row",
                config.budget_bytes
            )));
        }
        let buckets = buckets_for(capacity);
        let device_bytes = shared_bytes(capacity) + scratch_bytes;
        let stream = ctx
            .new_stream()
            .map_err(|e| GpuError::cuda("create a stream", e))?;
        let refresh_stream = ctx
            .new_stream()
            .map_err(|e| GpuError::cuda("create a stream", e))?;
        // What a worker may read is shareable (each buffer rounded up to the granularity, as
        // `shared_bytes` counted it in the budget); the rest plain.
        let arena = DeviceBuffer::shareable(&ctx, capacity * rb as usize, 0)?;
        // Empty keys and free tags are all-ones bytes.
        let index_keys = DeviceBuffer::shareable(&ctx, 2 * buckets * 8, 0xff)?;
        let index_slots = DeviceBuffer::shareable(&ctx, 2 * buckets * 4, 0)?;
        let tags = DeviceBuffer::shareable(&ctx, capacity * 8, 0xff)?;
        let control = DeviceBuffer::shareable(&ctx, CONTROL_BYTES, 0)?;
        let scratch = Scratch {
            ids: DeviceBuffer::zeroed(&ctx, max_batch * 8)?,
            rows: DeviceBuffer::zeroed(&ctx, max_batch * rb as usize)?,
            flags: DeviceBuffer::zeroed(&ctx, max_batch * 4)?,
            host_flags: vec![0; max_batch],
            stream: stream.clone(),
        };
        let residency = Residency {
            // Also the scratch of tag writes: 8 bytes a slot.
            rows: DeviceBuffer::zeroed(&ctx, refresh_chunk * rb.max(8) as usize)?,
            slots: DeviceBuffer::zeroed(&ctx, refresh_chunk * 4)?,
            stream: refresh_stream,
            // Both device buffers start empty (all-ones keys), as the host index does.
            index: HotIndex::empty(buckets),
            lag: Lag::Buckets(Vec::new()),
            free: (0..capacity as u32).rev().collect(),
            generation: 0,
            published_at: Instant::now(),
        };
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("initialise the tier", e))?;
        let counted = capacity.saturating_mul(4).max(1 << 16);
        let counter = Arc::new(match config.table_rows {
            Some(rows) => HotCounter::for_table(rows, counted, 2),
            None => HotCounter::new(counted, 2),
        });
        let recorder = Recorder::spawn(counter.clone(), RECORD_QUEUE)?;
        Ok(Self {
            device: config.device,
            ctx,
            kernels,
            row_bytes: rb as usize,
            capacity,
            buckets,
            max_batch,
            refresh_chunk,
            mem: Arc::new(SharedMemory {
                arena,
                index_keys,
                index_slots,
                tags,
                control,
            }),
            shared: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            epoch: RwLock::new(()),
            scratch: Mutex::new(scratch),
            residency: Mutex::new(residency),
            resident: RwLock::new(HashMap::with_hasher(KeyHashBuilder)),
            counter,
            recorder,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            entering: AtomicU64::new(0),
            device_bytes,
        })
    }

    /// Slots in the arena.
    pub fn capacity_rows(&self) -> usize {
        self.capacity
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The CUDA device ordinal it lives on.
    pub fn device(&self) -> usize {
        self.device
    }

    /// The CUDA context (for opening IPC handles on the same device).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Counts accesses to `ids` (sampled) for choosing the hot set, on the tier's counting
    /// thread: the caller pays for a copy of the ids, and never waits.
    pub fn record(&self, ids: &[u64]) {
        self.recorder.record(ids);
    }

    /// Counts a prefetch hint (these rows are about to be used) on the tier's counting thread,
    /// so the caller never waits for a refresh ranking the counts.
    pub fn hint(&self, ids: &[u64]) {
        self.recorder.hint(&self.counter, ids, 4);
    }

    /// True if `id` is resident now (host view).
    pub fn contains(&self, id: u64) -> bool {
        self.resident.read().contains_key(&id)
    }

    /// Counters.
    pub fn stats(&self) -> GpuStats {
        GpuStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            resident_rows: self.resident.read().len() as u64,
            capacity_rows: self.capacity as u64,
            device_bytes: self.device_bytes,
            refreshes: self.refreshes.load(Ordering::Relaxed),
            rows_entering: self.entering.load(Ordering::Relaxed),
            counts_dropped: self.recorder.dropped(),
        }
    }

    /// Zeroes the hit and miss counters (refreshes and dropped counts keep counting).
    pub fn reset_counters(&self) {
        self.hits.store(0, Ordering::Relaxed);
        self.misses.store(0, Ordering::Relaxed);
    }

    fn bind(&self) -> Result<(), GpuError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| GpuError::cuda("bind the CUDA context", e))
    }

    fn gather_fn(&self) -> (&CudaFunction, u32) {
        if self.row_bytes.is_multiple_of(16) {
            (&self.kernels.gather_hot_16, (self.row_bytes / 16) as u32)
        } else {
            (&self.kernels.gather_hot_1, self.row_bytes as u32)
        }
    }

    fn scatter_fn(&self) -> (&CudaFunction, u32) {
        if self.row_bytes.is_multiple_of(16) {
            (&self.kernels.scatter_16, (self.row_bytes / 16) as u32)
        } else {
            (&self.kernels.scatter_1, self.row_bytes as u32)
        }
    }

    /// Gathers the resident rows of `ids` into `out` (host, `ids.len() * row_bytes` bytes) and
    /// sets `hit[i]`; rows that miss are left for the caller to fill.
    pub fn gather_to_host(
        &self,
        ids: &[u64],
        out: &mut [u8],
        hit: &mut Vec<bool>,
    ) -> Result<u64, GpuError> {
        if out.len() != ids.len() * self.row_bytes {
            return Err(GpuError::Invalid(format!(
                "output of {} bytes for {} rows",
                out.len(),
                ids.len()
            )));
        }
        hit.clear();
        let mut hits = 0;
        for (chunk, dst) in ids
            .chunks(self.max_batch)
            .zip(out.chunks_mut(self.max_batch * self.row_bytes))
        {
            hits += self.gather_chunk(chunk, Target::Host(dst), hit)?;
        }
        Ok(hits)
    }

    /// Gathers the resident rows of `ids` into device memory at `dst` (`ids.len() * row_bytes`
    /// bytes the caller guarantees are valid device memory of this context) and sets `hit[i]`.
    pub fn gather_to_device(
        &self,
        ids: &[u64],
        dst: u64,
        hit: &mut Vec<bool>,
    ) -> Result<u64, GpuError> {
        hit.clear();
        let mut hits = 0;
        for (i, chunk) in ids.chunks(self.max_batch).enumerate() {
            let at = dst + (i * self.max_batch * self.row_bytes) as u64;
            hits += self.gather_chunk(chunk, Target::Device(at), hit)?;
        }
        Ok(hits)
    }

    fn gather_chunk(
        &self,
        ids: &[u64],
        target: Target<'_>,
        hit: &mut Vec<bool>,
    ) -> Result<u64, GpuError> {
        let n = ids.len();
        if n == 0 {
            return Ok(0);
        }
        let _epoch = self.epoch.read();
        let a = self.active.load(Ordering::Acquire);
        let mut s = self.scratch.lock();
        let s = &mut *s;
        self.bind()?;
        let stream = s.stream.clone();
        let cu = stream.cu_stream();
        let ids_ptr = s.ids.ptr();
        // SAFETY: `ids` fits the scratch (n <= max_batch) and stays borrowed until the
        // synchronize below.
        unsafe { cudarc::driver::result::memcpy_htod_async(ids_ptr, ids, cu) }
            .map_err(|e| GpuError::cuda("copy ids to the device", e))?;
        let out_ptr = match target {
            Target::Host(_) => s.rows.ptr(),
            Target::Device(p) => p,
        };
        let (f, words) = self.gather_fn();
        let (keys, slots) = self.index_buffer(a);
        let (arena, flags) = (self.mem.arena.ptr(), s.flags.ptr());
        let (n32, mask) = (n as u32, self.buckets as u64 - 1);
        let mut b = stream.launch_builder(f);
        b.arg(&ids_ptr)
            .arg(&n32)
            .arg(&keys)
            .arg(&slots)
            .arg(&mask)
            .arg(&arena)
            .arg(&words)
            .arg(&out_ptr)
            .arg(&flags);
        // SAFETY: the kernel's arguments match its signature; every pointer is live device
        // memory of this context sized for n rows (scratch, index, arena, or the caller's dst).
        unsafe { b.launch(grid(n as u64 * 32)) }
            .map_err(|e| GpuError::cuda("launch the gather kernel", e))?;
        let host_flags = &mut s.host_flags[..n];
        // SAFETY: host_flags holds n u32 and stays borrowed until the synchronize below.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(host_flags, flags, cu) }
            .map_err(|e| GpuError::cuda("copy hit flags to the host", e))?;
        if let Target::Host(dst) = target {
            // SAFETY: dst holds n rows, as does the scratch it is copied from; it stays
            // borrowed until the synchronize below.
            unsafe { cudarc::driver::result::memcpy_dtoh_async(dst, out_ptr, cu) }
                .map_err(|e| GpuError::cuda("copy rows to the host", e))?;
        }
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("gather", e))?;
        let hits = host_flags.iter().filter(|&&f| f != 0).count() as u64;
        hit.extend(host_flags.iter().map(|&f| f != 0));
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.misses.fetch_add(n as u64 - hits, Ordering::Relaxed);
        Ok(hits)
    }

    /// Writes packed host rows to device memory at `dst`, row `i` to position `positions[i]`,
    /// with one host-to-device copy and the scatter kernel.
    pub fn scatter_to_device(
        &self,
        packed: &[u8],
        positions: &[u32],
        dst: u64,
    ) -> Result<(), GpuError> {
        if packed.len() != positions.len() * self.row_bytes {
            return Err(GpuError::Invalid(
                "packed rows and positions disagree".into(),
            ));
        }
        let mut s = self.scratch.lock();
        let s = &mut *s;
        self.bind()?;
        let stream = s.stream.clone();
        let cu = stream.cu_stream();
        for (rows, pos) in packed
            .chunks(self.max_batch * self.row_bytes)
            .zip(positions.chunks(self.max_batch))
        {
            let (rows_ptr, pos_ptr) = (s.rows.ptr(), s.flags.ptr());
            // SAFETY: both fit their scratch buffers (<= max_batch rows) and stay borrowed
            // until the synchronize below.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(rows_ptr, rows, cu)
                    .map_err(|e| GpuError::cuda("copy rows to the device", e))?;
                cudarc::driver::result::memcpy_htod_async(pos_ptr, pos, cu)
                    .map_err(|e| GpuError::cuda("copy positions to the device", e))?;
            }
            let (f, words) = self.scatter_fn();
            let n = pos.len() as u32;
            let mut b = stream.launch_builder(f);
            b.arg(&pos_ptr).arg(&n).arg(&rows_ptr).arg(&words).arg(&dst);
            // SAFETY: arguments match the kernel; positions index rows of the caller's dst.
            unsafe { b.launch(grid(u64::from(n) * u64::from(words))) }
                .map_err(|e| GpuError::cuda("launch the scatter kernel", e))?;
            stream
                .synchronize()
                .map_err(|e| GpuError::cuda("scatter", e))?;
        }
        Ok(())
    }

    /// Shares the tier with a worker process on the same GPU: file descriptors of its buffers
    /// (new ones each call) and the geometry it needs to probe the active index and read rows
    /// itself. From now on the tier rewrites what it stopped referencing only [`SHARED_GRACE`]
    /// later.
    pub fn share(&self) -> Result<SharedGpuTier, GpuError> {
        let m = &self.mem;
        let part = |b: &DeviceBuffer| -> Result<SharedPart, GpuError> {
            Ok(SharedPart {
                fd: Arc::new(b.export_fd()?),
                bytes: b.mapped_len() as u64,
            })
        };
        let shared = SharedGpuTier {
            device: self.device,
            row_bytes: self.row_bytes,
            capacity: self.capacity,
            buckets: self.buckets,
            parts: [
                part(&m.arena)?,
                part(&m.index_keys)?,
                part(&m.index_slots)?,
                part(&m.tags)?,
                part(&m.control)?,
            ],
        };
        self.shared.store(true, Ordering::Release);
        Ok(shared)
    }
}

impl Drop for GpuTier {
    /// A shared tier's memory is retired, not freed: its control block tells readers to take
    /// no row from it, and it is freed [`SHARED_RETIRE`] later on a thread of its own.
    fn drop(&mut self) {
        if !self.shared.load(Ordering::Acquire) {
            return;
        }
        let _ = self.mem.control.write(4, &[1u32]);
        let keep = self.mem.clone();
        let _ = std::thread::Builder::new()
            .name("gpu-tier-retire".into())
            .spawn(move || {
                std::thread::sleep(SHARED_RETIRE);
                drop(keep);
            });
    }
}

enum Target<'a> {
    Host(&'a mut [u8]),
    Device(u64),
}
