//! A frequency-pinned static hot set: every `period` accesses, the `capacity` keys with the
//! highest decayed access counts become the hot set, and until the next refresh only hot keys
//! may displace resident keys (which must be cold). Counts are exact per key and halve at every
//! refresh; keys whose count reaches zero are forgotten. This is the "pin the top-K rows"
//! strategy a static tier would use, refreshed from recent traffic; its per-key counts cost far
//! more memory than a sketch, which the simulator reports.

use std::collections::{HashMap, HashSet};

use super::slot_index::SlotIndex;
use super::{Admitted, Policy};
use crate::key_hash::KeyHashBuilder;

/// Default accesses between refreshes, per slot (with a floor for small caches).
const PERIOD_PER_SLOT: u64 = 8;
const MIN_PERIOD: u64 = 1 << 16;

/// The pinned top-K policy over a fixed number of slots.
#[derive(Debug)]
pub struct HotSet {
    index: SlotIndex,
    counts: HashMap<u64, u32, KeyHashBuilder>,
    hot: HashSet<u64, KeyHashBuilder>,
    /// Resident slots holding cold keys, the only ones a hot key may take.
    cold: Vec<u32>,
    accesses: u64,
    period: u64,
    capacity: usize,
}

impl HotSet {
    /// A hot set of `capacity` slots refreshed every `8 * capacity` accesses (at least 65,536).
    pub fn new(capacity: usize) -> Self {
        Self::with_period(
            capacity,
            (capacity as u64 * PERIOD_PER_SLOT).max(MIN_PERIOD),
        )
    }

    /// A hot set of `capacity` slots refreshed every `period` accesses.
    pub fn with_period(capacity: usize, period: u64) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            counts: HashMap::default(),
            hot: HashSet::default(),
            cold: Vec::with_capacity(capacity),
            accesses: 0,
            period: period.max(1),
            capacity,
        }
    }

    /// Picks the new hot set, decays the counts and lists the resident cold slots.
    fn refresh(&mut self) {
        let mut ranked: Vec<(u32, u64)> = self.counts.iter().map(|(&k, &c)| (c, k)).collect();
        let top = self.capacity.min(ranked.len());
        if top < ranked.len() {
            ranked.select_nth_unstable_by(top, |a, b| b.cmp(a));
        }
        // Rebuilt rather than cleared, so that neither table carries tombstones or stale
        // capacity (which also keeps `metadata_bytes` exact).
        let mut hot = HashSet::with_capacity_and_hasher(top, KeyHashBuilder);
        hot.extend(ranked[..top].iter().map(|&(_, k)| k));
        self.hot = hot;
        let mut counts = HashMap::with_capacity_and_hasher(self.counts.len(), KeyHashBuilder);
        counts.extend(
            ranked
                .into_iter()
                .filter(|&(c, _)| c > 1)
                .map(|(c, k)| (k, c / 2)),
        );
        self.counts = counts;
        self.cold.clear();
        for slot in 0..self.index.len() as u32 {
            if !self.hot.contains(&self.index.key(slot)) {
                self.cold.push(slot);
            }
        }
    }
}

impl Policy for HotSet {
    indexed_policy_basics!("hotset");

    fn get(&mut self, key: u64) -> Option<u32> {
        *self.counts.entry(key).or_insert(0) += 1;
        self.accesses += 1;
        if self.accesses.is_multiple_of(self.period) {
            self.refresh();
        }
        self.index.get(key)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        let hot = self.hot.contains(&key);
        let len = self.index.len();
        if len < self.capacity {
            let slot = len as u32;
            self.index.insert(key, slot);
            if !hot {
                self.cold.push(slot);
            }
            return Some(Admitted {
                slot,
                evicted: None,
            });
        }
        if !hot {
            return None;
        }
        let slot = self.cold.pop()?;
        let evicted = self.index.replace(slot, key);
        Some(Admitted {
            slot,
            evicted: Some(evicted),
        })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.heap_bytes()
            + hash_table_bytes::<(u64, u32)>(self.counts.capacity())
            + hash_table_bytes::<u64>(self.hot.capacity())
            + self.cold.capacity() * std::mem::size_of::<u32>()
    }

    fn frequency(&self, key: u64) -> u32 {
        self.counts.get(&key).copied().unwrap_or(0)
    }
}

/// Bytes of the allocation behind a std hash table of `T` reporting `capacity`, for a table
/// that has never removed an entry (so `capacity` maps back to its bucket count): hashbrown lays
/// out the buckets, then one control byte per bucket plus one group of trailing control bytes.
fn hash_table_bytes<T>(capacity: usize) -> usize {
    const GROUP: usize = if cfg!(all(target_arch = "x86_64", target_feature = "sse2")) {
        16
    } else {
        8
    };
    if capacity == 0 {
        return 0;
    }
    let buckets = if capacity < 8 {
        capacity + 1
    } else {
        capacity / 7 * 8
    };
    let align = GROUP.max(std::mem::align_of::<T>());
    (buckets * std::mem::size_of::<T>()).next_multiple_of(align) + buckets + GROUP
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hot_keys_displace_cold_ones() {
        let mut hs = HotSet::with_period(2, 10);
        hs.insert(100);
        hs.insert(101);
        for _ in 0..4 {
            hs.get(1);
            hs.get(2);
        }
        assert_eq!(hs.insert(3), None, "cold key, full cache");
        hs.get(1);
        hs.get(2); // the 10th access refreshes: 1 and 2 are hot
        let a = hs.insert(1).expect("hot key displaces a cold one");
        assert!(matches!(a.evicted, Some(100 | 101)));
        hs.insert(2).expect("and the other");
        assert_eq!(hs.insert(3), None, "nothing cold is left");
        assert!(hs.frequency(1) >= 2);
    }
}
