//! Frequency counts that pick the VRAM tier's hot set: a sampled, bounded count table with
//! periodic halving (so the set follows shifts in traffic), plus boosts for prefetch hints.

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
        for &id in ids {
            if sample && mix64(id ^ t) & mask != 0 {
                continue;
            }
            let c = counts.entry(id).or_insert(0);
            *c = c.saturating_add(weight);
        }
        if counts.len() > self.max_entries {
            decay(&mut counts);
        }
    }

    /// Halves every count and forgets ids that reach zero.
    pub fn decay(&self) {
        decay(&mut self.counts.lock());
    }

    /// The `k` ids with the highest counts, highest first.
    pub fn top(&self, k: usize) -> Vec<u64> {
        let counts = self.counts.lock();
        let mut all: Vec<(u32, u64)> = counts.iter().map(|(&id, &c)| (c, id)).collect();
        drop(counts);
        if all.len() > k {
            all.select_nth_unstable_by(k, |a, b| b.cmp(a));
            all.truncate(k);
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.into_iter().map(|(_, id)| id).collect()
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
        assert_eq!(h.top(3), vec![0, 1, 2]);
        h.hint(&[99], 1000);
        assert_eq!(h.top(1), vec![99]);
        h.decay();
        assert!(h.len() <= 100);
    }
}
