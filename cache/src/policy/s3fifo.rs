//! S3-FIFO (Yang et al., SOSP '23): three FIFO queues. New keys enter a small queue (10% of the
//! slots); a key leaving it moves to the main queue if it was hit while there and is otherwise
//! evicted, its key remembered in a ghost queue. A missed key found in the ghost goes straight to
//! the main queue. The main queue is a FIFO with reinsertion driven by a 2-bit hit counter.
//! Admits every key; the small queue is its quick demotion of keys seen once.

use std::collections::VecDeque;

use super::slot_index::SlotIndex;
use super::{Admitted, Policy};

/// Tuning of [`S3Fifo`]; the defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct S3FifoConfig {
    /// Fraction of the slots given to the small queue. Default 0.1.
    pub small_fraction: f64,
    /// Ghost entries per slot of the main queue. Default 1.
    pub ghost_factor: f64,
}

impl Default for S3FifoConfig {
    fn default() -> Self {
        Self {
            small_fraction: 0.1,
            ghost_factor: 1.0,
        }
    }
}
/// Hit counters saturate here.
const MAX_FREQ: u8 = 3;

/// S3-FIFO over a fixed number of slots.
#[derive(Debug)]
pub struct S3Fifo {
    index: SlotIndex,
    freq: Box<[u8]>,
    small: VecDeque<u32>,
    main: VecDeque<u32>,
    ghost: Ghost,
    small_target: usize,
    capacity: usize,
}

impl S3Fifo {
    /// An S3-FIFO policy with `capacity` slots.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(capacity, S3FifoConfig::default())
    }

    /// An S3-FIFO policy with `capacity` slots tuned by `config`.
    pub fn with_config(capacity: usize, config: S3FifoConfig) -> Self {
        let small_target = ((capacity as f64 * config.small_fraction).round() as usize).max(1);
        let ghost = (capacity.saturating_sub(small_target) as f64 * config.ghost_factor) as usize;
        Self {
            index: SlotIndex::new(capacity),
            freq: vec![0; capacity].into_boxed_slice(),
            small: VecDeque::with_capacity(capacity),
            main: VecDeque::with_capacity(capacity),
            ghost: Ghost::new(ghost.max(1)),
            small_target,
            capacity,
        }
    }

    /// Frees one slot (the cache is full) and returns it.
    fn evict(&mut self) -> u32 {
        loop {
            if self.small.len() >= self.small_target || self.main.is_empty() {
                let Some(slot) = self.small.pop_front() else {
                    unreachable!("a full cache has a slot in one of its queues")
                };
                if self.freq[slot as usize] > 0 {
                    self.freq[slot as usize] = 0;
                    self.main.push_back(slot);
                } else {
                    let key = self.index.key(slot);
                    self.index.remove(key);
                    self.ghost.insert(key);
                    return slot;
                }
            } else {
                let Some(slot) = self.main.pop_front() else {
                    unreachable!("main is not empty here")
                };
                if self.freq[slot as usize] > 0 {
                    self.freq[slot as usize] -= 1;
                    self.main.push_back(slot);
                } else {
                    self.index.remove(self.index.key(slot));
                    return slot;
                }
            }
        }
    }
}

impl Policy for S3Fifo {
    indexed_policy_basics!("s3fifo");

    fn get(&mut self, key: u64) -> Option<u32> {
        let slot = self.index.get(key)?;
        let f = &mut self.freq[slot as usize];
        *f = (*f + 1).min(MAX_FREQ);
        Some(slot)
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        let len = self.index.len();
        let (slot, evicted) = if len < self.capacity {
            (len as u32, None)
        } else {
            let slot = self.evict();
            (slot, Some(self.index.key(slot)))
        };
        self.index.insert(key, slot);
        self.freq[slot as usize] = 0;
        if self.ghost.remove(key) {
            self.main.push_back(slot);
        } else {
            self.small.push_back(slot);
        }
        Some(Admitted { slot, evicted })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.heap_bytes()
            + std::mem::size_of_val(&*self.freq)
            + (self.small.capacity() + self.main.capacity()) * std::mem::size_of::<u32>()
            + self.ghost.heap_bytes()
    }
}

/// Keys recently evicted from the small queue: a ring of positions indexed by key.
#[derive(Debug)]
struct Ghost {
    index: SlotIndex,
    cursor: u32,
    capacity: u32,
}

impl Ghost {
    fn new(capacity: usize) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            cursor: 0,
            capacity: capacity as u32,
        }
    }

    fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
    }

    /// Remembers `key` (absent), forgetting the oldest key if the ring is full.
    fn insert(&mut self, key: u64) {
        let pos = self.cursor;
        let old = self.index.key(pos);
        if self.index.get(old) == Some(pos) {
            self.index.remove(old);
        }
        self.index.insert(key, pos);
        self.cursor = if pos + 1 == self.capacity { 0 } else { pos + 1 };
    }

    /// Forgets `key`; true if it was remembered.
    fn remove(&mut self, key: u64) -> bool {
        self.index.remove(key).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hit_keys_leave_through_the_small_queue() {
        let mut s3 = S3Fifo::new(10); // small queue of 1
        for key in 0..9 {
            s3.insert(key);
        }
        for key in 0..9 {
            assert!(s3.get(key).is_some());
        }
        s3.insert(100);
        // Keys 0..9 were hit in the small queue and move to main; 100 was not and goes.
        let admitted = s3.insert(101).expect("admits");
        assert_eq!(admitted.evicted, Some(100));
        let admitted = s3.insert(102).expect("admits");
        assert_eq!(
            admitted.evicted,
            Some(101),
            "unhit small-queue keys go first"
        );
        // A key evicted from the small queue comes back into the main queue.
        assert!(s3.ghost.index.get(101).is_some());
    }
}
