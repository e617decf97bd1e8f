//! The row-id -> slot index of the VRAM tier, kept on the host and copied to the device: open
//! addressing with linear probing over a power-of-two table of `u64` keys (empty = `u64::MAX`)
//! and `u32` slots, probed from `mix64(id) & mask` by the host here and by the gather kernel on
//! the device (which checks 32 buckets per step, one per lane of a warp).
//!
//! The tier edits its host copy in place ([`HotIndex::insert`], [`HotIndex::remove`] with
//! backward-shift deletion, so no tombstones) and each edit names the buckets it wrote: a
//! refresh then uploads only those buckets, not the whole index (12 bytes a bucket; 101 MB for
//! the 8,388,608 buckets of a 6.7M-row tier, uploaded twice a refresh before).

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
    /// Keys present.
    len: usize,
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
        let mut len = 0;
        for (id, slot) in entries {
            let mut b = mix64(id) & mask;
            while keys[b as usize] != EMPTY_KEY {
                b = (b + 1) & mask;
            }
            keys[b as usize] = id;
            slots[b as usize] = slot;
            len += 1;
        }
        Self { keys, slots, len }
    }

    /// An index of `buckets` empty buckets (a power of two).
    pub fn empty(buckets: usize) -> Self {
        Self::build(std::iter::empty(), buckets)
    }

    /// Keys present.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no key is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.keys.len() - 1
    }

    fn home(&self, id: u64) -> usize {
        (mix64(id) as usize) & self.mask()
    }

    /// The bucket holding `id`, if any.
    fn bucket_of(&self, id: u64) -> Option<usize> {
        let mut b = self.home(id);
        for _ in 0..self.keys.len() {
            match self.keys[b] {
                k if k == id => return Some(b),
                EMPTY_KEY => return None,
                _ => b = (b + 1) & self.mask(),
            }
        }
        None
    }

    /// Maps `id` (not [`EMPTY_KEY`]) to `slot`, replacing its slot if present; pushes the
    /// bucket written onto `changed`. False, and nothing written, if that would leave no empty
    /// bucket (a probe for an absent key must always meet one).
    pub fn insert(&mut self, id: u64, slot: u32, changed: &mut Vec<usize>) -> bool {
        debug_assert_ne!(id, EMPTY_KEY);
        if let Some(b) = self.bucket_of(id) {
            self.slots[b] = slot;
            changed.push(b);
            return true;
        }
        if self.len + 1 >= self.keys.len() {
            return false;
        }
        let mut b = self.home(id);
        while self.keys[b] != EMPTY_KEY {
            b = (b + 1) & self.mask();
        }
        self.keys[b] = id;
        self.slots[b] = slot;
        self.len += 1;
        changed.push(b);
        true
    }

    /// Removes `id` if present by backward-shift deletion: each later key of the probe run that
    /// may sit earlier moves back into the hole, so every remaining key stays reachable from
    /// its home with no tombstone. Pushes every bucket written onto `changed`.
    pub fn remove(&mut self, id: u64, changed: &mut Vec<usize>) -> bool {
        let Some(mut hole) = self.bucket_of(id) else {
            return false;
        };
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let k = self.keys[j];
            if k == EMPTY_KEY {
                break;
            }
            // The key at j may move into the hole unless its home lies in (hole, j]
            // (cyclically): then it is at least as far from its home as from the hole.
            if (j.wrapping_sub(self.home(k)) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.keys[hole] = k;
                self.slots[hole] = self.slots[j];
                changed.push(hole);
                hole = j;
            }
        }
        self.keys[hole] = EMPTY_KEY;
        self.slots[hole] = 0;
        changed.push(hole);
        self.len -= 1;
        true
    }

    /// Host-side probe, the same walk the kernel makes.
    pub fn get(&self, id: u64) -> Option<u32> {
        self.bucket_of(id).map(|b| self.slots[b])
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

    /// Random inserts and removes in a small, crowded index (long runs, wrap-around at the
    /// end): afterwards it holds exactly the model's entries; and a copy two edits behind,
    /// patched with the buckets those two edits named, equals it bucket for bucket (what a
    /// refresh uploads into the inactive device index).
    #[test]
    fn edits_keep_every_key_reachable_and_name_every_bucket_they_write() {
        let buckets = 256;
        let mut idx = HotIndex::empty(buckets);
        let mut model = std::collections::HashMap::new();
        // The two device buffers: a publish writes the inactive one, then makes it active.
        let mut buffers = [idx.clone(), idx.clone()];
        let mut active = 0;
        let mut last_changed: Vec<usize> = Vec::new();
        let mut x = 12345u64;
        for step in 0..400u64 {
            let mut changed = Vec::new();
            for _ in 0..25 {
                x = mix64(x);
                // A universe of 400 ids for 256 buckets: at times nearly full.
                let id = x % 400;
                if x >> 60 < 7 {
                    let slot = (x >> 20) as u32;
                    if idx.insert(id, slot, &mut changed) {
                        model.insert(id, slot);
                    } else {
                        assert_eq!(idx.len(), buckets - 1, "refused only when full");
                    }
                } else {
                    assert_eq!(idx.remove(id, &mut changed), model.remove(&id).is_some());
                }
            }
            assert_eq!(idx.len(), model.len());
            for id in 0..400u64 {
                assert_eq!(
                    idx.get(id),
                    model.get(&id).copied(),
                    "id {id} at step {step}"
                );
            }
            let next = &mut buffers[1 - active];
            for &b in last_changed.iter().chain(&changed) {
                next.keys[b] = idx.keys[b];
                next.slots[b] = idx.slots[b];
            }
            assert_eq!(next.keys, idx.keys, "step {step}");
            assert_eq!(next.slots, idx.slots, "step {step}");
            active = 1 - active;
            last_changed = changed;
        }
    }
}
