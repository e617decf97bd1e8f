//! W-TinyLFU over CLOCK (after Einziger, Friedman and Manes, "TinyLFU", 2017, and Caffeine), in
//! a few bytes per row: the compact counterpart of the moka baseline.
//!
//! - Every missed key is admitted to a small *window* (1% of the slots, a FIFO), which catches
//!   bursts of recency.
//! - A key leaving the window competes with the *main* region's CLOCK victim: it stays (moving
//!   to the main region in place) only if its estimated frequency is higher; otherwise it is
//!   evicted. So one-off keys never displace popular ones.
//! - The main region is CLOCK with a 2-bit counter per slot instead of Caffeine's segmented LRU,
//!   which would cost two links per slot.
//! - Frequencies come from a 4-bit count-min sketch with a doorkeeper (see [`SketchConfig`]),
//!   fed by every `get`.
//!
//! On the Engram traces the fixed small window loses to recency-leaning policies; the default,
//! [`super::S3Sketch`], keeps the sketch but changes the admission rule and adapts the window.

use super::regions::Regions;
use super::sketch::{FrequencySketch, SketchConfig};
use super::{Admitted, Policy};

/// Tuning of [`WTinyLfu`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WTinyLfuConfig {
    /// Fraction of the slots in the window (rounded; at most all but one slot). Default 0.01.
    pub window_fraction: f64,
    /// Frequency sketch sizing. Default [`SketchConfig::default`].
    pub sketch: SketchConfig,
}

impl Default for WTinyLfuConfig {
    fn default() -> Self {
        Self {
            window_fraction: 0.01,
            sketch: SketchConfig::default(),
        }
    }
}

/// W-TinyLFU with a CLOCK main region over a fixed number of slots (see the module doc).
#[derive(Debug)]
pub struct WTinyLfu {
    regions: Regions,
    sketch: FrequencySketch,
}

impl WTinyLfu {
    /// A policy of `capacity` slots with the default tuning.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(capacity, WTinyLfuConfig::default())
    }

    /// A policy of `capacity` slots tuned by `config`.
    pub fn with_config(capacity: usize, config: WTinyLfuConfig) -> Self {
        let window = (capacity as f64 * config.window_fraction).round() as usize;
        Self {
            regions: Regions::new(capacity, window, 3),
            sketch: FrequencySketch::new(capacity, config.sketch),
        }
    }

    /// True if the key `candidate` should displace the key `victim`.
    fn admits(&self, candidate: u64, victim: u64) -> bool {
        self.sketch.estimate(candidate) > self.sketch.estimate(victim)
    }
}

impl Policy for WTinyLfu {
    fn name(&self) -> &'static str {
        "wtinylfu"
    }

    fn capacity(&self) -> usize {
        self.regions.capacity()
    }

    fn len(&self) -> usize {
        self.regions.len()
    }

    fn get(&mut self, key: u64) -> Option<u32> {
        self.sketch.increment(key);
        let slot = self.regions.slot(key)?;
        self.regions.touch(slot);
        Some(slot)
    }

    fn contains(&self, key: u64) -> bool {
        self.regions.slot(key).is_some()
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        let capacity = self.regions.capacity();
        if capacity == 0 {
            return None;
        }
        let window = self.regions.max_window();
        if self.regions.len() < capacity {
            // Filling up: the window's oldest key moves to the main region while it has room.
            let slot = self.regions.fill(key);
            if window > 0 {
                if self.regions.window_len() == window {
                    self.regions.window_pop();
                }
                self.regions.window_push(slot);
            }
            return Some(Admitted {
                slot,
                evicted: None,
            });
        }
        if window == 0 {
            // Too small for a window: TinyLFU admission straight into the CLOCK region.
            let victim = self.regions.clock_victim();
            if !self.admits(key, self.regions.key(victim)) {
                return None;
            }
            let evicted = self.regions.replace(victim, key);
            return Some(Admitted {
                slot: victim,
                evicted: Some(evicted),
            });
        }
        let candidate = self.regions.window_pop();
        let victim = self.regions.clock_victim();
        let loser = if self.admits(self.regions.key(candidate), self.regions.key(victim)) {
            victim
        } else {
            candidate
        };
        let evicted = self.regions.replace(loser, key);
        self.regions.window_push(loser);
        Some(Admitted {
            slot: loser,
            evicted: Some(evicted),
        })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.regions.heap_bytes() + self.sketch.heap_bytes()
    }

    fn frequency(&self, key: u64) -> u32 {
        self.sketch.estimate(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SimPolicy;

    fn access(p: &mut WTinyLfu, key: u64) -> bool {
        p.access(key)
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
