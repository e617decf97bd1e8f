//! A compact open-addressing index from `u64` keys to `u32` slots, for policies whose metadata
//! must stay within a few bytes per cached row.
//!
//! Each bucket is one `u32`: the low `slot_bits` bits hold `slot + 1` (0 marks an empty bucket)
//! and the remaining high bits hold a tag taken from the key's hash, so that most probes that do
//! not match are rejected without touching the key. Keys live once, in a slot -> key array that
//! the policies need anyway to name the key they evict. Linear probing with backward-shift
//! deletion keeps the table free of tombstones, and bucket homes come from a multiply-shift
//! range reduction, so the bucket count need not be a power of two.
//!
//! The key array holds `u32`s while every key inserted so far fits (row ids of tables of up to
//! 4G rows, which covers Engram-27B's 36M rows per layer), and widens to `u64`s, once, the first
//! time a larger key arrives. At the default load the index costs 4 bytes of key (8 once wide)
//! plus 5 bytes of buckets per slot.

use super::Admitted;
use crate::key_hash::mix64;
use crate::prefetch::prefetch_read;

/// Buckets per slot, as a ratio `NUM / DEN` (a load of 0.8 when every slot is in use).
const BUCKETS_NUM: usize = 5;
const BUCKETS_DEN: usize = 4;

/// Maps resident keys to their slots. Slots are numbered `0..capacity`; which of them are in
/// use is the owner's business (the index only knows the keys inserted into it).
#[derive(Debug)]
pub(crate) struct SlotIndex {
    buckets: Box<[u32]>,
    keys: Keys,
    slot_bits: u32,
    len: usize,
}

/// The slot -> key array, narrow until a key needs 64 bits.
#[derive(Debug)]
enum Keys {
    Narrow(Box<[u32]>),
    Wide(Box<[u64]>),
}

impl Keys {
    #[inline]
    fn get(&self, slot: usize) -> u64 {
        match self {
            Self::Narrow(k) => u64::from(k[slot]),
            Self::Wide(k) => k[slot],
        }
    }

    /// Hints the CPU to load the key of `slot` (any value: out of range does nothing).
    #[inline]
    fn prefetch(&self, slot: usize) {
        match self {
            Self::Narrow(k) if slot < k.len() => prefetch_read(k.as_ptr().wrapping_add(slot)),
            Self::Wide(k) if slot < k.len() => prefetch_read(k.as_ptr().wrapping_add(slot)),
            _ => {}
        }
    }

    fn set(&mut self, slot: usize, key: u64) {
        match self {
            Self::Narrow(k) => match u32::try_from(key) {
                Ok(narrow) => k[slot] = narrow,
                Err(_) => {
                    let mut wide: Box<[u64]> = k.iter().map(|&n| u64::from(n)).collect();
                    wide[slot] = key;
                    *self = Self::Wide(wide);
                }
            },
            Self::Wide(k) => k[slot] = key,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Narrow(k) => k.len(),
            Self::Wide(k) => k.len(),
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Self::Narrow(k) => std::mem::size_of_val(&**k),
            Self::Wide(k) => std::mem::size_of_val(&**k),
        }
    }
}

impl SlotIndex {
    /// An empty index for slots `0..capacity`.
    ///
    /// # Panics
    /// If `capacity` does not fit the `u32` slot numbers of [`super::Admitted`].
    pub(crate) fn new(capacity: usize) -> Self {
        assert!(
            capacity < u32::MAX as usize,
            "slot index capacity {capacity} does not fit u32 slots"
        );
        let buckets = if capacity == 0 {
            0
        } else {
            (capacity * BUCKETS_NUM).div_ceil(BUCKETS_DEN) + 1
        };
        let slot_bits = u32::BITS - (capacity as u32).leading_zeros();
        let buckets = vec![0; buckets].into_boxed_slice();
        let keys = vec![0; capacity].into_boxed_slice();
        crate::huge_pages::advise(&buckets);
        crate::huge_pages::advise(&keys);
        Self {
            buckets,
            keys: Keys::Narrow(keys),
            slot_bits,
            len: 0,
        }
    }

    /// Keys in the index.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held (buckets and the slot -> key array).
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets) + self.keys.heap_bytes()
    }

    /// The key last stored in `slot` (meaningful only while the slot is in use).
    #[inline]
    pub(crate) fn key(&self, slot: u32) -> u64 {
        self.keys.get(slot as usize)
    }

    /// The slot of `key`, if present.
    #[inline]
    pub(crate) fn get(&self, key: u64) -> Option<u32> {
        self.find(key).map(|(_, slot)| slot)
    }

    /// Hints the CPU to load the home bucket of `key` (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        if !self.buckets.is_empty() {
            let home = self.home(mix64(key));
            prefetch_read(self.buckets.as_ptr().wrapping_add(home));
        }
    }

    /// The second step after [`SlotIndex::prefetch`]: reads the home bucket of `key` (loaded by
    /// now) and, if its tag matches, hints the CPU to load the key stored for its slot, which
    /// the lookup compares against.
    #[inline]
    pub(crate) fn prefetch_follow(&self, key: u64) {
        if self.buckets.is_empty() {
            return;
        }
        let hash = mix64(key);
        let entry = self.buckets[self.home(hash)];
        let slot_mask = self.slot_mask();
        if entry != 0 && entry & !slot_mask == self.tag(hash) {
            self.keys.prefetch(((entry & slot_mask) - 1) as usize);
        }
    }

    /// Adds `key` in `slot`. The key must be absent and the slot not in use by another key.
    pub(crate) fn insert(&mut self, key: u64, slot: u32) {
        debug_assert!(self.get(key).is_none(), "key {key} already indexed");
        debug_assert!(self.len < self.keys.len(), "slot index overfull");
        let hash = mix64(key);
        let mut i = self.home(hash);
        while self.buckets[i] != 0 {
            i = self.next(i);
        }
        self.buckets[i] = self.entry(hash, slot);
        self.keys.set(slot as usize, key);
        self.len += 1;
    }

    /// Puts `key` in the next never-used slot while fewer than `capacity` are in use (a cache
    /// filling up); `None` once full. The fill phase every slot policy's `insert` starts with.
    pub(crate) fn fill(&mut self, key: u64, capacity: usize) -> Option<Admitted> {
        if self.len >= capacity {
            return None;
        }
        let slot = self.len as u32;
        self.insert(key, slot);
        Some(Admitted {
            slot,
            evicted: None,
        })
    }

    /// [`SlotIndex::replace`], as the admission a policy's `insert` returns.
    pub(crate) fn admit(&mut self, slot: u32, key: u64) -> Admitted {
        let evicted = self.replace(slot, key);
        Admitted {
            slot,
            evicted: Some(evicted),
        }
    }

    /// Removes `key`; returns the slot it held.
    pub(crate) fn remove(&mut self, key: u64) -> Option<u32> {
        let (bucket, slot) = self.find(key)?;
        self.delete_bucket(bucket);
        self.len -= 1;
        Some(slot)
    }

    /// Replaces the key in use at `slot` by `key` (absent now); returns the old key.
    pub(crate) fn replace(&mut self, slot: u32, key: u64) -> u64 {
        let old = self.key(slot);
        let removed = self.remove(old);
        debug_assert_eq!(removed, Some(slot), "slot {slot} not in use");
        self.insert(key, slot);
        old
    }

    fn find(&self, key: u64) -> Option<(usize, u32)> {
        if self.buckets.is_empty() {
            return None;
        }
        let hash = mix64(key);
        let tag = self.tag(hash);
        let slot_mask = self.slot_mask();
        let mut i = self.home(hash);
        loop {
            let entry = self.buckets[i];
            if entry == 0 {
                return None;
            }
            if entry & !slot_mask == tag {
                let slot = (entry & slot_mask) - 1;
                if self.keys.get(slot as usize) == key {
                    return Some((i, slot));
                }
            }
            i = self.next(i);
        }
    }

    /// Empties bucket `hole`, shifting back later entries of its probe run so that every entry
    /// stays reachable from its home without tombstones.
    fn delete_bucket(&mut self, mut hole: usize) {
        let slot_mask = self.slot_mask();
        let mut i = hole;
        loop {
            i = self.next(i);
            let entry = self.buckets[i];
            if entry == 0 {
                break;
            }
            let slot = (entry & slot_mask) - 1;
            let home = self.home(mix64(self.keys.get(slot as usize)));
            // The entry may move into the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !stays {
                self.buckets[hole] = entry;
                hole = i;
            }
        }
        self.buckets[hole] = 0;
    }

    #[inline]
    fn slot_mask(&self) -> u32 {
        u32::MAX
            .checked_shr(u32::BITS - self.slot_bits)
            .unwrap_or(0)
    }

    #[inline]
    fn tag(&self, hash: u64) -> u32 {
        (hash as u32) & !self.slot_mask()
    }

    #[inline]
    fn entry(&self, hash: u64, slot: u32) -> u32 {
        self.tag(hash) | (slot + 1)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        ((u128::from(hash) * self.buckets.len() as u128) >> 64) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.buckets.len() {
            0
        } else {
            i + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    #[test]
    fn matches_a_hash_map_under_random_churn() {
        for capacity in [1usize, 2, 7, 64, 1000] {
            let mut rng = StdRng::seed_from_u64(capacity as u64);
            let mut index = SlotIndex::new(capacity);
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut free: Vec<u32> = (0..capacity as u32).collect();
            for step in 0..20_000 {
                // Small key range so that hits, collisions and removals all happen; late in the
                // run some keys need 64 bits, which widens the key array mid-way.
                let key = rng.random_range(0..capacity as u64 * 3)
                    + if step > 15_000 && step % 2 == 0 {
                        1 << 33
                    } else {
                        0
                    };
                assert_eq!(index.get(key), model.get(&key).copied(), "key {key}");
                match model.get(&key).copied() {
                    Some(slot) if rng.random_bool(0.5) => {
                        assert_eq!(index.remove(key), Some(slot));
                        model.remove(&key);
                        free.push(slot);
                    }
                    Some(_) => {}
                    None => {
                        if let Some(slot) = free.pop() {
                            index.insert(key, slot);
                            model.insert(key, slot);
                        } else {
                            let slot = rng.random_range(0..capacity as u32);
                            let old = index.replace(slot, key);
                            assert_eq!(model.remove(&old), Some(slot));
                            model.insert(key, slot);
                        }
                    }
                }
                assert_eq!(index.len(), model.len());
            }
            for (&key, &slot) in &model {
                assert_eq!(index.get(key), Some(slot));
                assert_eq!(index.key(slot), key);
            }
        }
    }

    #[test]
    fn zero_capacity_holds_nothing() {
        let index = SlotIndex::new(0);
        assert_eq!(index.get(7), None);
        assert_eq!(index.heap_bytes(), 0);
    }

    #[test]
    fn costs_nine_bytes_per_slot_until_a_key_needs_64_bits() {
        let mut index = SlotIndex::new(1 << 20);
        let per_slot = |i: &SlotIndex| i.heap_bytes() as f64 / f64::from(1u32 << 20);
        assert!(
            (9.0..9.01).contains(&per_slot(&index)),
            "{}",
            per_slot(&index)
        );
        index.insert(7, 0);
        index.insert(u64::from(u32::MAX), 1);
        assert!(per_slot(&index) < 9.01, "u32::MAX still fits");
        index.insert(1 << 40, 2);
        assert!(
            (13.0..13.01).contains(&per_slot(&index)),
            "{}",
            per_slot(&index)
        );
        assert_eq!(index.get(7), Some(0));
        assert_eq!(index.get(u64::from(u32::MAX)), Some(1));
        assert_eq!(index.get(1 << 40), Some(2));
        assert_eq!(index.key(2), 1 << 40);
    }
}
