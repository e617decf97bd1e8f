//! SIEVE (Zhang et al., NSDI '24): a FIFO queue with one visited bit per entry and a hand that
//! moves from the oldest entry towards the newest, clearing visited bits and evicting the first
//! unvisited entry. Unlike CLOCK, survivors keep their place instead of being reinserted, so new
//! keys that are never touched again leave quickly. Admits every key.

use super::slot_index::SlotIndex;
use super::slot_list::{NIL, SlotList};
use super::{Admitted, Policy};

/// SIEVE over a fixed number of slots.
#[derive(Debug)]
pub struct Sieve {
    index: SlotIndex,
    order: SlotList,
    visited: Box<[bool]>,
    hand: u32,
    capacity: usize,
}

impl Sieve {
    /// A SIEVE policy with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            order: SlotList::new(capacity),
            visited: vec![false; capacity].into_boxed_slice(),
            hand: NIL,
            capacity,
        }
    }

    /// Moves the hand to the first unvisited slot, unlinks it and returns it.
    fn evict(&mut self) -> u32 {
        let mut slot = if self.hand == NIL {
            self.order.tail()
        } else {
            self.hand
        };
        while self.visited[slot as usize] {
            self.visited[slot as usize] = false;
            slot = self.order.toward_head(slot);
            if slot == NIL {
                slot = self.order.tail();
            }
        }
        self.hand = self.order.toward_head(slot);
        self.order.unlink(slot);
        slot
    }
}

impl Policy for Sieve {
    indexed_policy_basics!("sieve");

    fn get(&mut self, key: u64) -> Option<u32> {
        let slot = self.index.get(key)?;
        self.visited[slot as usize] = true;
        Some(slot)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        let admitted = match self.index.fill(key, self.capacity) {
            Some(admitted) => admitted,
            None => {
                let slot = self.evict();
                self.index.admit(slot, key)
            }
        };
        self.visited[admitted.slot as usize] = false;
        self.order.push_head(admitted.slot);
        Some(admitted)
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.heap_bytes()
            + self.order.heap_bytes()
            + std::mem::size_of_val(&*self.visited)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// SIEVE as the paper states it, over a `Vec` (oldest first) and a hand index.
    struct Reference {
        queue: Vec<(u64, bool)>,
        hand: usize,
        capacity: usize,
    }

    impl Reference {
        fn access(&mut self, key: u64) -> bool {
            if let Some(e) = self.queue.iter_mut().find(|e| e.0 == key) {
                e.1 = true;
                return true;
            }
            if self.queue.len() == self.capacity {
                loop {
                    if self.hand >= self.queue.len() {
                        self.hand = 0;
                    }
                    if self.queue[self.hand].1 {
                        self.queue[self.hand].1 = false;
                        self.hand += 1;
                    } else {
                        // The hand stays on the index, which now holds the next newer entry;
                        // past the newest, it starts again from the oldest.
                        self.queue.remove(self.hand);
                        if self.hand == self.queue.len() {
                            self.hand = 0;
                        }
                        break;
                    }
                }
            }
            self.queue.push((key, false));
            false
        }
    }

    #[test]
    fn matches_the_reference_on_random_traces() {
        let mut rng = StdRng::seed_from_u64(5);
        for capacity in [1usize, 2, 5, 16] {
            let mut sieve = Sieve::new(capacity);
            let mut reference = Reference {
                queue: Vec::new(),
                hand: 0,
                capacity,
            };
            for i in 0..5000 {
                let key = rng.random_range(0..capacity as u64 * 3);
                let hit = sieve.get(key).is_some();
                if !hit {
                    sieve.insert(key);
                }
                assert_eq!(hit, reference.access(key), "capacity {capacity} access {i}");
            }
        }
    }

    #[test]
    fn keeps_visited_keys_in_place() {
        let mut sieve = Sieve::new(3);
        for key in 1..=3 {
            sieve.insert(key);
        }
        assert!(sieve.get(1).is_some());
        // The hand skips 1 (visited, cleared) and evicts 2, then resumes where it stopped, so
        // the unvisited newcomers go before 1 comes round again.
        assert_eq!(sieve.insert(4).and_then(|a| a.evicted), Some(2));
        assert_eq!(sieve.insert(5).and_then(|a| a.evicted), Some(3));
        assert_eq!(sieve.insert(6).and_then(|a| a.evicted), Some(4));
        assert!(sieve.contains(1));
    }
}
