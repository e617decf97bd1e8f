//! A hill climber that tunes a window size by the hit rate it observes (after Caffeine's
//! adaptive W-TinyLFU): every sample period it compares the hit rate with the previous period's,
//! keeps moving the window the same way if it improved and turns round if it did not (or if it
//! reached a bound), with steps that shrink over time and grow back when the hit rate jumps (the
//! workload changed).

/// Tuning of the window hill climber, as fractions of the cache's slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClimberConfig {
    /// Window size to start from. Default 0.4: large caches see few samples in a trace, so they
    /// start where they do best, and small caches, with many samples, climb down.
    pub initial: f64,
    /// Smallest window. Default 0.02.
    pub min: f64,
    /// Largest window (the window's ring is allocated this large). Default 0.4.
    pub max: f64,
    /// First step. Default 0.03.
    pub step: f64,
    /// Accesses per sample, per slot (at least 16,384). Default 1.
    pub period_per_slot: f64,
}

impl Default for ClimberConfig {
    fn default() -> Self {
        Self {
            initial: 0.4,
            min: 0.02,
            max: 0.4,
            step: 0.03,
            period_per_slot: 1.0,
        }
    }
}

/// Each sample's step is this fraction of the previous one.
const DECAY: f64 = 0.98;
/// A hit-rate change this large restarts the steps at their first size.
const RESTART: f64 = 0.05;

/// A window size to aim for between a smallest and a largest, in slots: what the climber and
/// the ghost-driven control (`ghost.rs`) move.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    target: f64,
    min: f64,
    max: f64,
}

impl Span {
    /// `initial` clamped to `min..=max`.
    pub(crate) fn new(min: f64, initial: f64, max: f64) -> Self {
        Self {
            target: initial.clamp(min, max),
            min,
            max,
        }
    }

    /// The smallest, the current and the largest window, in slots.
    pub(crate) fn range(&self) -> (f64, f64, f64) {
        (self.min, self.target, self.max)
    }

    /// The window size to aim for, in slots.
    pub(crate) fn target(&self) -> usize {
        self.target.round() as usize
    }

    /// Where the target lies between the smallest and the largest window: 0 at the smallest, 1
    /// at the largest (1 when they are the same).
    pub(crate) fn position(&self) -> f64 {
        if self.max > self.min {
            (self.target - self.min) / (self.max - self.min)
        } else {
            1.0
        }
    }

    /// Moves the target by `step` slots, clamped to the bounds; true if it was not clamped.
    pub(crate) fn move_by(&mut self, step: f64) -> bool {
        let next = self.target + step;
        self.target = next.clamp(self.min, self.max);
        self.target == next
    }
}

/// The climber's state; [`Climber::record`] returns a new window size when it moves.
#[derive(Debug)]
pub(crate) struct Climber {
    span: Span,
    first_step: f64,
    step: f64,
    period: u32,
    accesses: u32,
    hits: u32,
    previous: Option<f64>,
}

impl Climber {
    /// A climber for a cache of `capacity` slots whose window holds at most `max_window` slots.
    pub(crate) fn new(capacity: usize, max_window: usize, config: ClimberConfig) -> Self {
        let slots = capacity as f64;
        let max = (max_window as f64).min(slots * config.max);
        let min = (slots * config.min).min(max);
        let span = Span::new(min, slots * config.initial, max);
        // Starting at the top, the first move is down.
        let step = if span.target >= max {
            -slots * config.step
        } else {
            slots * config.step
        };
        Self {
            span,
            first_step: step,
            step,
            period: (slots * config.period_per_slot).clamp(16_384.0, f64::from(u32::MAX)) as u32,
            accesses: 0,
            hits: 0,
            previous: None,
        }
    }

    /// The window size it aims for.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Counts one access; true when this access ended a sample and the target moved.
    #[inline]
    pub(crate) fn record(&mut self, hit: bool) -> bool {
        self.accesses += 1;
        self.hits += u32::from(hit);
        if self.accesses == self.period {
            self.climb();
            return true;
        }
        false
    }

    fn climb(&mut self) {
        let rate = f64::from(self.hits) / f64::from(self.accesses);
        (self.accesses, self.hits) = (0, 0);
        if let Some(previous) = self.previous {
            let delta = rate - previous;
            if delta < 0.0 {
                self.first_step = -self.first_step;
                self.step = -self.step;
            }
            self.step = if delta.abs() >= RESTART {
                self.first_step
            } else {
                self.step * DECAY
            };
        }
        self.previous = Some(rate);
        if !self.span.move_by(self.step) {
            // At a bound: the next move goes back inwards.
            self.first_step = -self.first_step;
            self.step = -self.step;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn climbs_towards_the_better_window() {
        // A workload whose hit rate rises with the window: the climber should grow it.
        let config = ClimberConfig {
            initial: 0.1,
            ..ClimberConfig::default()
        };
        let capacity = 100_000;
        let mut c = Climber::new(capacity, 40_000, config);
        let start = c.span().target();
        for _ in 0..40 {
            let rate = 0.3 + c.span().target() as f64 / capacity as f64 / 2.0;
            for i in 0..c.period {
                c.record(f64::from(i) < rate * f64::from(c.period));
            }
        }
        assert!(
            c.span().target() > start,
            "{} -> {}",
            start,
            c.span().target()
        );
        assert!(c.span().target() <= 40_000);
    }

    #[test]
    fn climbs_down_when_smaller_windows_do_better() {
        let capacity = 100_000;
        let mut c = Climber::new(capacity, 40_000, ClimberConfig::default());
        for _ in 0..200 {
            let rate = 0.6 - c.span().target() as f64 / capacity as f64 / 2.0;
            for i in 0..c.period {
                c.record(f64::from(i) < rate * f64::from(c.period));
            }
        }
        assert!(c.span().target() < 10_000, "{}", c.span().target());
        assert!(c.span().target() >= 2_000);
        assert!(c.span().position() < 0.25, "{}", c.span().position());
    }

    #[test]
    fn position_runs_from_the_smallest_to_the_largest_window() {
        let c = Climber::new(100_000, 40_000, ClimberConfig::default());
        assert_eq!(c.span().position(), 1.0, "starts at the largest window");
        let fixed = ClimberConfig {
            min: 0.1,
            max: 0.1,
            ..ClimberConfig::default()
        };
        assert_eq!(Climber::new(100_000, 40_000, fixed).span().position(), 1.0);
    }
}
