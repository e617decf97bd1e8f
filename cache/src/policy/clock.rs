//! CLOCK (second chance): one reference bit per slot and a hand that sweeps the slots, clearing
//! bits until it finds an unreferenced victim. Admits every key.

use std::collections::HashMap;

use super::{Admitted, Policy};
use crate::key_hash::KeyHashBuilder;

/// CLOCK over a fixed number of slots.
#[derive(Debug)]
pub struct Clock {
    index: HashMap<u64, u32, KeyHashBuilder>,
    keys: Vec<u64>,
    referenced: Vec<bool>,
    hand: usize,
    capacity: usize,
}

impl Clock {
    /// A CLOCK policy with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::with_capacity_and_hasher(capacity, KeyHashBuilder),
            keys: Vec::with_capacity(capacity),
            referenced: Vec::with_capacity(capacity),
            hand: 0,
            capacity,
        }
    }
}

impl Policy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&mut self, key: u64) -> Option<u32> {
        let slot = *self.index.get(&key)?;
        self.referenced[slot as usize] = true;
        Some(slot)
    }

    fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        if self.keys.len() < self.capacity {
            let slot = self.keys.len() as u32;
            self.keys.push(key);
            self.referenced.push(false);
            self.index.insert(key, slot);
            return Some(Admitted {
                slot,
                evicted: None,
            });
        }
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            if self.referenced[slot] {
                self.referenced[slot] = false;
                continue;
            }
            let evicted = std::mem::replace(&mut self.keys[slot], key);
            self.index.remove(&evicted);
            self.index.insert(key, slot as u32);
            return Some(Admitted {
                slot: slot as u32,
                evicted: Some(evicted),
            });
        }
    }

    fn metadata_bytes(&self) -> usize {
        // hashbrown: one control byte per bucket plus the (u64, u32) entry, padded to 16 bytes.
        let cap = self.index.capacity();
        let buckets = if cap == 0 {
            0
        } else {
            (cap * 8 / 7).next_power_of_two()
        };
        buckets * (1 + 16) + self.keys.capacity() * 8 + self.referenced.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_unreferenced_first() {
        let mut c = Clock::new(2);
        assert_eq!(c.get(1), None);
        assert_eq!(c.insert(1).map(|a| a.evicted), Some(None));
        assert_eq!(c.insert(2).map(|a| a.evicted), Some(None));
        assert!(c.get(1).is_some());
        let admitted = c.insert(3).expect("clock admits everything");
        assert_eq!(admitted.evicted, Some(2));
        assert!(c.contains(1) && c.contains(3) && !c.contains(2));
        assert_eq!(c.len(), 2);
    }
}
