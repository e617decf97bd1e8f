//! The slot machinery that windowed policies share: every slot is either in a FIFO *window* (a
//! ring of slot numbers) or in a *main* region swept by a CLOCK hand, marked by one metadata byte
//! per slot that also holds a 2-bit hit counter. Keys never move between slots (the arena would
//! have to copy row bytes): a window key promoted to the main region stays in its slot, which
//! simply changes region, and the slot freed by an eviction is the one handed to the new key.
//!
//! Memory: the [`SlotIndex`], one byte per slot, and 4 bytes per slot of the largest window.

use super::slot_index::SlotIndex;

/// Metadata bit: the slot belongs to the window.
const WINDOW: u8 = 0x80;
/// Metadata bits: the hit counter.
const COUNTER: u8 = 0x03;

/// Slots in a FIFO window and a CLOCK main region (see the module doc).
#[derive(Debug)]
pub(crate) struct Regions {
    index: SlotIndex,
    meta: Box<[u8]>,
    ring: Box<[u32]>,
    ring_head: usize,
    window_len: usize,
    hand: usize,
    clock_max: u8,
}

impl Regions {
    /// `capacity` slots, a window of at most `max_window` slots (less than `capacity`), and
    /// hit counters that saturate at `clock_max` (at most 3).
    pub(crate) fn new(capacity: usize, max_window: usize, clock_max: u8) -> Self {
        Self {
            index: SlotIndex::new(capacity),
            meta: vec![0; capacity].into_boxed_slice(),
            ring: vec![0; max_window.min(capacity.saturating_sub(1))].into_boxed_slice(),
            ring_head: 0,
            window_len: 0,
            hand: 0,
            clock_max: clock_max.min(COUNTER),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index.heap_bytes()
            + std::mem::size_of_val(&*self.meta)
            + std::mem::size_of_val(&*self.ring)
    }

    /// Slots.
    pub(crate) fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Keys resident.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The largest window this can hold.
    pub(crate) fn max_window(&self) -> usize {
        self.ring.len()
    }

    /// Keys in the window.
    pub(crate) fn window_len(&self) -> usize {
        self.window_len
    }

    /// Hints the CPU to load the index bucket of `key`.
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        self.index.prefetch(key);
    }

    /// Follows the prefetched bucket of `key` to its stored key.
    #[inline]
    pub(crate) fn prefetch_follow(&self, key: u64) {
        self.index.prefetch_follow(key);
    }

    /// The slot of `key`, if resident.
    #[inline]
    pub(crate) fn slot(&self, key: u64) -> Option<u32> {
        self.index.get(key)
    }

    /// The key in `slot` (in use).
    #[inline]
    pub(crate) fn key(&self, slot: u32) -> u64 {
        self.index.key(slot)
    }

    /// Records a hit on `slot`.
    #[inline]
    pub(crate) fn touch(&mut self, slot: u32) {
        let m = &mut self.meta[slot as usize];
        if *m & COUNTER < self.clock_max {
            *m += 1;
        }
    }

    /// True if `slot` was hit since it entered its region (or since the hand last passed it).
    pub(crate) fn was_hit(&self, slot: u32) -> bool {
        self.meta[slot as usize] & COUNTER != 0
    }

    /// Puts `key` in the next never-used slot (the cache is not full yet), in the main region.
    pub(crate) fn fill(&mut self, key: u64) -> u32 {
        let slot = self.index.len() as u32;
        self.index.insert(key, slot);
        self.meta[slot as usize] = 0;
        slot
    }

    /// Replaces the key in `slot` by `key`; returns the evicted key. The slot joins the main
    /// region with a clear counter (callers move it to the window with [`Regions::window_push`]).
    pub(crate) fn replace(&mut self, slot: u32, key: u64) -> u64 {
        self.meta[slot as usize] = 0;
        self.index.replace(slot, key)
    }

    /// Appends `slot` to the window (which must have room) with a clear counter.
    pub(crate) fn window_push(&mut self, slot: u32) {
        debug_assert!(self.window_len < self.ring.len());
        let at = (self.ring_head + self.window_len) % self.ring.len();
        self.ring[at] = slot;
        self.window_len += 1;
        self.meta[slot as usize] = WINDOW;
    }

    /// Takes the oldest window slot (the window must not be empty); it joins the main region
    /// keeping its counter.
    pub(crate) fn window_pop(&mut self) -> u32 {
        debug_assert!(self.window_len > 0);
        let slot = self.ring[self.ring_head];
        self.ring_head = (self.ring_head + 1) % self.ring.len();
        self.window_len -= 1;
        self.meta[slot as usize] &= COUNTER;
        slot
    }

    /// Clears the counter of `slot` (a key promoted to the main region starts afresh).
    pub(crate) fn clear_counter(&mut self, slot: u32) {
        self.meta[slot as usize] &= !COUNTER;
    }

    /// Sweeps the CLOCK hand over the main region (which must not be empty) to a slot whose
    /// counter is zero, decrementing the counters it passes.
    pub(crate) fn clock_victim(&mut self) -> u32 {
        let capacity = self.meta.len();
        loop {
            let slot = self.hand;
            self.hand = if slot + 1 == capacity { 0 } else { slot + 1 };
            let m = self.meta[slot];
            if m & WINDOW != 0 {
                continue;
            }
            if m & COUNTER != 0 {
                self.meta[slot] = m - 1;
                continue;
            }
            return slot as u32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_fifo_and_clock_skips_it() {
        let mut r = Regions::new(4, 2, 3);
        for key in 10..14 {
            r.fill(key);
        }
        r.window_push(0);
        r.window_push(2);
        r.touch(1); // main slot 1 gets a second chance
        assert_eq!(
            r.clock_victim(),
            3,
            "skips window slots 0 and 2 and referenced slot 1"
        );
        assert_eq!(r.clock_victim(), 1, "slot 1's counter was spent");
        assert_eq!(r.window_pop(), 0);
        assert_eq!(r.window_len(), 1);
        assert_eq!(r.replace(3, 99), 13);
        assert_eq!(r.slot(99), Some(3));
        assert_eq!(r.key(2), 12);
    }
}
