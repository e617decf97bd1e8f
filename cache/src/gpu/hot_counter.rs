//! Frequency counts that pick the VRAM tier's hot set: a sampled, bounded count table, plus
//! boosts for prefetch hints. Counts age by volume, not by the clock: every `max_entries`
//! samples (or when the table is full) every count is halved and the ones reaching zero are
//! forgotten, so a count covers about the last `max_entries` samples whatever the request
//! rate. (Halving once per refresh instead, every second, erased the hot set of a uniform
//! million-row workload at 30 batches a second: each hot row was sampled less than once per
//! second and fell to the level of rows seen once.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::key_hash::{KeyHashBuilder, mix64};

/// Sampled access counts of row ids.
#[derive(Debug)]
pub struct HotCounter {
    counts: Mutex<HashMap<u64, u32, KeyHashBuilder>>,
    max_entries: usize,
    sample_shift: u32,
    tick: AtomicU64,
    since_decay: AtomicU64,
}

impl HotCounter {
    /// Counts one id in `2^sample_shift` (chosen by a hash of id and call, so every id is
    /// sampled at the same rate), keeping at most `max_entries` ids.
    pub fn new(max_entries: usize, sample_shift: u32) -> Self {
        Self {
            counts: Mutex::new(HashMap::with_hasher(KeyHashBuilder)),
            max_entries: max_entries.max(16),
            sample_shift,
            tick: AtomicU64::new(0),
            since_decay: AtomicU64::new(0),
        }
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
        let mut counts = self.counts.lock();
        let mut added = 0u64;
        for &id in ids {
            if sample && mix64(id ^ t) & mask != 0 {
                continue;
            }
            let c = counts.entry(id).or_insert(0);
            *c = c.saturating_add(weight);
            added += 1;
        }
        let since = self.since_decay.fetch_add(added, Ordering::Relaxed) + added;
        if counts.len() > self.max_entries || since >= self.max_entries as u64 {
            decay(&mut counts);
            self.since_decay.store(0, Ordering::Relaxed);
        }
    }

    /// Halves every count and forgets ids that reach zero.
    pub fn decay(&self) {
        decay(&mut self.counts.lock());
    }

    /// The `k` ids with the highest counts of at least `min_count`, highest count first (ties
    /// at the lowest count taken: whichever come first). Two passes over the counts under
    /// their lock: a histogram of the counts finds the lowest count that makes the cut, then
    /// only the ids that make it are collected, so the transient memory is `k` entries, not
    /// one per counted id.
    pub fn top(&self, k: usize, min_count: u32) -> Vec<u64> {
        let counts = self.counts.lock();
        let mut histogram: HashMap<u32, usize> = HashMap::new();
        for &c in counts.values() {
            if c >= min_count {
                *histogram.entry(c).or_insert(0) += 1;
            }
        }
        let mut levels: Vec<(u32, usize)> = histogram.into_iter().collect();
        levels.sort_unstable_by_key(|&(count, _)| std::cmp::Reverse(count));
        // The lowest count taken, and how many ids of exactly that count fit.
        let (mut cut, mut at_cut, mut taken) = (0u32, 0usize, 0usize);
        for (count, n) in levels {
            if taken >= k {
                break;
            }
            cut = count;
            at_cut = n.min(k - taken);
            taken += at_cut;
        }
        if taken == 0 {
            return Vec::new();
        }
        let mut all: Vec<(u32, u64)> = Vec::with_capacity(taken);
        for (&id, &c) in counts.iter() {
            if c > cut {
                all.push((c, id));
            } else if c == cut && at_cut > 0 {
                all.push((c, id));
                at_cut -= 1;
            }
        }
        drop(counts);
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.into_iter().map(|(_, id)| id).collect()
    }

    /// Holds the counts' lock until the guard drops (to stall a counting thread in tests).
    #[cfg(test)]
    pub(crate) fn stall_for_test(
        &self,
    ) -> parking_lot::MutexGuard<'_, HashMap<u64, u32, KeyHashBuilder>> {
        self.counts.lock()
    }

    /// Ids counted now.
    pub fn len(&self) -> usize {
        self.counts.lock().len()
    }

    /// True when nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn decay(counts: &mut HashMap<u64, u32, KeyHashBuilder>) {
    counts.retain(|_, c| {
        *c /= 2;
        *c > 0
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_follows_frequency_and_hints() {
        let h = HotCounter::new(10_000, 0);
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
        // Halved: rows 0..=96 (seen 4 times or more) and the hinted row 99 keep a count of 2.
        assert_eq!(h.top(200, 2).len(), 98);
    }

    /// Against ranking every count: the same counts above the cut, as many ids as asked (or
    /// as qualify), highest first, each at least `min_count`.
    #[test]
    fn top_takes_the_highest_counts_whatever_the_ties() {
        let h = HotCounter::new(1 << 20, 0);
        let mut x = 7u64;
        for _ in 0..3000 {
            x = mix64(x);
            // Few distinct counts: many ties at every level.
            h.hint(&[x % 5000], (x >> 40) as u32 % 6 + 1);
        }
        let counts: HashMap<u64, u32> = h.counts.lock().iter().map(|(&k, &v)| (k, v)).collect();
        for (k, min) in [(0, 1), (1, 1), (10, 2), (700, 3), (100_000, 2), (2500, 1)] {
            let got = h.top(k, min);
            let mut want: Vec<u32> = counts.values().copied().filter(|&c| c >= min).collect();
            want.sort_unstable_by(|a, b| b.cmp(a));
            want.truncate(k);
            let got_counts: Vec<u32> = got.iter().map(|id| counts[id]).collect();
            assert_eq!(got_counts, want, "k {k}, min {min}");
            let distinct: std::collections::HashSet<_> = got.iter().collect();
            assert_eq!(distinct.len(), got.len(), "k {k}: an id twice");
        }
    }

    #[test]
    fn counts_age_by_volume_so_the_top_follows_a_shift_in_traffic() {
        let h = HotCounter::new(1000, 0);
        for _ in 0..50 {
            h.record(&(0..10).collect::<Vec<u64>>());
        }
        assert_eq!(h.top(10, 2).len(), 10);
        assert!(h.top(10, 2).iter().all(|&id| id < 10));
        // No clock involved: however slowly the samples come, ten rows stay hot until enough
        // samples of other rows have aged them.
        for _ in 0..400 {
            h.record(&(100..110).collect::<Vec<u64>>());
        }
        let top = h.top(10, 2);
        assert!(top.iter().all(|&id| (100..110).contains(&id)), "{top:?}");
        assert!(h.len() <= 1000);
    }
}
