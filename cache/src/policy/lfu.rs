//! LFU with a count-min sketch and aging: evicts the least frequently used of a few randomly
//! sampled resident keys (Redis's approximated LFU), frequencies coming from a
//! 4-bit count-min sketch (see [`SketchConfig`]) whose counters halve every period, so old popularity fades. Admits every
//! key; compare W-TinyLFU, which uses the same sketch to refuse keys colder than their victim.

use super::sketch::{FrequencySketch, SketchConfig};
use super::slot_index::SlotIndex;
use super::{Admitted, Policy};
use crate::key_hash::mix64;

/// Resident keys sampled per eviction.
const SAMPLES: usize = 8;

/// Sampled LFU over a fixed number of slots.
#[derive(Debug)]
pub struct Lfu {
    index: SlotIndex,
    sketch: FrequencySketch,
    rng: u64,
    capacity: usize,
}

impl Lfu {
    /// An LFU policy with `capacity` slots and a default-sized sketch.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            sketch: FrequencySketch::new(capacity, SketchConfig::default()),
            rng: 0x5eed,
            capacity,
        }
    }

    fn random_slot(&mut self) -> u32 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        ((u128::from(mix64(self.rng)) * self.capacity as u128) >> 64) as u32
    }
}

impl Policy for Lfu {
    indexed_policy_basics!("lfu");

    fn get(&mut self, key: u64) -> Option<u32> {
        self.sketch.increment(key);
        self.index.get(key)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        if let Some(admitted) = self.index.fill(key, self.capacity) {
            return Some(admitted);
        }
        let mut victim = self.random_slot();
        let mut coldest = self.sketch.estimate(self.index.key(victim));
        for _ in 1..SAMPLES {
            let slot = self.random_slot();
            let freq = self.sketch.estimate(self.index.key(slot));
            if freq < coldest {
                (victim, coldest) = (slot, freq);
            }
        }
        Some(self.index.admit(victim, key))
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.index.heap_bytes() + self.sketch.heap_bytes()
    }

    fn frequency(&self, key: u64) -> u32 {
        self.sketch.estimate(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_frequent_keys() {
        let mut lfu = Lfu::new(4);
        for round in 0..50u64 {
            for key in 0..3 {
                if lfu.get(key).is_none() {
                    lfu.insert(key);
                }
            }
            let one_off = 1000 + round;
            if lfu.get(one_off).is_none() {
                lfu.insert(one_off);
            }
        }
        assert!((0..3).all(|k| lfu.contains(k)));
        assert!(lfu.frequency(0) > lfu.frequency(1049));
    }
}
