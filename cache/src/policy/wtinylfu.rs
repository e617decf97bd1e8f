//! W-TinyLFU over CLOCK in a few bytes per row: the RAM tier's default policy.
//!
//! Shape (after Einziger, Friedman and Manes, "TinyLFU", 2017, and Caffeine):
//! - Every missed key is admitted to a small *window* (a FIFO ring of slots), which catches
//!   bursts of recency: a row used by the next few tokens of a document.
//! - A key leaving the window competes with the *main* region's victim: it stays (moving to the
//!   main region in place, its slot unchanged) only if its estimated frequency is higher;
//!   otherwise it is evicted. So one-off keys never displace popular ones.
//! - The main region is CLOCK with a 2-bit counter per slot instead of Caffeine's segmented LRU,
//!   which would cost two links per slot; window slots are marked in the same byte and skipped
//!   by the hand.
//! - Frequencies come from a [`FrequencySketch`] (4-bit count-min with a doorkeeper, aged by
//!   halving), fed by every `get`.
//!
//! Slots never move: when the window's candidate wins, the main victim's slot is the one handed
//! to the new key, so the arena never copies row bytes. The index is a [`SlotIndex`].

use super::sketch::{FrequencySketch, SketchConfig};
use super::slot_index::SlotIndex;
use super::{Admitted, Policy};

/// Slot metadata bit: the slot belongs to the window.
const WINDOW: u8 = 0x80;
/// Slot metadata bits: the CLOCK counter.
const COUNTER: u8 = 0x03;

/// Tuning of [`WTinyLfu`]; the defaults are the ones measured on the Engram traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WTinyLfuConfig {
    /// Fraction of the slots in the window (rounded; at most all but one slot). Default 0.01.
    pub window_fraction: f64,
    /// CLOCK counter ceiling in the main region, 0 to 3 (0 makes it FIFO). Default 3.
    pub clock_max: u8,
    /// Frequency sketch sizing.
    pub sketch: SketchConfig,
    /// Window keys hit while in the window go round it once more (an LRU-like window) instead
    /// of facing admission. Default false.
    pub window_second_chance: bool,
    /// A window key hit while in the window enters the main region without an admission test
    /// (S3-FIFO's rule). Default false.
    pub promote_window_hits: bool,
    /// Admit a candidate whose frequency ties its victim's. Default false.
    pub admit_ties: bool,
}

impl Default for WTinyLfuConfig {
    fn default() -> Self {
        Self {
            window_fraction: 0.01,
            clock_max: 3,
            sketch: SketchConfig::default(),
            window_second_chance: false,
            promote_window_hits: false,
            admit_ties: false,
        }
    }
}

/// W-TinyLFU with a CLOCK main region over a fixed number of slots (see the module doc).
#[derive(Debug)]
pub struct WTinyLfu {
    index: SlotIndex,
    meta: Box<[u8]>,
    window: Box<[u32]>,
    window_head: usize,
    window_len: usize,
    hand: usize,
    clock_max: u8,
    second_chance: bool,
    promote_hits: bool,
    admit_ties: bool,
    sketch: FrequencySketch,
    capacity: usize,
}

impl WTinyLfu {
    /// A policy of `capacity` slots with the default tuning.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(capacity, WTinyLfuConfig::default())
    }

    /// A policy of `capacity` slots tuned by `config`.
    pub fn with_config(capacity: usize, config: WTinyLfuConfig) -> Self {
        let window = ((capacity as f64 * config.window_fraction).round() as usize)
            .min(capacity.saturating_sub(1));
        Self {
            index: SlotIndex::new(capacity),
            meta: vec![0; capacity].into_boxed_slice(),
            window: vec![0; window].into_boxed_slice(),
            window_head: 0,
            window_len: 0,
            hand: 0,
            clock_max: config.clock_max.min(COUNTER),
            second_chance: config.window_second_chance,
            promote_hits: config.promote_window_hits,
            admit_ties: config.admit_ties,
            sketch: FrequencySketch::new(capacity, config.sketch),
            capacity,
        }
    }

    /// Appends `slot` to the window; the window must have room.
    fn window_push(&mut self, slot: u32) {
        debug_assert!(self.window_len < self.window.len());
        let at = (self.window_head + self.window_len) % self.window.len();
        self.window[at] = slot;
        self.window_len += 1;
        self.meta[slot as usize] = WINDOW;
    }

    /// Takes the oldest window slot (the window must not be empty); it is marked main.
    fn window_pop(&mut self) -> u32 {
        debug_assert!(self.window_len > 0);
        let slot = self.window[self.window_head];
        self.window_head = (self.window_head + 1) % self.window.len();
        self.window_len -= 1;
        self.meta[slot as usize] &= COUNTER;
        slot
    }

    /// Sweeps the CLOCK hand over the main region to a slot whose counter is zero.
    fn clock_victim(&mut self) -> u32 {
        loop {
            let slot = self.hand;
            self.hand = if slot + 1 == self.capacity {
                0
            } else {
                slot + 1
            };
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

    /// True if the key in `candidate` should displace the key in `victim`.
    fn admits(&self, candidate: u64, victim: u64) -> bool {
        let (c, v) = (
            self.sketch.estimate(candidate),
            self.sketch.estimate(victim),
        );
        c > v || (self.admit_ties && c == v)
    }

    /// Takes the window's admission candidate: its oldest key, after keys hit in the window
    /// went round once more when second chances are on.
    fn window_candidate(&mut self) -> u32 {
        if self.second_chance {
            for _ in 0..self.window_len {
                let oldest = self.window[self.window_head];
                if self.meta[oldest as usize] & COUNTER == 0 {
                    break;
                }
                self.window_pop();
                self.window_push(oldest);
            }
        }
        self.window_pop()
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> &'static str {
        "wtinylfu"
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn get(&mut self, key: u64) -> Option<u32> {
        self.sketch.increment(key);
        let slot = self.index.get(key)?;
        let m = &mut self.meta[slot as usize];
        if *m & COUNTER < self.clock_max {
            *m += 1;
        }
        Some(slot)
    }

    fn contains(&self, key: u64) -> bool {
        self.index.get(key).is_some()
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        if self.capacity == 0 {
            return None;
        }
        let len = self.index.len();
        if self.window.is_empty() {
            // Too small for a window: TinyLFU admission straight into the CLOCK region.
            if len < self.capacity {
                let slot = len as u32;
                self.index.insert(key, slot);
                return Some(Admitted {
                    slot,
                    evicted: None,
                });
            }
            let victim = self.clock_victim();
            if !self.admits(key, self.index.key(victim)) {
                return None;
            }
            let evicted = self.index.replace(victim, key);
            self.meta[victim as usize] = 0;
            return Some(Admitted {
                slot: victim,
                evicted: Some(evicted),
            });
        }
        if len < self.capacity {
            // Filling up: the window's oldest key moves to the main region while it has room.
            if self.window_len == self.window.len() {
                self.window_pop();
            }
            let slot = len as u32;
            self.index.insert(key, slot);
            self.window_push(slot);
            return Some(Admitted {
                slot,
                evicted: None,
            });
        }
        let candidate = self.window_candidate();
        let window_hit = self.meta[candidate as usize] & COUNTER != 0;
        let victim = self.clock_victim();
        let loser = if (self.promote_hits && window_hit)
            || self.admits(self.index.key(candidate), self.index.key(victim))
        {
            victim
        } else {
            candidate
        };
        let evicted = self.index.replace(loser, key);
        self.window_push(loser);
        Some(Admitted {
            slot: loser,
            evicted: Some(evicted),
        })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.index.heap_bytes()
            + std::mem::size_of_val(&*self.meta)
            + std::mem::size_of_val(&*self.window)
            + self.sketch.heap_bytes()
    }

    fn frequency(&self, key: u64) -> u32 {
        self.sketch.estimate(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(p: &mut WTinyLfu, key: u64) -> bool {
        if p.get(key).is_some() {
            return true;
        }
        p.insert(key);
        false
    }

    #[test]
    fn one_off_keys_do_not_displace_frequent_ones() {
        let mut p = WTinyLfu::new(100);
        let mut one_off = 1000;
        for _ in 0..30 {
            for key in 0..90 {
                access(&mut p, key);
                if key % 3 == 0 {
                    access(&mut p, one_off);
                    one_off += 1;
                }
            }
        }
        let kept = (0..90).filter(|&k| p.contains(k)).count();
        assert!(kept >= 88, "kept {kept} of 90 frequent keys");
        assert!(p.frequency(5) > p.frequency(one_off - 1));
    }

    #[test]
    fn tiny_caches_work_without_a_window() {
        let mut p = WTinyLfu::new(1);
        assert!(!access(&mut p, 1));
        assert!(access(&mut p, 1));
        assert!(!access(&mut p, 2)); // colder than 1: declined
        assert!(p.contains(1) && !p.contains(2));
    }
}
