//! Frequency counts that pick the VRAM tier's hot set: sampled access counts, plus boosts for
//! prefetch hints. Counts age by volume, not by the clock: every `max_entries` samples every
//! count is halved (and, kept in a map, the ones reaching zero forgotten; a full map halves
//! early), so a count covers about the last `max_entries` samples whatever the request rate.
//! (Halving once per refresh instead, every second, erased the hot set of a uniform
//! million-row workload at 30 batches a second: each hot row was sampled less than once per
//! second and fell to the level of rows seen once.)
//!
//! Two ways to keep them: a hash map of at most `max_entries` row ids (17 bytes a bucket, 19-34
//! bytes an id as it fills; four ids a slot of the tier: up to ~136 bytes a slot), or, when the table's row count is known and that is
//! smaller, one byte per row of the table, saturating at 255 (a row stays there only if it gains
//! 128 or more between two halvings, which at most `max_entries / 128` rows can: far above the
//! cut of a tier of `max_entries / 4` slots). Ranking either takes a histogram of the counts
//! first, then places each id that makes the cut (a counting sort): it holds only the ids it
//! returns and sorts nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::key_hash::{KeyHashBuilder, mix64};

/// Where the counts live.
#[derive(Debug)]
pub(crate) enum Counts {
    /// Row id -> count, at most `max_entries` ids.
    Sparse(HashMap<u64, u32, KeyHashBuilder>),
    /// Count of row `i` at `i`, saturating; ids past the end are not counted.
    Dense(Vec<u8>),
}

/// Sampled access counts of row ids.
#[derive(Debug)]
pub struct HotCounter {
    counts: Mutex<Counts>,
    max_entries: usize,
    sample_shift: u32,
    tick: AtomicU64,
    since_decay: AtomicU64,
}

/// Bytes a counted id takes in the map when full: a 16-byte entry and a control byte per
/// bucket, at least 8 buckets for 7 ids and at most 16 for 7 (power-of-two growth).
const SPARSE_BYTES_PER_ID: usize = 30;

impl HotCounter {
    /// Counts one id in `2^sample_shift` (chosen by a hash of id and call, so every id is
    /// sampled at the same rate), keeping at most `max_entries` ids in a map.
    pub fn new(max_entries: usize, sample_shift: u32) -> Self {
        Self::with_counts(
            Counts::Sparse(HashMap::with_hasher(KeyHashBuilder)),
            max_entries,
            sample_shift,
        )
    }

    /// As [`HotCounter::new`] for a table of `rows` rows: one byte a row if that is less
    /// memory than the map would reach, else the map.
    pub fn for_table(rows: u64, max_entries: usize, sample_shift: u32) -> Self {
        let map_bytes = max_entries.max(16).saturating_mul(SPARSE_BYTES_PER_ID) as u64;
        if rows > map_bytes {
            return Self::new(max_entries, sample_shift);
        }
        Self::with_counts(
            Counts::Dense(vec![0; rows as usize]),
            max_entries,
            sample_shift,
        )
    }

    fn with_counts(counts: Counts, max_entries: usize, sample_shift: u32) -> Self {
        Self {
            counts: Mutex::new(counts),
            max_entries: max_entries.max(16),
            sample_shift,
            tick: AtomicU64::new(0),
            since_decay: AtomicU64::new(0),
        }
    }

    /// True when the counts are one byte a row.
    pub fn is_dense(&self) -> bool {
        matches!(*self.counts.lock(), Counts::Dense(_))
    }

    /// Records accesses to `ids`.
    pub fn record(&self, ids: &[u64]) {
        self.add(ids, 1, true);
    }

    /// Records a prefetch hint: the ids are about to be used, weigh them `boost` times.
    pub fn hint(&self, ids: &[u64], boost: u32) {
        self.add(ids, boost, false);
    }

    fn add(&self, ids: &[u64], weight: u32, sample: bool) {
        let t = self.tick.fetch_add(1, Ordering::Relaxed);
        let mask = (1u64 << self.sample_shift) - 1;
        let sampled = |id: u64| !sample || mix64(id ^ t) & mask == 0;
        let mut counts = self.counts.lock();
        let mut added = 0u64;
        let full = match &mut *counts {
            Counts::Sparse(map) => {
                for &id in ids.iter().filter(|&&id| sampled(id)) {
                    let c = map.entry(id).or_insert(0);
                    *c = c.saturating_add(weight);
                    added += 1;
                }
                map.len() > self.max_entries
            }
            Counts::Dense(rows) => {
                let w = weight.min(255) as u8;
                for &id in ids.iter().filter(|&&id| sampled(id)) {
                    if let Some(c) = rows.get_mut(id as usize) {
                        *c = c.saturating_add(w);
                        added += 1;
                    }
                }
                false
            }
        };
        let since = self.since_decay.fetch_add(added, Ordering::Relaxed) + added;
        if full || since >= self.max_entries as u64 {
            decay(&mut counts);
            self.since_decay.store(0, Ordering::Relaxed);
        }
    }

    /// Halves every count (a map forgets ids that reach zero).
    pub fn decay(&self) {
        decay(&mut self.counts.lock());
    }

    /// The `k` ids with the highest counts of at least `min_count`, highest count first (within
    /// a count, and among ties at the lowest count taken, whichever come first). Two passes over
    /// the counts under their lock: a histogram of the counts finds the lowest count that makes
    /// the cut, then each id that makes it goes straight to its place (a counting sort), so the
    /// ranking holds only the `k` ids it returns and sorts nothing.
    pub fn top(&self, k: usize, min_count: u32) -> Vec<u64> {
        let counts = self.counts.lock();
        let mut levels: Vec<(u32, usize)> = match &*counts {
            Counts::Sparse(map) => {
                let mut histogram: HashMap<u32, usize> = HashMap::new();
                for &c in map.values().filter(|&&c| c >= min_count) {
                    *histogram.entry(c).or_insert(0) += 1;
                }
                histogram.into_iter().collect()
            }
            Counts::Dense(rows) => {
                let mut histogram = [0usize; 256];
                for &c in rows {
                    histogram[c as usize] += 1;
                }
                (min_count.max(1)..256)
                    .filter(|&c| histogram[c as usize] > 0)
                    .map(|c| (c, histogram[c as usize]))
                    .collect()
            }
        };
        levels.sort_unstable_by_key(|&(count, _)| std::cmp::Reverse(count));
        // Keep the levels that make the cut, the last one (the cut) trimmed to what fits; each
        // level's ids go from `next[i]` on.
        let mut taken = 0usize;
        let mut next = Vec::new();
        for (_, n) in levels.iter_mut() {
            if taken >= k {
                break;
            }
            *n = (*n).min(k - taken);
            next.push(taken);
            taken += *n;
        }
        levels.truncate(next.len());
        let Some(&(cut, _)) = levels.last() else {
            return Vec::new();
        };
        let ends: Vec<usize> = next
            .iter()
            .zip(&levels)
            .map(|(&at, &(_, n))| at + n)
            .collect();
        let mut out = vec![0u64; taken];
        let mut place = |id: u64, c: u32| {
            if c < cut {
                return;
            }
            // Levels are few (at most 255 a byte a row) and sorted highest first.
            let Ok(i) = levels.binary_search_by(|&(level, _)| c.cmp(&level)) else {
                return;
            };
            if next[i] < ends[i] {
                out[next[i]] = id;
                next[i] += 1;
            }
        };
        match &*counts {
            Counts::Sparse(map) => map.iter().for_each(|(&id, &c)| place(id, c)),
            Counts::Dense(rows) => {
                // From a point that moves with the calls: ties at the cut are not always the
                // lowest row ids.
                let start = (mix64(self.tick.load(Ordering::Relaxed)) as usize) % rows.len().max(1);
                let (head, tail) = rows.split_at(start);
                for (i, &c) in tail.iter().enumerate() {
                    place((start + i) as u64, u32::from(c));
                }
                for (i, &c) in head.iter().enumerate() {
                    place(i as u64, u32::from(c));
                }
            }
        }
        out
    }

    /// Holds the counts' lock until the guard drops (to stall a counting thread in tests).
    #[cfg(test)]
    pub(crate) fn stall_for_test(&self) -> parking_lot::MutexGuard<'_, Counts> {
        self.counts.lock()
    }

    /// Every nonzero count (for tests).
    #[cfg(test)]
    fn snapshot(&self) -> HashMap<u64, u32> {
        match &*self.counts.lock() {
            Counts::Sparse(map) => map.iter().map(|(&id, &c)| (id, c)).collect(),
            Counts::Dense(rows) => (0..rows.len() as u64)
                .filter(|&i| rows[i as usize] > 0)
                .map(|i| (i, u32::from(rows[i as usize])))
                .collect(),
        }
    }

    /// Ids counted now (with a nonzero count).
    pub fn len(&self) -> usize {
        match &*self.counts.lock() {
            Counts::Sparse(map) => map.len(),
            Counts::Dense(rows) => rows.iter().filter(|&&c| c > 0).count(),
        }
    }

    /// True when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn decay(counts: &mut Counts) {
    match counts {
        Counts::Sparse(map) => map.retain(|_, c| {
            *c /= 2;
            *c > 0
        }),
        Counts::Dense(rows) => rows.iter_mut().for_each(|c| *c /= 2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same behaviour from the map and from a byte per row (of a 1M-row table).
    fn both(max_entries: usize, sample_shift: u32) -> [HotCounter; 2] {
        let dense =
            HotCounter::with_counts(Counts::Dense(vec![0; 1 << 20]), max_entries, sample_shift);
        [HotCounter::new(max_entries, sample_shift), dense]
    }

    #[test]
    fn top_follows_frequency_and_hints() {
        for h in both(10_000, 0) {
            for i in 0..100u64 {
                for _ in 0..(100 - i) {
                    h.record(&[i]);
                }
            }
            assert_eq!(h.top(3, 1), vec![0, 1, 2]);
            h.hint(&[99], 1000);
            assert_eq!(h.top(1, 1), vec![99]);
            h.decay();
            assert!(h.len() <= 100);
            // Halved: rows 0..=96 (seen 4 times or more) and the hinted row 99 keep a count
            // of 2 or more.
            assert_eq!(h.top(200, 2).len(), 98);
        }
    }

    /// Against ranking every count: the same counts above the cut, as many ids as asked (or
    /// as qualify), highest first, each at least `min_count`.
    #[test]
    fn top_takes_the_highest_counts_whatever_the_ties() {
        for h in both(1 << 20, 0) {
            let mut x = 7u64;
            for _ in 0..3000 {
                x = mix64(x);
                // Few distinct counts: many ties at every level.
                h.hint(&[x % 5000], (x >> 40) as u32 % 6 + 1);
            }
            let counts = h.snapshot();
            for (k, min) in [(0, 1), (1, 1), (10, 2), (700, 3), (100_000, 2), (2500, 1)] {
                let got = h.top(k, min);
                let mut want: Vec<u32> = counts.values().copied().filter(|&c| c >= min).collect();
                want.sort_unstable_by(|a, b| b.cmp(a));
                want.truncate(k);
                let got_counts: Vec<u32> = got.iter().map(|id| counts[id]).collect();
                assert_eq!(got_counts, want, "k {k}, min {min}, dense {}", h.is_dense());
                let distinct: std::collections::HashSet<_> = got.iter().collect();
                assert_eq!(distinct.len(), got.len(), "k {k}: an id twice");
            }
        }
    }

    #[test]
    fn counts_age_by_volume_so_the_top_follows_a_shift_in_traffic() {
        for h in both(1000, 0) {
            for _ in 0..50 {
                h.record(&(0..10).collect::<Vec<u64>>());
            }
            assert_eq!(h.top(10, 2).len(), 10);
            assert!(h.top(10, 2).iter().all(|&id| id < 10));
            // No clock involved: however slowly the samples come, ten rows stay hot until
            // enough samples of other rows have aged them.
            for _ in 0..400 {
                h.record(&(100..110).collect::<Vec<u64>>());
            }
            let top = h.top(10, 2);
            assert!(top.iter().all(|&id| (100..110).contains(&id)), "{top:?}");
            assert!(h.len() <= 1000);
        }
    }

    /// A byte a row: counts saturate rather than wrap, ids past the table are not counted, and
    /// a table too large for bytes to be smaller than the map gets the map.
    #[test]
    fn a_byte_a_row_saturates_ignores_ids_past_the_end_and_is_chosen_by_size() {
        let h = HotCounter::for_table(1000, 1 << 16, 0);
        assert!(h.is_dense());
        h.hint(&[3], 200);
        h.hint(&[3], 200);
        h.hint(&[5, 1000, u64::MAX], 4);
        assert_eq!(h.snapshot(), HashMap::from([(3, 255), (5, 4)]));
        assert_eq!(h.top(5, 1), vec![3, 5]);
        assert!(!HotCounter::for_table(1 << 40, 1 << 16, 0).is_dense());
    }
}
