//! Ghost-driven sizing of a window (ARC's and CAR's adaptation), over a spatial sample of keys.
//!
//! A windowed policy evicts a key either from its window (a newcomer that was not hit there) or
//! from its main region. When a key comes back soon after an eviction, the region that evicted
//! it was too small for it: a key back from the window says the window should grow, one back
//! from the main region says the main region should. ARC remembers recently evicted keys in two
//! ghost lists and moves its split one slot per ghost hit; [`GhostWindow`] does the same with a
//! *sampled* ghost (SHARDS' spatial sampling): only keys whose hash falls in a fixed 1 in 2^k of
//! the key space are remembered, each sampled ghost hit moving the target by 2^k slots (times a
//! gain), so the memory is a fraction of a byte per slot while the signal keeps its mean.
//!
//! The ghost is a direct-mapped table of 16-bit entries, one half per region: a 15-bit fingerprint
//! and one bit for the region that evicted the key. A new entry overwrites whatever its bucket held (random
//! replacement: an entry lives for about as many sampled evictions as the table has buckets), and
//! a hit clears the entry. A sampled key's fingerprint matches a stranger's with probability
//! 2^-15, so false ghost hits are negligible.

use super::climber::Span;
use crate::key_hash::mix64;

/// Seed that keeps the ghost's hash independent of the index's and the sketch's.
const SEED: u64 = 0x2545_f491_4f6c_dd1d;
/// Fewest buckets of a ghost table.
const MIN_BUCKETS: usize = 64;

/// Tuning of the ghost-driven window of `s3arc` (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GhostConfig {
    /// One key in 2^`sample_shift` is remembered. Default 3 (1 in 8).
    pub sample_shift: u32,
    /// Ghost entries per slot before sampling: how far back, in evictions per slot, a returning
    /// key counts as a ghost hit. Default 1 (ARC's ghosts hold as many keys as the cache).
    pub entries_per_slot: f64,
    /// Slots the target moves per (unsampled) ghost hit. Default 1 (ARC's step).
    pub gain: f64,
}

impl Default for GhostConfig {
    fn default() -> Self {
        Self {
            sample_shift: 3,
            entries_per_slot: 1.0,
            gain: 1.0,
        }
    }
}

/// Where an evicted key was evicted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Evicted {
    /// From the window, never hit there.
    Window,
    /// From the main region.
    Main,
}

/// A window target moved by sampled ghost hits (see the module doc).
#[derive(Debug)]
pub(crate) struct GhostWindow {
    table: Box<[u16]>,
    shift: u32,
    step: f64,
    span: Span,
}

impl GhostWindow {
    /// A controller for a cache of `capacity` slots whose window target runs from `min` to `max`
    /// slots, starting at `initial`.
    pub(crate) fn new(
        capacity: usize,
        (min, initial, max): (f64, f64, f64),
        config: GhostConfig,
    ) -> Self {
        let shift = config.sample_shift.min(16);
        let half =
            (capacity as f64 * config.entries_per_slot / f64::from(1u32 << shift)).ceil() as usize;
        Self {
            table: vec![0; 2 * half.max(MIN_BUCKETS / 2)].into_boxed_slice(),
            shift,
            step: config.gain * f64::from(1u32 << shift),
            span: Span::new(min, initial, max),
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table)
    }

    /// The window size it aims for.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// The sampled hash of `key`, or `None` for a key outside the sample.
    #[inline]
    fn sampled(&self, key: u64) -> Option<u64> {
        let hash = mix64(key ^ SEED);
        (hash >> (64 - self.shift) == 0 || self.shift == 0).then_some(hash)
    }

    /// The bucket and the entry (fingerprint and region bit) of a sampled hash evicted `from`
    /// a region: each region has its half of the table, so that each half remembers as many of
    /// its own region's evictions, however unequal their rates (their hits then compare the
    /// worth of one more slot to either region, as ARC's ghosts do).
    #[inline]
    fn slot(&self, hash: u64, from: Evicted) -> (usize, u16) {
        let half = self.table.len() / 2;
        let bucket = (((hash & 0xffff_ffff) * half as u64) >> 32) as usize;
        let fingerprint = ((hash >> 32) & 0x7fff).max(1) as u16;
        let main = from == Evicted::Main;
        (
            bucket + if main { half } else { 0 },
            fingerprint << 1 | u16::from(main),
        )
    }

    /// Remembers `key`, just evicted `from` a region, if it is in the sample.
    #[inline]
    pub(crate) fn evicted(&mut self, key: u64, from: Evicted) {
        if let Some(hash) = self.sampled(key) {
            let (bucket, entry) = self.slot(hash, from);
            self.table[bucket] = entry;
        }
    }

    /// Notes a miss of `key`: a ghost hit moves the target. True when it moved.
    #[inline]
    pub(crate) fn missed(&mut self, key: u64) -> bool {
        let Some(hash) = self.sampled(key) else {
            return false;
        };
        let mut step = 0.0;
        for (from, sign) in [(Evicted::Window, 1.0), (Evicted::Main, -1.0)] {
            let (bucket, entry) = self.slot(hash, from);
            if self.table[bucket] == entry {
                self.table[bucket] = 0;
                step += sign * self.step;
            }
        }
        if step == 0.0 {
            return false;
        }
        let (_, before, _) = self.span.range();
        self.span.move_by(step);
        self.span.range().1 != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampled_keys(g: &GhostWindow, n: usize) -> Vec<u64> {
        (0..).filter(|&k| g.sampled(k).is_some()).take(n).collect()
    }

    #[test]
    fn window_ghost_hits_grow_the_window_and_main_ghost_hits_shrink_it() {
        let mut g = GhostWindow::new(10_000, (100.0, 1000.0, 4000.0), GhostConfig::default());
        let keys = sampled_keys(&g, 10);
        let start = g.span().target();
        for &k in &keys {
            g.evicted(k, Evicted::Window);
        }
        for &k in &keys {
            assert!(g.missed(k));
        }
        assert_eq!(g.span().target(), start + 80, "10 hits of 8 slots each");
        assert!(!g.missed(keys[0]), "a ghost hit clears the entry");
        for &k in &keys {
            g.evicted(k, Evicted::Main);
            g.missed(k);
        }
        assert_eq!(g.span().target(), start);
    }

    #[test]
    fn unsampled_keys_and_strangers_do_nothing_and_the_target_stays_in_range() {
        let mut g = GhostWindow::new(1_000, (10.0, 400.0, 400.0), GhostConfig::default());
        let unsampled = (0..).find(|&k| g.sampled(k).is_none()).unwrap_or(0);
        g.evicted(unsampled, Evicted::Window);
        assert!(!g.missed(unsampled));
        let keys = sampled_keys(&g, 3);
        assert!(!g.missed(keys[0]), "never evicted");
        g.evicted(keys[0], Evicted::Window);
        assert!(!g.missed(keys[0]), "already at the largest window");
        assert_eq!(g.span().position(), 1.0);
        assert_eq!(g.heap_bytes(), 500, "125 buckets of 2 bytes per region");
    }
}
