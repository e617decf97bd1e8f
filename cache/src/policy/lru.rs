//! LRU: evict the least recently used key. Admits every key. The recency order is an intrusive
//! list over slots, so a hit costs two link updates and no allocation.

use super::slot_index::SlotIndex;
use super::slot_list::SlotList;
use super::{Admitted, Policy};

/// Least-recently-used replacement over a fixed number of slots.
#[derive(Debug)]
pub struct Lru {
    index: SlotIndex,
    order: SlotList,
    capacity: usize,
}

impl Lru {
    /// An LRU policy with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            order: SlotList::new(capacity),
            capacity,
        }
    }
}

impl Policy for Lru {
    indexed_policy_basics!("lru");

    fn get(&mut self, key: u64) -> Option<u32> {
        let slot = self.index.get(key)?;
        self.order.move_to_head(slot);
        Some(slot)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        let admitted = match self.index.fill(key, self.capacity) {
            Some(admitted) => admitted,
            None => {
                let slot = self.order.tail();
                self.order.unlink(slot);
                self.index.admit(slot, key)
            }
        };
        self.order.push_head(admitted.slot);
        Some(admitted)
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.index.heap_bytes() + self.order.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut lru = Lru::new(2);
        lru.insert(1);
        lru.insert(2);
        assert!(lru.get(1).is_some());
        assert_eq!(lru.insert(3).and_then(|a| a.evicted), Some(2));
        assert_eq!(lru.insert(4).and_then(|a| a.evicted), Some(1));
    }
}
