//! S3Sketch, the RAM tier's default policy: S3-FIFO's shape with a TinyLFU sketch in place of its
//! ghost queue, CLOCK for its main queue, and an adaptive window, in under 16 bytes per row.
//!
//! - A missed key that the frequency sketch (see [`SketchConfig`]) has seen before in its current
//!   period (its estimate, this access included, is at least 2) goes straight to the main
//!   region: it has shown reuse. Other keys enter the window, a FIFO.
//! - A key leaving the window moves to the main region if it was hit while there; otherwise it
//!   is evicted (S3-FIFO's quick demotion: most distinct n-grams are read once, and they leave
//!   after a short stay instead of taking a full turn of the cache).
//! - The main region is CLOCK with a 2-bit hit counter.
//! - The window's size is tuned by a hill climber on the observed hit rate, between 2% and 40%
//!   of the slots, starting at 40%: a small window suits small caches and frequency-skewed
//!   traffic, a large one suits large caches where recency wins (measured on the Engram traces;
//!   see `benches/results/policy.md`).
//! - The same climber sets how far back "seen before" reaches: the sketch's aging period (which
//!   also clears its doorkeeper) runs from 3 accesses per row at the smallest window to 10 at the
//!   largest. A short period keeps the doorkeeper sparse, so few keys seen once pass for reused
//!   ones (what small caches need); a long one lets most keys straight into the main region,
//!   which turns the policy into CLOCK (what large caches on the Chinese trace need).
//!
//! Memory per slot: the slot index (4 bytes of key while keys fit `u32`, 5 of buckets), 1 byte
//! of region and counter, 1.6 bytes of window ring (40% of 4 bytes), and the sketch's 2.5 bytes
//! of counters and 1.5 of doorkeeper: 15.6 bytes, 19.6 once a key needs 64 bits.

use super::climber::{Climber, ClimberConfig};
use super::regions::Regions;
use super::sketch::{FrequencySketch, SketchConfig};
use super::{Admitted, Policy};

/// Tuning of [`S3Sketch`]; the defaults are the ones measured on the Engram traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct S3SketchConfig {
    /// Window sizes and how they adapt. Default: [`ClimberConfig`]'s, with samples of 2 accesses
    /// per slot (the hit rate of shorter ones varies too much from document to document).
    pub window: ClimberConfig,
    /// Frequency sketch sizing. Default: 5 counters and 12 doorkeeper bits per row, aged every
    /// 10 accesses per row.
    pub sketch: SketchConfig,
    /// A missed key whose estimate reaches this goes straight to the main region. Default 2.
    pub direct_threshold: u32,
    /// The sketch's aging period, in accesses per row, when the window is at its smallest; it
    /// grows linearly with the window to `sketch.period_per_row` at the largest. Default 3.
    pub min_period_per_row: f64,
}

impl Default for S3SketchConfig {
    fn default() -> Self {
        Self {
            window: ClimberConfig {
                period_per_slot: 2.0,
                ..ClimberConfig::default()
            },
            sketch: SketchConfig {
                counters_per_row: 5.0,
                doorkeeper_bits_per_row: 12.0,
                period_per_row: 10.0,
            },
            direct_threshold: 2,
            min_period_per_row: 3.0,
        }
    }
}

/// The default policy (see the module doc).
#[derive(Debug)]
pub struct S3Sketch {
    regions: Regions,
    sketch: FrequencySketch,
    climber: Climber,
    direct_threshold: u32,
    /// Sketch aging periods at the smallest and at the largest window, in accesses.
    periods: (f64, f64),
}

impl S3Sketch {
    /// A policy of `capacity` slots with the default tuning.
    pub fn new(capacity: usize) -> Self {
        Self::with_config(capacity, S3SketchConfig::default())
    }

    /// A policy of `capacity` slots tuned by `config`.
    pub fn with_config(capacity: usize, config: S3SketchConfig) -> Self {
        let max_window = (capacity as f64 * config.window.max).round() as usize;
        let regions = Regions::new(capacity, max_window, 3);
        let climber = Climber::new(capacity, regions.max_window(), config.window);
        let rows = capacity as f64;
        let periods = (
            rows * config.min_period_per_row,
            rows * config.sketch.period_per_row,
        );
        let mut sketch = FrequencySketch::new(capacity, config.sketch);
        sketch.set_period(lerp(periods, climber.position()) as u64);
        Self {
            regions,
            sketch,
            climber,
            direct_threshold: config.direct_threshold,
            periods,
        }
    }

    /// Frees a slot for a key entering the window (the cache is full) and returns it.
    fn free_for_window(&mut self) -> u32 {
        let target = self.climber.target();
        loop {
            if self.regions.window_len() == 0 || self.regions.window_len() < target {
                // The window is below its size: the main region gives up a slot.
                return self.regions.clock_victim();
            }
            let candidate = self.regions.window_pop();
            if !self.regions.was_hit(candidate) {
                return candidate;
            }
            self.regions.clear_counter(candidate);
            if self.regions.window_len() < target {
                return self.regions.clock_victim();
            }
            // The window is shrinking: keep draining it.
        }
    }
}

impl Policy for S3Sketch {
    fn name(&self) -> &'static str {
        "s3sketch"
    }

    fn capacity(&self) -> usize {
        self.regions.capacity()
    }

    fn len(&self) -> usize {
        self.regions.len()
    }

    fn get(&mut self, key: u64) -> Option<u32> {
        self.sketch.increment(key);
        let slot = self.regions.slot(key);
        if self.climber.record(slot.is_some()) {
            // The window moved: the sketch's memory follows it.
            let period = lerp(self.periods, self.climber.position());
            self.sketch.set_period(period as u64);
        }
        let slot = slot?;
        self.regions.touch(slot);
        Some(slot)
    }

    fn contains(&self, key: u64) -> bool {
        self.regions.slot(key).is_some()
    }

    fn prefetch(&self, key: u64) {
        self.sketch.prefetch(key);
        self.regions.prefetch(key);
    }

    fn prefetch_follow(&self, key: u64) {
        self.regions.prefetch_follow(key);
    }

    fn insert(&mut self, key: u64) -> Option<Admitted> {
        let capacity = self.regions.capacity();
        if capacity == 0 {
            return None;
        }
        let has_window = self.regions.max_window() > 0;
        if self.regions.len() < capacity {
            let slot = self.regions.fill(key);
            if has_window {
                if self.regions.window_len() >= self.climber.target().max(1) {
                    self.regions.window_pop();
                }
                self.regions.window_push(slot);
            }
            return Some(Admitted {
                slot,
                evicted: None,
            });
        }
        let seen = self.sketch.estimate(key) >= self.direct_threshold;
        let (slot, to_window) = if seen || !has_window {
            (self.regions.clock_victim(), false)
        } else {
            (self.free_for_window(), true)
        };
        let evicted = self.regions.replace(slot, key);
        if to_window {
            self.regions.window_push(slot);
        }
        Some(Admitted {
            slot,
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

/// The point `t` (0 to 1) of the way from `range.0` to `range.1`.
fn lerp(range: (f64, f64), t: f64) -> f64 {
    range.0 + (range.1 - range.0) * t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SimPolicy;

    fn access(p: &mut S3Sketch, key: u64) -> bool {
        p.access(key)
    }

    #[test]
    fn one_off_keys_leave_and_reused_keys_stay() {
        let mut p = S3Sketch::new(1000);
        let mut one_off = 1_000_000;
        for _ in 0..30 {
            for key in 0..500 {
                access(&mut p, key);
                access(&mut p, one_off);
                one_off += 1;
            }
        }
        let kept = (0..500).filter(|&k| p.contains(k)).count();
        assert!(kept >= 490, "kept {kept} of 500 reused keys");
        assert!(p.frequency(5) > p.frequency(one_off - 1));
    }

    #[test]
    fn stays_within_sixteen_bytes_per_row() {
        for capacity in [10_000usize, 1 << 20] {
            let p = S3Sketch::new(capacity);
            let per_row = p.metadata_bytes() as f64 / capacity as f64;
            assert!(per_row <= 16.0, "{capacity}: {per_row}");
        }
    }

    #[test]
    fn tiny_caches_fall_back_to_clock() {
        let mut p = S3Sketch::new(1);
        assert!(!access(&mut p, 1));
        assert!(access(&mut p, 1));
        assert!(!access(&mut p, 2));
        assert!(p.contains(2));
    }
}
