//! A count-min sketch of 4-bit counters with a doorkeeper and periodic aging: the approximate,
//! bounded-memory access frequency that TinyLFU-style admission and LFU eviction compare.
//!
//! - Counters saturate at 15 and are packed 16 to a `u64`. Each key picks `DEPTH` counters, all
//!   in one 64-byte block so that an update touches one cache line; the estimate is their minimum,
//!   and increments are conservative (only counters equal to the minimum grow), which keeps
//!   collisions from inflating the counts of rare keys.
//! - The doorkeeper is a small Bloom filter in front of the counters: a key's first access in a
//!   period only sets its doorkeeper bits, so the many keys seen once never reach the counters
//!   (most distinct n-grams occur once). Estimates add one for a key the doorkeeper holds.
//! - Every `period` recorded accesses all counters are halved and the doorkeeper is cleared, so
//!   frequencies describe the recent past (TinyLFU's reset).

use crate::key_hash::mix64;

/// Counters chosen per key.
const DEPTH: usize = 4;
/// `u64` words per block (one 64-byte cache line).
const BLOCK_WORDS: usize = 8;
/// Doorkeeper bits set per key.
const DOOR_HASHES: usize = 2;
/// Seed that keeps the sketch's hash independent of the slot index's.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// Sizing of a frequency sketch (4-bit count-min with a doorkeeper), per cached row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SketchConfig {
    /// 4-bit counters per cached row (rounded up to whole blocks of 128).
    pub counters_per_row: f64,
    /// Doorkeeper bits per cached row (rounded up to whole words); 0 disables the doorkeeper.
    pub doorkeeper_bits_per_row: f64,
    /// Recorded accesses between agings, per cached row.
    pub period_per_row: f64,
}

impl Default for SketchConfig {
    fn default() -> Self {
        Self {
            counters_per_row: 4.0,
            doorkeeper_bits_per_row: 4.0,
            period_per_row: 10.0,
        }
    }
}

/// Approximate access counts of `u64` keys (see the module doc).
#[derive(Debug)]
pub(crate) struct FrequencySketch {
    table: Box<[u64]>,
    door: Box<[u64]>,
    additions: u64,
    period: u64,
}

impl FrequencySketch {
    /// A sketch sized for a cache of `rows` rows.
    pub(crate) fn new(rows: usize, config: SketchConfig) -> Self {
        let rows = rows as f64;
        let counters = (rows * config.counters_per_row).ceil().max(1.0) as usize;
        let blocks = counters.div_ceil(16 * BLOCK_WORDS);
        let door_words = (rows * config.doorkeeper_bits_per_row / 64.0).ceil() as usize;
        let table = vec![0; blocks * BLOCK_WORDS].into_boxed_slice();
        crate::huge_pages::advise(&table);
        Self {
            table,
            door: vec![0; door_words].into_boxed_slice(),
            additions: 0,
            period: (rows * config.period_per_row).ceil().max(16.0) as u64,
        }
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.table) + std::mem::size_of_val(&*self.door)
    }

    /// Changes the number of recorded accesses between agings (at least 16); takes effect from
    /// the next access.
    pub(crate) fn set_period(&mut self, period: u64) {
        self.period = period.max(16);
    }

    /// Records one access to `key`.
    pub(crate) fn increment(&mut self, key: u64) {
        let hash = mix64(key ^ SEED);
        if !self.door.is_empty() && !self.door_test_and_set(hash) {
            self.tick();
            return;
        }
        let cells = self.cells(hash);
        let min = cells
            .iter()
            .map(|&(w, s)| self.counter(w, s))
            .min()
            .unwrap_or(0);
        if min < 15 {
            for (w, s) in cells {
                if self.counter(w, s) == min {
                    self.table[w] += 1 << s;
                }
            }
        }
        self.tick();
    }

    /// Hints the CPU to load the counters and doorkeeper bits of `key` (see [`crate::prefetch`]).
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        let hash = mix64(key ^ SEED);
        let block = self.block(hash);
        crate::prefetch::prefetch_range(
            self.table.as_ptr().wrapping_add(block).cast::<u8>(),
            BLOCK_WORDS * std::mem::size_of::<u64>(),
        );
        if !self.door.is_empty() {
            for bit in self.door_bits(hash) {
                crate::prefetch::prefetch_read(self.door.as_ptr().wrapping_add(bit / 64));
            }
        }
    }

    /// The estimated recent access count of `key` (0 to 16).
    pub(crate) fn estimate(&self, key: u64) -> u32 {
        let hash = mix64(key ^ SEED);
        let door = if self.door.is_empty() {
            0
        } else {
            u32::from(self.door_contains(hash))
        };
        let min = self
            .cells(hash)
            .iter()
            .map(|&(w, s)| self.counter(w, s))
            .min()
            .unwrap_or(0);
        u32::from(min) + door
    }

    fn tick(&mut self) {
        self.additions += 1;
        if self.additions >= self.period {
            self.age();
        }
    }

    /// Halves every counter and clears the doorkeeper.
    fn age(&mut self) {
        for word in self.table.iter_mut() {
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.door.fill(0);
        self.additions /= 2;
    }

    /// The (word, bit shift) of each of the key's counters, all within one block.
    #[inline]
    fn cells(&self, hash: u64) -> [(usize, u32); DEPTH] {
        let block = self.block(hash);
        // The low 32 bits of the hash pick a word (3 bits) and a nibble (4 bits) per counter.
        let mut bits = hash as u32;
        let mut cells = [(0, 0); DEPTH];
        for cell in &mut cells {
            let word = (bits & 7) as usize;
            let nibble = (bits >> 3) & 15;
            *cell = (block + word, nibble * 4);
            bits = bits.rotate_right(7);
        }
        cells
    }

    /// The first word of the block holding the key's counters.
    #[inline]
    fn block(&self, hash: u64) -> usize {
        let blocks = self.table.len() / BLOCK_WORDS;
        ((u128::from(hash) * blocks as u128) >> 64) as usize * BLOCK_WORDS
    }

    #[inline]
    fn counter(&self, word: usize, shift: u32) -> u8 {
        ((self.table[word] >> shift) & 15) as u8
    }

    /// Sets the key's doorkeeper bits; true if they were all set already.
    fn door_test_and_set(&mut self, hash: u64) -> bool {
        let mut present = true;
        for bit in self.door_bits(hash) {
            let (word, mask) = (bit / 64, 1u64 << (bit % 64));
            present &= self.door[word] & mask != 0;
            self.door[word] |= mask;
        }
        present
    }

    fn door_contains(&self, hash: u64) -> bool {
        self.door_bits(hash)
            .into_iter()
            .all(|bit| self.door[bit / 64] & (1u64 << (bit % 64)) != 0)
    }

    #[inline]
    fn door_bits(&self, hash: u64) -> [usize; DOOR_HASHES] {
        let bits = self.door.len() as u128 * 64;
        let second = mix64(hash);
        [
            ((u128::from(hash.rotate_left(32)) * bits) >> 64) as usize,
            ((u128::from(second) * bits) >> 64) as usize,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_frequent_keys_higher_than_rare_ones() {
        let mut sketch = FrequencySketch::new(1000, SketchConfig::default());
        for round in 0..10u64 {
            for _ in 0..5 {
                sketch.increment(1);
            }
            sketch.increment(1000 + round);
        }
        assert!(sketch.estimate(1) >= 10, "{}", sketch.estimate(1));
        assert!(sketch.estimate(1005) <= 2, "{}", sketch.estimate(1005));
        assert_eq!(sketch.estimate(424_242), 0);
    }

    #[test]
    fn saturates_and_ages() {
        let config = SketchConfig {
            period_per_row: 1.0,
            ..SketchConfig::default()
        };
        let mut sketch = FrequencySketch::new(64, config);
        for _ in 0..63 {
            sketch.increment(7);
        }
        assert_eq!(
            sketch.estimate(7),
            16,
            "15 in the counters plus the doorkeeper"
        );
        sketch.increment(7); // the 64th access ages: counters halve, doorkeeper clears
        assert_eq!(sketch.estimate(7), 7);
    }

    #[test]
    fn a_shorter_period_ages_sooner() {
        let mut sketch = FrequencySketch::new(64, SketchConfig::default());
        sketch.set_period(20);
        for _ in 0..19 {
            sketch.increment(7);
        }
        assert_eq!(sketch.estimate(7), 16);
        sketch.increment(7); // the 20th access ages
        assert_eq!(sketch.estimate(7), 7);
    }

    #[test]
    fn works_without_a_doorkeeper() {
        let config = SketchConfig {
            doorkeeper_bits_per_row: 0.0,
            ..SketchConfig::default()
        };
        let mut sketch = FrequencySketch::new(10, config);
        sketch.increment(3);
        sketch.increment(3);
        assert_eq!(sketch.estimate(3), 2);
        assert_eq!(sketch.heap_bytes(), 64);
    }
}
