//! The RAM tier: a concurrent cache of fixed-size rows under a byte budget.
//!
//! Rows live in slab arenas, one per shard (slot `i` of a shard holds its row at
//! `i * row_bytes`), so a cached row costs its bytes plus the policy's few bytes of metadata,
//! never a heap allocation of its own. Each shard is a mutex over a [`Policy`] and its arena;
//! the shard of a row is picked from the top bits of a mixed row id.
//!
//! A row admitted by a prefetch ([`RowCache::insert_prefetched`]) carries a one-bit flag in its
//! slot until its first lookup hit, which is counted in [`RowCacheStats::prefetch_hits`]: the
//! prefetched rows a lookup went on to use.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::key_hash::mix64;
use crate::policy::{self, Policy};
use crate::prefetch::prefetch_range;
use crate::shared_rows::{Arena, SharedRowsFile};

/// Makes the policy of one shard for a given slot count.
pub type PolicyFactory = Arc<dyn Fn(usize) -> Box<dyn Policy> + Send + Sync>;

/// Counters of a [`RowCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCacheStats {
    /// Lookups that found their row.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Rows admitted.
    pub inserts: u64,
    /// Rows offered but declined by the admission policy.
    pub rejected: u64,
    /// Rows resident now.
    pub resident_rows: u64,
    /// Slots in all shards.
    pub capacity_rows: u64,
    /// Bytes of policy metadata and index, exactly as the policies account them, plus the
    /// prefetch flags (one bit per slot).
    pub metadata_bytes: u64,
    /// Lookup hits on rows admitted by a prefetch (each such row counts at its first hit).
    pub prefetch_hits: u64,
}

struct Shard {
    policy: Box<dyn Policy>,
    arena: Arena,
    /// One bit per slot: set while the slot holds a prefetched row not yet hit.
    prefetched: Vec<u64>,
    hits: u64,
    misses: u64,
    inserts: u64,
    rejected: u64,
    prefetch_hits: u64,
}

impl Shard {
    fn new(policy: Box<dyn Policy>, slots: usize, row_bytes: usize) -> Self {
        Self::with_arena(policy, slots, Arena::heap(slots * row_bytes))
    }

    fn with_arena(policy: Box<dyn Policy>, slots: usize, arena: Arena) -> Self {
        Self {
            policy,
            arena,
            prefetched: vec![0u64; slots.div_ceil(64)],
            hits: 0,
            misses: 0,
            inserts: 0,
            rejected: 0,
            prefetch_hits: 0,
        }
    }

    /// Copies the row in `slot` into `out` (one row long) and counts the hit, and the first hit
    /// of a prefetched row.
    #[inline]
    fn serve_hit(&mut self, slot: u32, out: &mut [u8]) {
        let at = slot as usize * out.len();
        out.copy_from_slice(&self.arena[at..at + out.len()]);
        self.hits += 1;
        if self.take_prefetched(slot) {
            self.prefetch_hits += 1;
        }
    }

    fn set_prefetched(&mut self, slot: u32, on: bool) {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        if let Some(w) = self.prefetched.get_mut(word) {
            if on {
                *w |= bit;
            } else {
                *w &= !bit;
            }
        }
    }

    /// Clears the slot's flag; true if it was set.
    fn take_prefetched(&mut self, slot: u32) -> bool {
        let (word, bit) = (slot as usize / 64, 1u64 << (slot % 64));
        match self.prefetched.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                true
            }
            _ => false,
        }
    }
}

/// The least budget a shard gets when the builder picks the shard count.
pub const MIN_SHARD_BUDGET: u64 = 32 << 20;

/// How many lookups ahead [`RowCache::get_many_into`] follows index buckets (which it
/// prefetches twice as far ahead).
const LOOKAHEAD: usize = 8;

/// How many rows ahead [`RowCache::get_many_into`] prefetches the row bytes it copies: a copy
/// is quick, so it takes more of them in flight to cover a memory access.
const ROW_LOOKAHEAD: usize = 24;

/// Marks a miss among the slots of [`RowCache::get_many_into`].
const NO_SLOT: u32 = u32::MAX;

/// The indexes of a batch of rows, grouped by shard (a counting sort).
struct ShardOrder {
    /// Indexes into the batch, shard by shard.
    order: Vec<u32>,
    /// `starts[s]..starts[s + 1]` is shard `s`'s part of `order`.
    starts: Vec<u32>,
}

impl ShardOrder {
    /// Groups the batch indexes `k` by `shard_of[k]`; indexes whose shard is `None` are left out.
    fn new(shard_of: &[Option<u32>], shards: usize) -> Self {
        let mut starts = vec![0u32; shards + 1];
        for &s in shard_of.iter().flatten() {
            starts[s as usize + 1] += 1;
        }
        for s in 0..shards {
            starts[s + 1] += starts[s];
        }
        let mut next = starts.clone();
        let mut order = vec![0u32; starts[shards] as usize];
        for (k, s) in shard_of.iter().enumerate() {
            if let Some(s) = *s {
                order[next[s as usize] as usize] = k as u32;
                next[s as usize] += 1;
            }
        }
        Self { order, starts }
    }

    /// (shard, indexes of its rows) for every shard with rows.
    fn groups(&self) -> impl Iterator<Item = (usize, &[u32])> {
        self.starts
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < w[1])
            .map(|(s, w)| (s, &self.order[w[0] as usize..w[1] as usize]))
    }
}

/// Bytes of the prefetch flags of a shard of `slots` slots.
fn flag_bytes(slots: usize) -> u64 {
    slots.div_ceil(64) as u64 * 8
}

/// How rows map to shards and to the keys a shard's policy sees.
#[derive(Debug)]
enum Placement {
    /// Shard from a hash of the row id; the policy sees the row id.
    Hashed,
    /// Shard `s` holds rows `s * rows_per_shard ..`; its policy sees the offset in that range
    /// (the direct-mapped whole-table mode), which is also the row's slot in the shard's arena.
    Ranges {
        rows_per_shard: u64,
        /// Where each shard's arena starts, kept outside the locks for prefetch hints only
        /// (a hint never reads memory architecturally; the arenas never move).
        arena_addrs: Box<[usize]>,
    },
}

/// Batches up to this many rows get every row's bytes prefetched before the first lock, in the
/// whole-table mode (larger batches pipeline their prefetches shard by shard).
const UPFRONT_PREFETCH_ROWS: usize = 256;

/// Sharded slab cache of rows of one size.
pub struct RowCache {
    shards: Box<[Mutex<Shard>]>,
    placement: Placement,
    row_bytes: usize,
    budget_bytes: u64,
    policy_name: &'static str,
    /// The whole-table arenas' shared-memory file, or why there is none though one was asked.
    shared: Option<Result<Arc<SharedRowsFile>, String>>,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("row_bytes", &self.row_bytes)
            .field("budget_bytes", &self.budget_bytes)
            .field("policy", &self.policy_name)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Builds a [`RowCache`].
pub struct RowCacheBuilder {
    row_bytes: usize,
    budget_bytes: u64,
    key_bound: u64,
    whole_table: bool,
    /// Where whole-table arenas go as one shared-memory file (`None`: the heap).
    shared_dir: Option<PathBuf>,
    /// `None`: chosen from the core count and the budget at build time.
    shards: Option<usize>,
    policy: PolicyFactory,
}

impl std::fmt::Debug for RowCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCacheBuilder")
            .field("row_bytes", &self.row_bytes)
            .field("budget_bytes", &self.budget_bytes)
            .field("key_bound", &self.key_bound)
            .field("whole_table", &self.whole_table)
            .field("shards", &self.shards)
            .finish()
    }
}

impl RowCacheBuilder {
    /// A cache of rows of `row_bytes` bytes. Defaults: budget 0 (caches nothing), any `u64` row
    /// id, shards from the core count and budget ([`RowCacheBuilder::shards`]), the default
    /// policy ([`policy::default_policy`]).
    pub fn new(row_bytes: usize) -> Self {
        Self {
            row_bytes: row_bytes.max(1),
            budget_bytes: 0,
            key_bound: u64::MAX,
            whole_table: false,
            shared_dir: None,
            shards: None,
            policy: Arc::new(policy::default_policy),
        }
    }

    /// In the whole-table mode, put the arenas in one shared-memory file in `dir` (a memory file
    /// system such as `/dev/shm`), row `r` at byte `r * row_bytes`, which a worker process maps
    /// to read rows itself ([`RowCache::shared_rows`]). If the file cannot be made the arenas
    /// stay on the heap and `shared_rows` says why. Default: the heap.
    pub fn share_whole_table_in(mut self, dir: Option<PathBuf>) -> Self {
        self.shared_dir = dir;
        self
    }

    /// Total bytes for row data and metadata together. Default 0.
    pub fn budget_bytes(mut self, bytes: u64) -> Self {
        self.budget_bytes = bytes;
        self
    }

    /// Every row id offered will be below `bound` (a table's row count). Indexes store narrower
    /// keys when they can, so a known bound lets the sizing count the metadata the cache will
    /// really hold. Default `u64::MAX` (sized for the widest keys).
    pub fn key_bound(mut self, bound: u64) -> Self {
        self.key_bound = bound.max(1);
        self
    }

    /// If every row below the [`RowCacheBuilder::key_bound`] fits the budget (their bytes plus
    /// two bits each), hold them all direct-mapped ([`policy::Direct`]: shards own ranges of
    /// rows, a row's slot is its offset in its range, nothing is ever evicted) instead of
    /// running the policy: no index, no sketch, nearly no metadata. Default false.
    pub fn whole_table_when_it_fits(mut self, on: bool) -> Self {
        self.whole_table = on;
        self
    }

    /// Shard count, rounded up to a power of two. Default: four per core (at least 4, at most
    /// 64), fewer if a shard would get less than [`MIN_SHARD_BUDGET`] of the budget: batches
    /// lock each shard once, so a few shards serve many cores, while large shards keep their
    /// arrays large enough for huge pages (see `huge_pages`).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1).next_power_of_two());
        self
    }

    fn shard_count(&self) -> usize {
        if let Some(shards) = self.shards {
            return shards;
        }
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        let by_cores = (cores * 4).next_power_of_two().clamp(4, 64);
        let by_budget = (self.budget_bytes / MIN_SHARD_BUDGET).max(1);
        let mut shards = by_cores;
        while shards > 1 && shards as u64 > by_budget {
            shards /= 2;
        }
        shards
    }

    /// The policy each shard runs. Default [`policy::default_policy`].
    pub fn policy(mut self, factory: PolicyFactory) -> Self {
        self.policy = factory;
        self
    }

    /// Metadata bytes of one shard's policy of `slots` slots once full (measured, not guessed).
    fn measured_metadata(&self, slots: usize) -> u64 {
        let mut p = (self.policy)(slots);
        for key in 0..(slots as u64 * 2) {
            // Spread over the whole id range the cache will see, its largest ids included.
            let key = if key == 0 {
                self.key_bound - 1
            } else {
                mix64(key) % self.key_bound
            };
            if p.get(key).is_none() {
                p.insert(key);
            }
        }
        p.metadata_bytes() as u64
    }

    /// Sizes the shards so that arenas plus metadata stay within the budget, and builds.
    pub fn build(self) -> RowCache {
        if let Some(cache) = self.build_whole_table() {
            return cache;
        }
        let shard_count = self.shard_count();
        let shard_budget = self.budget_bytes / shard_count as u64;
        // Start from the rows that fit with no metadata, then shrink until a full shard's
        // arena plus measured metadata fits its share of the budget.
        let mut per_shard = (shard_budget / self.row_bytes as u64) as usize;
        while per_shard > 0 {
            let need = per_shard as u64 * self.row_bytes as u64
                + self.measured_metadata(per_shard)
                + flag_bytes(per_shard);
            if need <= shard_budget {
                break;
            }
            let over = need - shard_budget;
            let mut shrink = (over / self.row_bytes as u64)
                .max(per_shard as u64 / 64)
                .max(1) as usize;
            if shrink >= per_shard {
                // Metadata outweighs small rows, and counting the row bytes alone would shrink
                // to nothing: shrink by what the excess pays for at a slot's full cost instead.
                let per_slot = (need / per_shard as u64).max(1);
                shrink = over.div_ceil(per_slot).max(1) as usize;
            }
            per_shard = per_shard.saturating_sub(shrink);
        }
        let policy_name = (self.policy)(0).name();
        let shards = (0..shard_count)
            .map(|_| {
                Mutex::new(Shard::new(
                    (self.policy)(per_shard),
                    per_shard,
                    self.row_bytes,
                ))
            })
            .collect();
        RowCache {
            shards,
            placement: Placement::Hashed,
            row_bytes: self.row_bytes,
            budget_bytes: self.budget_bytes,
            policy_name,
            shared: None,
        }
    }

    /// The direct-mapped cache of every row, if asked for and within the budget.
    fn build_whole_table(&self) -> Option<RowCache> {
        if !self.whole_table || self.key_bound == u64::MAX {
            return None;
        }
        let shard_count = self.shard_count();
        let rows_per_shard = self.key_bound.div_ceil(shard_count as u64);
        let per_shard = usize::try_from(rows_per_shard).ok()?;
        if u32::try_from(per_shard).is_err() {
            return None;
        }
        let metadata =
            policy::Direct::new(per_shard).metadata_bytes() as u64 + flag_bytes(per_shard);
        let need = (rows_per_shard * self.row_bytes as u64 + metadata) * shard_count as u64;
        if need > self.budget_bytes {
            return None;
        }
        let arena_bytes = per_shard * self.row_bytes;
        let shared = self.shared_dir.as_ref().map(|dir| {
            SharedRowsFile::create(dir, arena_bytes * shard_count)
                .map(Arc::new)
                .map_err(|e| format!("create a shared-memory file in {}: {e}", dir.display()))
        });
        let shards: Box<[Mutex<Shard>]> = (0..shard_count)
            .map(|i| {
                let direct = Box::new(policy::Direct::new(per_shard));
                let arena = match &shared {
                    Some(Ok(file)) => Arena::shared(file, i * arena_bytes, arena_bytes),
                    _ => Arena::heap(arena_bytes),
                };
                Mutex::new(Shard::with_arena(direct, per_shard, arena))
            })
            .collect();
        let arena_addrs = shards
            .iter()
            .map(|s| s.lock().arena.as_ptr().expose_provenance())
            .collect();
        Some(RowCache {
            shards,
            placement: Placement::Ranges {
                rows_per_shard,
                arena_addrs,
            },
            row_bytes: self.row_bytes,
            budget_bytes: self.budget_bytes,
            policy_name: "direct",
            shared,
        })
    }
}

impl RowCache {
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// The configured budget.
    pub fn budget_bytes(&self) -> u64 {
        self.budget_bytes
    }

    /// Name of the policy the shards run.
    pub fn policy_name(&self) -> &'static str {
        self.policy_name
    }

    /// The shard of `row` and the key its policy knows it by; `None` for a row outside every
    /// shard's range (whole-table mode only).
    #[inline]
    fn locate(&self, row: u64) -> Option<(usize, u64)> {
        match &self.placement {
            // Independent of the policies' own key hash, so a shard's keys spread over its index.
            Placement::Hashed => Some((crate::key_hash::shard_of(row, self.shards.len()), row)),
            Placement::Ranges { rows_per_shard, .. } => {
                let shard = row / rows_per_shard;
                (shard < self.shards.len() as u64).then_some((shard as usize, row % rows_per_shard))
            }
        }
    }

    /// Copies row `row` into `out` (`row_bytes` long) if cached; records the access either way.
    pub fn get_into(&self, row: u64, out: &mut [u8]) -> bool {
        let Some((index, key)) = self.locate(row) else {
            return false;
        };
        let mut shard = self.shards[index].lock();
        match shard.policy.get(key) {
            Some(slot) => {
                shard.serve_hit(slot, out);
                true
            }
            None => {
                shard.misses += 1;
                false
            }
        }
    }

    /// Batched [`RowCache::get_into`]: for each `k`, copies row `rows[k]` if cached into row
    /// `places[k]` of `out` (row `k` when `places` is `None`) and pushes `k` onto `misses` if not;
    /// returns the hits. Records every access, like `get_into`.
    ///
    /// Faster than a loop of `get_into`: the rows are grouped by shard so each shard is locked
    /// once, and the index, frequency counters and row bytes of lookups a few steps ahead are
    /// prefetched, so their cache misses overlap.
    pub fn get_many_into(
        &self,
        rows: &[u64],
        places: Option<&[usize]>,
        out: &mut [u8],
        misses: &mut Vec<usize>,
    ) -> u64 {
        debug_assert!(places.is_none_or(|p| p.len() == rows.len()));
        let rb = self.row_bytes;
        // Each row's shard and the key its policy knows it by.
        let mut shard_of = Vec::with_capacity(rows.len());
        let mut keys = Vec::with_capacity(rows.len());
        for (k, &row) in rows.iter().enumerate() {
            let located = self.locate(row);
            if located.is_none() {
                misses.push(k);
            }
            shard_of.push(located.map(|(shard, _)| shard as u32));
            keys.push(located.map_or(row, |(_, key)| key));
        }
        if let Placement::Ranges { arena_addrs, .. } = &self.placement
            && rows.len() <= UPFRONT_PREFETCH_ROWS
        {
            // A small batch has too few rows per shard to pipeline: start every row's loads
            // now, so that they overlap instead of each copy waiting on its own miss.
            for (shard, &key) in shard_of.iter().zip(&keys) {
                if let Some(shard) = shard {
                    let base =
                        std::ptr::with_exposed_provenance::<u8>(arena_addrs[*shard as usize]);
                    prefetch_range(base.wrapping_add(key as usize * rb), rb);
                }
            }
        }
        let by_shard = ShardOrder::new(&shard_of, self.shards.len());
        let mut slots: Vec<u32> = Vec::new();
        let mut hits = 0u64;
        for (shard_index, group) in by_shard.groups() {
            let mut shard = self.shards[shard_index].lock();
            let shard = &mut *shard;
            slots.clear();
            // Prologue: the first lookups get their prefetches now, the rest in the loop.
            for &k in group.iter().take(2 * LOOKAHEAD) {
                shard.policy.prefetch(keys[k as usize]);
            }
            for &k in group.iter().take(LOOKAHEAD) {
                shard.policy.prefetch_follow(keys[k as usize]);
            }
            for (j, &k) in group.iter().enumerate() {
                if let Some(&ahead) = group.get(j + 2 * LOOKAHEAD) {
                    shard.policy.prefetch(keys[ahead as usize]);
                }
                if let Some(&ahead) = group.get(j + LOOKAHEAD) {
                    shard.policy.prefetch_follow(keys[ahead as usize]);
                }
                slots.push(shard.policy.get(keys[k as usize]).unwrap_or(NO_SLOT));
            }
            let arena = shard.arena.as_ptr();
            for &slot in slots.iter().take(ROW_LOOKAHEAD).filter(|&&s| s != NO_SLOT) {
                prefetch_range(arena.wrapping_add(slot as usize * rb), rb);
            }
            for (j, (&k, &slot)) in group.iter().zip(&slots).enumerate() {
                if let Some(&ahead) = slots.get(j + ROW_LOOKAHEAD)
                    && ahead != NO_SLOT
                {
                    prefetch_range(arena.wrapping_add(ahead as usize * rb), rb);
                }
                let k = k as usize;
                if slot == NO_SLOT {
                    misses.push(k);
                    shard.misses += 1;
                    continue;
                }
                let place = places.map_or(k, |p| p[k]);
                shard.serve_hit(slot, &mut out[place * rb..(place + 1) * rb]);
                hits += 1;
            }
        }
        hits
    }

    /// True if `row` is resident (records nothing).
    pub fn contains(&self, row: u64) -> bool {
        self.locate(row)
            .is_some_and(|(index, key)| self.shards[index].lock().policy.contains(key))
    }

    /// Offers `row` with its bytes for admission; true if it is resident afterwards.
    pub fn insert(&self, row: u64, bytes: &[u8]) -> bool {
        self.admit(row, bytes, false)
    }

    /// Like [`RowCache::insert`], for a row brought in by a prefetch: its first lookup hit is
    /// counted in [`RowCacheStats::prefetch_hits`]. A row already resident keeps its flag.
    pub fn insert_prefetched(&self, row: u64, bytes: &[u8]) -> bool {
        self.admit(row, bytes, true)
    }

    fn admit(&self, row: u64, bytes: &[u8], prefetched: bool) -> bool {
        debug_assert_eq!(bytes.len(), self.row_bytes);
        let Some((index, key)) = self.locate(row) else {
            return false;
        };
        let mut shard = self.shards[index].lock();
        if shard.policy.contains(key) {
            return true;
        }
        match shard.policy.insert(key) {
            Some(admitted) => {
                let at = admitted.slot as usize * self.row_bytes;
                shard.arena[at..at + self.row_bytes].copy_from_slice(bytes);
                shard.set_prefetched(admitted.slot, prefetched);
                shard.inserts += 1;
                true
            }
            None => {
                shard.rejected += 1;
                false
            }
        }
    }

    /// Counters summed over shards.
    pub fn stats(&self) -> RowCacheStats {
        let mut s = RowCacheStats::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            s.hits += shard.hits;
            s.misses += shard.misses;
            s.inserts += shard.inserts;
            s.rejected += shard.rejected;
            s.resident_rows += shard.policy.len() as u64;
            s.capacity_rows += shard.policy.capacity() as u64;
            s.metadata_bytes +=
                shard.policy.metadata_bytes() as u64 + shard.prefetched.len() as u64 * 8;
            s.prefetch_hits += shard.prefetch_hits;
        }
        s
    }

    /// Zeroes the hit, miss, insert, reject and prefetch-hit counters.
    pub fn reset_counters(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            shard.prefetch_hits = 0;
            shard.hits = 0;
            shard.misses = 0;
            shard.inserts = 0;
            shard.rejected = 0;
        }
    }

    /// The shared-memory file holding every row in row order (row `r` at byte
    /// `r * row_bytes`), if [`RowCacheBuilder::share_whole_table_in`] was given and the table
    /// is held whole: `None` if not asked or not whole, `Err` with why the file could not be
    /// made. Rows are there once resident ([`RowCacheStats::resident_rows`]).
    pub fn shared_rows(&self) -> Option<Result<&SharedRowsFile, &str>> {
        self.shared
            .as_ref()
            .map(|s| s.as_ref().map(|f| &**f).map_err(String::as_str))
    }

    /// Bytes held: arenas (full size, as allocated) plus metadata.
    pub fn footprint_bytes(&self) -> u64 {
        let s = self.stats();
        s.capacity_rows * self.row_bytes as u64 + s.metadata_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn row(id: u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| (mix64(id) >> (i % 8 * 8)) as u8 ^ i as u8)
            .collect()
    }

    #[test]
    fn never_serves_a_wrong_row_and_stays_in_budget() {
        let rb = 160;
        let cache = RowCacheBuilder::new(rb)
            .budget_bytes(1 << 20)
            .shards(8)
            .build();
        assert!(
            cache.footprint_bytes() <= 1 << 20,
            "{}",
            cache.footprint_bytes()
        );
        let mut out = vec![0u8; rb];
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        for i in 0..200_000u64 {
            let id = mix64(i) % 20_000;
            if cache.get_into(id, &mut out) {
                assert_eq!(out, row(id, rb), "row {id}");
            } else {
                let bytes = model.entry(id).or_insert_with(|| row(id, rb)).clone();
                cache.insert(id, &bytes);
            }
        }
        let s = cache.stats();
        assert!(s.hits > 0 && s.misses > 0);
        assert!(s.resident_rows <= s.capacity_rows);
        assert!(cache.footprint_bytes() <= 1 << 20);
    }

    #[test]
    fn batched_gets_agree_with_single_gets() {
        // Two caches fed the same accesses, one row at a time and in batches (with duplicates,
        // scattered places and misses): same hits, same bytes, same residency.
        let rb = 48;
        let build = || {
            RowCacheBuilder::new(rb)
                .budget_bytes(256 << 10)
                .shards(4)
                .build()
        };
        let (single, batched) = (build(), build());
        let mut rng = 0x1234_5678u64;
        for round in 0..300u64 {
            let n = 1 + (mix64(round) % 97) as usize;
            let rows: Vec<u64> = (0..n)
                .map(|_| {
                    rng = mix64(rng);
                    rng % 8_000
                })
                .collect();
            // Row k lands at place n - 1 - k of the output (places need not follow the batch).
            let places: Vec<usize> = (0..n).rev().collect();
            let mut out = vec![0u8; n * rb];
            let mut misses = Vec::new();
            let hits = batched.get_many_into(&rows, Some(&places), &mut out, &mut misses);
            let mut expected_misses = Vec::new();
            let mut one = vec![0u8; rb];
            for (k, &row_id) in rows.iter().enumerate() {
                if single.get_into(row_id, &mut one) {
                    let place = places[k];
                    assert_eq!(&out[place * rb..(place + 1) * rb], &row(row_id, rb)[..]);
                } else {
                    expected_misses.push(k);
                }
            }
            misses.sort_unstable();
            assert_eq!(misses, expected_misses, "round {round}");
            assert_eq!(hits as usize, n - misses.len());
            for &k in &misses {
                single.insert(rows[k], &row(rows[k], rb));
                batched.insert(rows[k], &row(rows[k], rb));
            }
        }
        let (a, b) = (single.stats(), batched.stats());
        assert_eq!(a, b);
        assert!(a.hits > 1_000 && a.misses > 1_000, "{a:?}");
    }

    #[test]
    fn a_key_bound_buys_slots_and_keeps_the_budget() {
        let budget = 8u64 << 20;
        let wide = RowCacheBuilder::new(160).budget_bytes(budget).build();
        let bound = 50_000_000u64;
        let narrow = RowCacheBuilder::new(160)
            .budget_bytes(budget)
            .key_bound(bound)
            .build();
        let (w, n) = (wide.stats().capacity_rows, narrow.stats().capacity_rows);
        assert!(
            n > w,
            "narrow keys should leave room for more rows: {n} vs {w}"
        );
        // Filled with the largest ids below the bound, it still stays within the budget.
        let bytes = [5u8; 160];
        for i in 0..(n * 3) {
            narrow.insert(bound - 1 - mix64(i) % (bound / 2), &bytes);
        }
        assert!(narrow.stats().resident_rows > n / 2);
        assert!(
            narrow.footprint_bytes() <= budget,
            "{}",
            narrow.footprint_bytes()
        );
        assert!(wide.footprint_bytes() <= budget);
    }

    #[test]
    fn a_whole_table_that_fits_is_held_direct_mapped() {
        let (rb, rows) = (40usize, 10_000u64);
        let fits = rows * (rb as u64 + 1);
        let cache = RowCacheBuilder::new(rb)
            .budget_bytes(fits)
            .key_bound(rows)
            .whole_table_when_it_fits(true)
            .shards(4)
            .build();
        assert_eq!(cache.policy_name(), "direct");
        assert!(
            cache.footprint_bytes() <= fits,
            "{}",
            cache.footprint_bytes()
        );
        for id in (0..rows).rev() {
            assert!(cache.insert(id, &row(id, rb)));
        }
        // Every row resident, found one at a time and in a batch, nothing evicted.
        let ids: Vec<u64> = (0..rows).map(|i| mix64(i) % rows).collect();
        let mut out = vec![0u8; ids.len() * rb];
        let mut misses = Vec::new();
        assert_eq!(cache.get_many_into(&ids, None, &mut out, &mut misses), rows);
        assert!(misses.is_empty());
        for (k, &id) in ids.iter().enumerate() {
            assert_eq!(&out[k * rb..(k + 1) * rb], &row(id, rb)[..], "row {id}");
        }
        let mut one = vec![0u8; rb];
        assert!(cache.get_into(rows - 1, &mut one));
        assert_eq!(one, row(rows - 1, rb));
        // Rows past the bound are never admitted nor found.
        assert!(!cache.insert(rows, &row(rows, rb)));
        assert!(!cache.get_into(rows + 5, &mut one));
        let mut misses = Vec::new();
        let mut out = vec![0u8; 2 * rb];
        assert_eq!(
            cache.get_many_into(&[rows * 9, 3], None, &mut out, &mut misses),
            1
        );
        assert_eq!(misses, vec![0]);
        assert_eq!(cache.stats().resident_rows, rows);

        // One byte short of the budget it needs: the policy runs instead.
        let tight = RowCacheBuilder::new(rb)
            .budget_bytes(rows * rb as u64)
            .key_bound(rows)
            .whole_table_when_it_fits(true)
            .build();
        assert_eq!(tight.policy_name(), policy::DEFAULT_POLICY);
    }

    #[test]
    fn small_rows_still_get_slots() {
        // 16-byte rows cost less than their CLOCK metadata: the sizing must not shrink to 0.
        let cache = RowCacheBuilder::new(16).budget_bytes(4 << 20).build();
        let s = cache.stats();
        assert!(s.capacity_rows > 50_000, "{s:?}");
        assert!(cache.footprint_bytes() <= 4 << 20);
        assert!(cache.insert(7, &[1u8; 16]));
    }

    #[test]
    fn prefetched_rows_count_their_first_hit() {
        let rb = 32;
        let cache = RowCacheBuilder::new(rb)
            .budget_bytes(64 << 10)
            .shards(2)
            .build();
        let mut out = vec![0u8; rb];
        for id in 0..10u64 {
            assert!(cache.insert_prefetched(id, &row(id, rb)));
        }
        for id in 10..20u64 {
            assert!(cache.insert(id, &row(id, rb)));
        }
        // Every row twice: only the first hit of each prefetched row counts.
        for _ in 0..2 {
            for id in 0..20u64 {
                assert!(cache.get_into(id, &mut out));
                assert_eq!(out, row(id, rb));
            }
        }
        let s = cache.stats();
        assert_eq!((s.hits, s.prefetch_hits), (40, 10));
        cache.reset_counters();
        assert_eq!(cache.stats().prefetch_hits, 0);
        assert!(cache.footprint_bytes() <= 64 << 10);
    }

    #[test]
    fn zero_budget_caches_nothing() {
        let cache = RowCacheBuilder::new(16).build();
        assert!(!cache.insert(1, &[0u8; 16]));
        assert!(!cache.get_into(1, &mut [0u8; 16]));
    }

    #[test]
    fn concurrent_readers_and_writers_agree() {
        let rb = 64;
        let cache = Arc::new(RowCacheBuilder::new(rb).budget_bytes(256 << 10).build());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    let mut out = vec![0u8; rb];
                    for i in 0..50_000u64 {
                        let id = mix64(i * 4 + t) % 5_000;
                        if cache.get_into(id, &mut out) {
                            assert_eq!(out, row(id, rb));
                        } else {
                            cache.insert(id, &row(id, rb));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("worker");
        }
        assert!(cache.stats().hits > 0);
    }
}
