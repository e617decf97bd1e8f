//! CLOCK (second chance): one reference bit per slot and a hand that sweeps the slots, clearing
//! bits until it finds an unreferenced victim. Admits every key.

use super::slot_index::SlotIndex;
use super::{Admitted, Policy};

/// CLOCK over a fixed number of slots.
#[derive(Debug)]
pub struct Clock {
    index: SlotIndex,
    referenced: Box<[bool]>,
    hand: usize,
    capacity: usize,
}

impl Clock {
    /// A CLOCK policy with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            referenced: vec![false; capacity].into_boxed_slice(),
            hand: 0,
            capacity,
        }
    }
}

impl Policy for Clock {
    indexed_policy_basics!("clock");

    fn get(&mut self, key: u64) -> Option<u32> {
        let slot = self.index.get(key)?;
        self.referenced[slot as usize] = true;
        Some(slot)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        if let Some(admitted) = self.index.fill(key, self.capacity) {
            return Some(admitted);
        }
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.capacity;
            if self.referenced[slot] {
                self.referenced[slot] = false;
                continue;
            }
            return Some(self.index.admit(slot as u32, key));
        }
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.heap_bytes()
            + std::mem::size_of_val(&*self.referenced)
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
