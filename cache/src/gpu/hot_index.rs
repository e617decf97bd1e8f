//! The row-id -> slot index of the VRAM tier, built on the host and copied to the device: open
//! addressing with linear probing over a power-of-two table of `u64` keys (empty = `u64::MAX`)
//! and `u32` slots, probed from `mix64(id) & mask` by the host here and by the gather kernel on
//! the device (which checks 32 buckets per step, one per lane of a warp).

use crate::key_hash::mix64;

/// Key of an empty bucket.
pub const EMPTY_KEY: u64 = u64::MAX;

/// A built index: keys and slots, bucket for bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotIndex {
    /// Row id per bucket, or [`EMPTY_KEY`].
    pub keys: Vec<u64>,
    /// Slot per bucket (meaningless where the key is empty).
    pub slots: Vec<u32>,
}

/// Buckets for `rows` rows: a power of two with load at most 0.8 (a miss then probes about a
/// dozen buckets on average, well inside the 32 a warp checks per step).
pub fn buckets_for(rows: usize) -> usize {
    (rows.max(1) + rows / 4).next_power_of_two().max(32)
}

impl HotIndex {
    /// Builds an index of `entries` (row id, slot) with `buckets` buckets (a power of two,
    /// at least 1.25 times the entries). Row ids must be distinct and not [`EMPTY_KEY`].
    pub fn build(entries: impl IntoIterator<Item = (u64, u32)>, buckets: usize) -> Self {
        debug_assert!(buckets.is_power_of_two());
        let mask = buckets as u64 - 1;
        let mut keys = vec![EMPTY_KEY; buckets];
        let mut slots = vec![0u32; buckets];
        for (id, slot) in entries {
            let mut b = mix64(id) & mask;
            while keys[b as usize] != EMPTY_KEY {
                b = (b + 1) & mask;
            }
            keys[b as usize] = id;
            slots[b as usize] = slot;
        }
        Self { keys, slots }
    }

    /// Host-side probe, the same walk the kernel makes.
    pub fn get(&self, id: u64) -> Option<u32> {
        let mask = self.keys.len() as u64 - 1;
        let mut b = mix64(id) & mask;
        for _ in 0..self.keys.len() {
            match self.keys[b as usize] {
                k if k == id => return Some(self.slots[b as usize]),
                EMPTY_KEY => return None,
                _ => b = (b + 1) & mask,
            }
        }
        None
    }

    /// Bytes of the two arrays.
    pub fn bytes(&self) -> usize {
        self.keys.len() * 12
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_entry_and_nothing_else() {
        let entries: Vec<(u64, u32)> = (0..1000u64).map(|i| (i * 7919 + 3, i as u32)).collect();
        let idx = HotIndex::build(entries.iter().copied(), buckets_for(entries.len()));
        for &(id, slot) in &entries {
            assert_eq!(idx.get(id), Some(slot));
        }
        assert_eq!(idx.get(1), None);
        assert!(idx.keys.len() >= 1250);
    }
}
