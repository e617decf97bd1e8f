//! S3Sketch: S3-FIFO's shape with a TinyLFU sketch in place of its ghost queue, CLOCK for its
//! main queue, and an adaptive window, in under 16 bytes per row. Three policies of the zoo are
//! this cache with a different control of its window and aging period:
//! - `s3mini`, the RAM tier's default ([`S3SketchConfig::mini`]): the leader of miniature
//!   simulations of fixed candidates on a sample of the keys (see `mini.rs` and [`MiniConfig`]);
//! - `s3sketch`, the previous default: a hill climber on the hit rate (below);
//! - `s3arc`, an experiment ([`S3SketchConfig::arc`]): sampled ghost hits (see `ghost.rs`).
//!
//! - A missed key that the frequency sketch (see [`SketchConfig`]) has seen before in its current
//!   period (its estimate, this access included, is at least 2) goes straight to the main
//!   region: it has shown reuse. Other keys enter the window, a FIFO.
//! - A key leaving the window moves to the main region if it was hit while there; otherwise it
//!   is evicted (S3-FIFO's quick demotion: most distinct n-grams are read once, and they leave
//!   after a short stay instead of taking a full turn of the cache).
//! - The main region is CLOCK with a 2-bit hit counter.
//! - In `s3sketch` the window's size is tuned by a hill climber on the observed hit rate, between 2% and 40%
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
//! of counters and 1.5 of doorkeeper: 15.6 bytes, 19.6 once a key needs 64 bits. `s3mini` adds
//! its three mini-caches at 1 in 128 of the slots: 0.36 bytes, 15.96 in all.

use super::climber::{Climber, ClimberConfig};
use super::ghost::{Evicted, GhostConfig, GhostWindow};
use super::mini::MiniSims;
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
    /// `Some`: the window is sized by sampled ghost hits ([`GhostConfig`], ARC's adaptation)
    /// between `window.min` and `window.max` from `window.initial`, and the climber is off (the
    /// policy is then called `s3arc`). Default `None` (the hill climber).
    pub ghost: Option<GhostConfig>,
    /// `Some`: the window and the aging period are those of whichever candidate does best in
    /// miniature simulations on a sample of the keys ([`MiniConfig`]); the climber is off (the
    /// policy is then called `s3mini`). Default `None`.
    pub mini: Option<MiniConfig>,
}

/// One fixed configuration of [`S3Sketch`] that [`MiniConfig`] can choose.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Window size, as a fraction of the slots.
    pub window: f64,
    /// The sketch's aging period, in accesses per row.
    pub period_per_row: f64,
}

/// Candidates of a [`MiniConfig`].
pub const MINI_CANDIDATES: usize = 3;

/// Miniature simulations choosing the configuration of an [`S3Sketch`] (see `mini.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiniConfig {
    /// One key in 2^`sample_shift` is simulated, by mini-caches of as many times fewer slots.
    /// Default 7 (1 in 128: 0.36 bytes per slot for three candidates).
    pub sample_shift: u32,
    /// Fewest slots of a mini-cache; a cache too small for that runs the first candidate, fixed.
    /// Default 256.
    pub min_rows: usize,
    /// The candidate that runs until the simulations show another doing better. Default 1.
    pub first: usize,
    /// A challenger leads when its decayed hit count passes the leader's by this share of the
    /// decayed accesses. Default 0.01.
    pub margin: f64,
    /// Sampled accesses per epoch, per mini-cache slot (at least 256). Default 0.5.
    pub epoch_per_row: f64,
    /// The candidates. Default: a 20% window aged every 5 accesses per row (S3-FIFO-like, best
    /// at most sizes, and what caches too small to simulate run), a 40% window aged every 10
    /// (nearly every key seen twice goes to the main region: CLOCK-like, best for large caches
    /// on some traces), and a 10% window aged every 4 (closest to S3-FIFO's 10% small queue,
    /// best for large caches on others).
    pub candidates: [Candidate; MINI_CANDIDATES],
}

impl Default for MiniConfig {
    fn default() -> Self {
        Self {
            sample_shift: 7,
            min_rows: 256,
            first: 1,
            margin: 0.01,
            epoch_per_row: 0.5,
            candidates: [
                Candidate {
                    window: 0.2,
                    period_per_row: 5.0,
                },
                Candidate {
                    window: 0.4,
                    period_per_row: 10.0,
                },
                Candidate {
                    window: 0.1,
                    period_per_row: 4.0,
                },
            ],
        }
    }
}

impl S3SketchConfig {
    /// The tuning of `s3mini`: the default's sketch, with its window and aging period chosen by
    /// miniature simulations.
    pub fn mini() -> Self {
        Self {
            mini: Some(MiniConfig::default()),
            ..Self::default()
        }
    }

    /// A fixed configuration: `candidate`'s window and aging period, no adaptation.
    pub fn fixed(candidate: Candidate) -> Self {
        let base = Self::default();
        Self {
            window: ClimberConfig {
                initial: candidate.window,
                min: candidate.window,
                max: candidate.window,
                ..base.window
            },
            sketch: SketchConfig {
                period_per_row: candidate.period_per_row,
                ..base.sketch
            },
            min_period_per_row: candidate.period_per_row,
            ..base
        }
    }

    /// The tuning of `s3arc`: the default's, with its window sized by sampled ghost hits.
    pub fn arc() -> Self {
        Self {
            ghost: Some(GhostConfig::default()),
            ..Self::default()
        }
    }
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
            ghost: None,
            mini: None,
        }
    }
}

/// The default policy (see the module doc).
#[derive(Debug)]
pub struct S3Sketch {
    name: &'static str,
    regions: Regions,
    sketch: FrequencySketch,
    control: Control,
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
        let rows = capacity as f64;
        let max_fraction = match &config.mini {
            Some(m) => m.candidates.iter().map(|c| c.window).fold(0.0, f64::max),
            None => config.window.max,
        };
        let regions = Regions::new(capacity, (rows * max_fraction).round() as usize, 3);
        let climber = Climber::new(capacity, regions.max_window(), config.window);
        let (name, control) = match (config.mini, config.ghost) {
            (Some(mini), _) => (
                "s3mini",
                Control::mini(capacity, regions.max_window(), mini),
            ),
            (None, Some(ghost)) => (
                "s3arc",
                Control::Ghost(GhostWindow::new(capacity, climber.span().range(), ghost)),
            ),
            (None, None) if config.window.min >= config.window.max => {
                let (min, _, max) = climber.span().range();
                debug_assert!(min >= max);
                let target = max.round() as usize;
                let period = rows * config.sketch.period_per_row;
                ("s3sketch", Control::Fixed { target, period })
            }
            (None, None) => ("s3sketch", Control::Climb(climber)),
        };
        let periods = (
            rows * config.min_period_per_row,
            rows * config.sketch.period_per_row,
        );
        let mut sketch = FrequencySketch::new(capacity, config.sketch);
        sketch.set_period(control.period(periods) as u64);
        Self {
            name,
            regions,
            sketch,
            control,
            direct_threshold: config.direct_threshold,
            periods,
        }
    }

    /// Frees a slot for a key entering the window (the cache is full) and returns it.
    fn free_for_window(&mut self) -> (u32, Evicted) {
        let target = self.control.target();
        loop {
            if self.regions.window_len() == 0 || self.regions.window_len() < target {
                // The window is below its size: the main region gives up a slot.
                return (self.regions.clock_victim(), Evicted::Main);
            }
            let candidate = self.regions.window_pop();
            if !self.regions.was_hit(candidate) {
                return (candidate, Evicted::Window);
            }
            self.regions.clear_counter(candidate);
            if self.regions.window_len() < target {
                return (self.regions.clock_victim(), Evicted::Main);
            }
            // The window is shrinking: keep draining it.
        }
    }

    /// The window moved: the sketch's memory follows it.
    fn follow_window(&mut self) {
        let period = self.control.period(self.periods);
        self.sketch.set_period(period as u64);
    }
}

impl Policy for S3Sketch {
    fn name(&self) -> &'static str {
        self.name
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
        let moved = match &mut self.control {
            Control::Climb(climber) => climber.record(slot.is_some()),
            Control::Mini { sims, .. } => sims.access(key),
            Control::Ghost(_) | Control::Fixed { .. } => false,
        };
        if moved {
            self.follow_window();
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
        if let Control::Ghost(ghost) = &mut self.control
            && ghost.missed(key)
        {
            self.follow_window();
        }
        let has_window = self.regions.max_window() > 0;
        if self.regions.len() < capacity {
            let slot = self.regions.fill(key);
            if has_window {
                if self.regions.window_len() >= self.control.target().max(1) {
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
        let ((slot, from), to_window) = if seen || !has_window {
            ((self.regions.clock_victim(), Evicted::Main), false)
        } else {
            (self.free_for_window(), true)
        };
        let evicted = self.regions.replace(slot, key);
        if let Control::Ghost(ghost) = &mut self.control {
            ghost.evicted(evicted, from);
        }
        if to_window {
            self.regions.window_push(slot);
        }
        Some(Admitted {
            slot,
            evicted: Some(evicted),
        })
    }

    fn metadata_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.regions.heap_bytes()
            + self.sketch.heap_bytes()
            + self.control.heap_bytes()
    }

    fn frequency(&self, key: u64) -> u32 {
        self.sketch.estimate(key)
    }
}

/// What sizes the window and sets the sketch's aging period.
#[derive(Debug)]
enum Control {
    /// The hill climber on the hit rate; the period follows the window.
    Climb(Climber),
    /// Sampled ghost hits; the period follows the window.
    Ghost(GhostWindow),
    /// Nothing: a fixed window and period (slots, accesses).
    Fixed { target: usize, period: f64 },
    /// The leader of miniature simulations of fixed candidates, whose windows and periods at
    /// this cache's size are `targets` and `periods`.
    Mini {
        sims: Box<MiniSims<S3Sketch>>,
        targets: [usize; MINI_CANDIDATES],
        periods: [f64; MINI_CANDIDATES],
    },
}

impl Control {
    /// Miniature simulations of `config`'s candidates for a cache of `capacity` slots, or the
    /// first candidate fixed where a mini-cache would be smaller than `config.min_rows`.
    fn mini(capacity: usize, max_window: usize, config: MiniConfig) -> Self {
        let rows = capacity as f64;
        let targets = config
            .candidates
            .map(|c| ((rows * c.window).round() as usize).min(max_window));
        let periods = config.candidates.map(|c| rows * c.period_per_row);
        let shift = config.sample_shift.clamp(1, 32);
        let mini_rows = capacity >> shift;
        if mini_rows < config.min_rows.max(1) {
            return Control::Fixed {
                target: targets[0],
                period: periods[0],
            };
        }
        let minis = config
            .candidates
            .iter()
            .map(|&c| S3Sketch::with_config(mini_rows, S3SketchConfig::fixed(c)))
            .collect();
        Control::Mini {
            sims: Box::new(MiniSims::new(
                minis,
                shift,
                config.epoch_per_row,
                config.first,
                config.margin,
            )),
            targets,
            periods,
        }
    }

    fn target(&self) -> usize {
        match self {
            Control::Climb(c) => c.span().target(),
            Control::Ghost(g) => g.span().target(),
            Control::Fixed { target, .. } => *target,
            Control::Mini { sims, targets, .. } => targets[sims.leader()],
        }
    }

    /// The sketch's aging period, in accesses; `periods` at the smallest and the largest
    /// window, for the controls whose period follows the window.
    fn period(&self, periods: (f64, f64)) -> f64 {
        match self {
            Control::Climb(c) => lerp(periods, c.span().position()),
            Control::Ghost(g) => lerp(periods, g.span().position()),
            Control::Fixed { period, .. } => *period,
            Control::Mini { sims, periods, .. } => periods[sims.leader()],
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Control::Climb(_) | Control::Fixed { .. } => 0,
            Control::Ghost(g) => g.heap_bytes(),
            Control::Mini { sims, .. } => {
                std::mem::size_of::<MiniSims<S3Sketch>>() + sims.heap_bytes()
            }
        }
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
            for config in [S3SketchConfig::default(), S3SketchConfig::mini()] {
                let p = S3Sketch::with_config(capacity, config);
                let per_row = p.metadata_bytes() as f64 / capacity as f64;
                assert!(per_row <= 16.0, "{} {capacity}: {per_row}", p.name());
            }
        }
    }

    #[test]
    fn mini_simulations_pick_the_candidate_that_hits_more() {
        // Keys 0..1500 in a loop through a 2048-slot cache, with a one-off key after each: a
        // loop key is seen again after 3000 others, so it stays only in a main region that holds
        // the whole loop (80% of the slots with a 20% window, not 60% with a 40% one), while the
        // one-off keys pass through the window. A small-window candidate (20% or 10%) should
        // take the lead from the 40% one.
        let mut config = S3SketchConfig::mini();
        let mini = config.mini.get_or_insert_with(MiniConfig::default);
        mini.sample_shift = 2;
        mini.min_rows = 64;
        let mut p = S3Sketch::with_config(2048, config);
        assert_eq!(p.name(), "s3mini");
        assert_eq!(p.control.target(), 819, "starts with the second candidate");
        let mut one_off = 1_000_000;
        let mut hits = 0;
        for round in 0..100 {
            for key in 0..1500 {
                hits += u32::from(access(&mut p, key) && round == 99);
                access(&mut p, one_off);
                one_off += 1;
            }
        }
        let target = p.control.target();
        assert!(
            target == 410 || target == 205,
            "follows a small-window candidate: {target}"
        );
        assert!(hits > 500, "{hits} of the last round's 1500 loop keys hit");
    }

    #[test]
    fn small_caches_run_the_first_candidate_fixed() {
        let p = S3Sketch::with_config(10_000, S3SketchConfig::mini());
        assert!(matches!(p.control, Control::Fixed { target: 2000, .. }));
        assert_eq!(p.name(), "s3mini");
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
