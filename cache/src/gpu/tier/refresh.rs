//! Refreshing a [`GpuTier`]: which rows the next refresh brings in and which leave
//! ([`GpuTier::plan_refresh`], from the sampled counts), and loading them without blocking
//! lookups ([`GpuTier::apply_refresh`]): publish an index without the leaving rows and wait
//! until no lookup uses the old one (and, once shared, [`SHARED_GRACE`]), write the entering
//! rows into the freed slots, publish the index with them. The refresh under way shows in
//! [`GpuStats::rows_entering`] ([`GpuTier::refresh_underway`]).

use super::index_lag::Upload;
use super::*;

/// A refresh under way on a tier (from [`GpuTier::refresh_underway`]); dropping it, however
/// the refresh ended, takes its rows off the tier's `rows_entering`.
#[derive(Debug)]
pub struct RefreshUnderway<'a> {
    tier: &'a GpuTier,
    rows: u64,
}

impl Drop for RefreshUnderway<'_> {
    fn drop(&mut self) {
        self.tier.entering.fetch_sub(self.rows, Ordering::Relaxed);
    }
}

/// Rows a refresh will bring in (the caller fetches their bytes) and the resident rows it
/// evicts.
#[derive(Debug, Clone, Default)]
pub struct RefreshPlan {
    /// Rows to load, in this order.
    pub entering: Vec<u64>,
    leaving: Vec<u64>,
    generation: u64,
}

/// Counts a row needs to be brought into VRAM: a row sampled once (most rows of a uniform tail,
/// never asked for again) would only churn the arena; a prefetch hint counts 4 at once.
const MIN_COUNT: u32 = 2;

impl GpuTier {
    /// Marks a refresh of `rows` entering rows under way until the returned guard drops (its
    /// reads through the tiers below and its writes into VRAM): [`GpuStats::rows_entering`].
    /// Refreshes under way at once (the background one and a new version's warm) add up.
    pub fn refresh_underway(&self, rows: usize) -> RefreshUnderway<'_> {
        let rows = rows as u64;
        self.entering.fetch_add(rows, Ordering::Relaxed);
        RefreshUnderway { tier: self, rows }
    }

    /// What the next refresh should load: the hottest rows not yet resident, among those
    /// counted at least twice (see [`HotCounter`] for how counts age); and which resident rows
    /// leave for them. Counts every access and hint handed over before the call.
    pub fn plan_refresh(&self) -> RefreshPlan {
        self.recorder.flush();
        let wanted = self.counter.top(self.capacity, MIN_COUNT);
        let wanted_set: std::collections::HashSet<u64, KeyHashBuilder> =
            wanted.iter().copied().collect();
        let r = self.residency.lock();
        let resident = self.resident.read();
        let entering = wanted
            .into_iter()
            .filter(|id| !resident.contains_key(id))
            .collect();
        let leaving = resident
            .keys()
            .filter(|id| !wanted_set.contains(id))
            .copied()
            .collect();
        RefreshPlan {
            entering,
            leaving,
            generation: r.generation,
        }
    }

    /// Loads `plan.entering` (their bytes packed in `rows`), evicting the resident rows the
    /// plan lets go, without blocking lookups. Returns the rows loaded. A refresh that fails
    /// part-way leaves every published index right (rows it did not finish are absent).
    pub fn apply_refresh(&self, plan: &RefreshPlan, rows: &[u8]) -> Result<usize, GpuError> {
        if rows.len() != plan.entering.len() * self.row_bytes {
            return Err(GpuError::Invalid(
                "refresh rows do not match the plan".into(),
            ));
        }
        let mut r = self.residency.lock();
        if r.generation != plan.generation {
            return Err(GpuError::Invalid(
                "the hot set changed since this plan was made".into(),
            ));
        }
        // Whatever happens below, a plan made before it is stale.
        r.generation += 1;
        self.bind()?;
        let leaving: Vec<(u64, u32)> = {
            let resident = self.resident.read();
            plan.leaving
                .iter()
                .filter_map(|id| resident.get(id).map(|&s| (*id, s)))
                .collect()
        };
        // (1) Publish the index without the leaving rows; wait out lookups on the old one.
        let unpublished = self.publish_edits(&mut r, |index, changed| {
            for &(id, _) in &leaving {
                index.remove(id, changed);
            }
        });
        if let Err(e) = unpublished {
            for &(id, slot) in &leaving {
                r.index.insert(id, slot, &mut Vec::new());
            }
            return Err(e);
        }
        {
            let mut resident = self.resident.write();
            for (id, _) in &leaving {
                resident.remove(id);
            }
        }
        let freed: Vec<u32> = leaving.iter().map(|&(_, s)| s).collect();
        // The freed slots go back even if their tags cannot be rewritten: no index refers to
        // them, and a slot is tagged again before an index does.
        let tagged = self.write_tags(&r, &freed, &vec![FREE_TAG; freed.len()]);
        r.free.extend(freed);
        tagged?;
        // (2) Write entering rows into free slots, which no published index references (and,
        // shared, which no reader in another process has looked up for a grace period).
        self.wait_grace(&r);
        let n = plan.entering.len().min(r.free.len());
        let slots: Vec<u32> = (0..n).filter_map(|_| r.free.pop()).collect();
        let entering = &plan.entering[..slots.len()];
        let loaded = self.load_rows(
            &mut r,
            entering,
            &rows[..slots.len() * self.row_bytes],
            &slots,
        );
        if let Err(e) = loaded {
            for &id in entering {
                r.index.remove(id, &mut Vec::new());
            }
            r.free.extend(slots);
            return Err(e);
        }
        self.resident
            .write()
            .extend(entering.iter().copied().zip(slots.iter().copied()));
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        Ok(slots.len())
    }

    /// Refresh steps (2) and (3): writes `rows` of `ids` into `slots` and their tags, then
    /// publishes the index with them.
    fn load_rows(
        &self,
        r: &mut Residency,
        ids: &[u64],
        rows: &[u8],
        slots: &[u32],
    ) -> Result<(), GpuError> {
        let (f, words) = self.scatter_fn();
        let arena = self.mem.arena.ptr();
        self.scatter_through_refresh(r, f, words, rows, slots, arena)?;
        self.write_tags(r, slots, ids)?;
        self.publish_edits(r, |index, changed| {
            for (&id, &slot) in ids.iter().zip(slots) {
                // Never refused: the index has more buckets than the arena has slots.
                index.insert(id, slot, changed);
            }
        })
    }

    /// Once shared, sleeps until [`SHARED_GRACE`] has passed since the last publish.
    fn wait_grace(&self, r: &Residency) {
        if self.shared.load(Ordering::Acquire) {
            let until = r.published_at + SHARED_GRACE;
            let now = Instant::now();
            if until > now {
                std::thread::sleep(until - now);
            }
        }
    }

    /// Sets the tags of `slots` to `values` (row ids, or [`FREE_TAG`]): the byte scatter over
    /// 8-byte rows.
    pub(super) fn write_tags(
        &self,
        r: &Residency,
        slots: &[u32],
        values: &[u64],
    ) -> Result<(), GpuError> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tags = self.mem.tags.ptr();
        self.scatter_through_refresh(r, &self.kernels.scatter_1, 8, &bytes, slots, tags)
    }

    /// Writes packed items (`packed.len() / slots.len()` bytes each) to items `slots` of the
    /// device array at `dst` with scatter kernel `f` (`words` words an item), through the
    /// refresh scratch, `refresh_chunk` items at a time, waiting for each chunk.
    fn scatter_through_refresh(
        &self,
        r: &Residency,
        f: &CudaFunction,
        words: u32,
        packed: &[u8],
        slots: &[u32],
        dst: u64,
    ) -> Result<(), GpuError> {
        if slots.is_empty() {
            return Ok(());
        }
        let item = packed.len() / slots.len();
        let stream = r.stream.clone();
        let cu = stream.cu_stream();
        for (chunk_packed, chunk_slots) in packed
            .chunks(self.refresh_chunk * item)
            .zip(slots.chunks(self.refresh_chunk))
        {
            let (rows_ptr, slots_ptr) = (r.rows.ptr(), r.slots.ptr());
            // SAFETY: a chunk fits the refresh scratch (refresh_chunk slots, and
            // max(row_bytes, 8) bytes for each) and stays borrowed until the synchronize below.
            unsafe {
                cudarc::driver::result::memcpy_htod_async(rows_ptr, chunk_packed, cu)
                    .map_err(|e| GpuError::cuda("copy refresh items", e))?;
                cudarc::driver::result::memcpy_htod_async(slots_ptr, chunk_slots, cu)
                    .map_err(|e| GpuError::cuda("copy refresh slots", e))?;
            }
            let cn = chunk_slots.len() as u32;
            let mut b = stream.launch_builder(f);
            b.arg(&slots_ptr)
                .arg(&cn)
                .arg(&rows_ptr)
                .arg(&words)
                .arg(&dst);
            // SAFETY: arguments match the kernel; slots index items of the array at `dst`.
            unsafe { b.launch(grid(u64::from(cn) * u64::from(words))) }
                .map_err(|e| GpuError::cuda("launch the refresh scatter", e))?;
            stream
                .synchronize()
                .map_err(|e| GpuError::cuda("refresh scatter", e))?;
        }
        Ok(())
    }

    /// Edits the host index with `edit` (which names the buckets it writes), brings the
    /// inactive device buffer up to it, makes that buffer active, and waits until no lookup
    /// still uses the previous one (shared: first waits out the grace since the last publish,
    /// as readers elsewhere may still probe the inactive buffer). After an error the next two
    /// publishes upload the whole index.
    pub(super) fn publish_edits(
        &self,
        r: &mut Residency,
        edit: impl FnOnce(&mut HotIndex, &mut Vec<usize>),
    ) -> Result<(), GpuError> {
        let mut changed = Vec::new();
        edit(&mut r.index, &mut changed);
        if changed.is_empty() && matches!(r.lag, Lag::Buckets(_)) {
            // The active buffer already is the host index.
            return Ok(());
        }
        // Until this publish completes, neither buffer is known to match.
        let (upload, after) =
            std::mem::replace(&mut r.lag, Lag::Both).publish(&changed, self.buckets);
        self.wait_grace(r);
        let next = 1 - self.active.load(Ordering::Acquire);
        match upload {
            Upload::Buckets(buckets) => self.upload_buckets(r, next, &buckets)?,
            Upload::Whole => self.upload_index(r, next)?,
        }
        self.mem.control.write(0, &[next as u32])?;
        self.active.store(next, Ordering::Release);
        drop(self.epoch.write());
        r.published_at = Instant::now();
        r.lag = after;
        Ok(())
    }

    /// Device addresses of index buffer `k`'s keys and slots.
    pub(super) fn index_buffer(&self, k: usize) -> (u64, u64) {
        (
            self.mem.index_keys.ptr() + (k * self.buckets * 8) as u64,
            self.mem.index_slots.ptr() + (k * self.buckets * 4) as u64,
        )
    }

    /// Copies buckets `buckets` of the host index into index buffer `k`.
    fn upload_buckets(&self, r: &Residency, k: usize, buckets: &[usize]) -> Result<(), GpuError> {
        let (kp, sp) = self.index_buffer(k);
        let positions: Vec<u32> = buckets.iter().map(|&b| b as u32).collect();
        let keys: Vec<u8> = buckets
            .iter()
            .flat_map(|&b| r.index.keys[b].to_le_bytes())
            .collect();
        let slots: Vec<u8> = buckets
            .iter()
            .flat_map(|&b| r.index.slots[b].to_le_bytes())
            .collect();
        let scatter = &self.kernels.scatter_1;
        self.scatter_through_refresh(r, scatter, 8, &keys, &positions, kp)?;
        self.scatter_through_refresh(r, scatter, 4, &slots, &positions, sp)
    }

    /// Copies the whole host index into index buffer `k`.
    fn upload_index(&self, r: &Residency, k: usize) -> Result<(), GpuError> {
        let (kp, sp) = self.index_buffer(k);
        let stream = r.stream.clone();
        let cu = stream.cu_stream();
        // SAFETY: buffer `k` is referenced by no lookup (the last publish waited them out);
        // the host arrays are exactly `buckets` long and live until the synchronize.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(kp, &r.index.keys, cu)
                .map_err(|e| GpuError::cuda("upload index", e))?;
            cudarc::driver::result::memcpy_htod_async(sp, &r.index.slots, cu)
                .map_err(|e| GpuError::cuda("upload index", e))?;
        }
        stream
            .synchronize()
            .map_err(|e| GpuError::cuda("upload index", e))
    }
}
