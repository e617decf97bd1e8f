//! numpy's `default_rng(seed).integers(0, high, size=n, dtype=np.int64)`, bit for bit.
//!
//! Engram layouts draw their hash multipliers from numpy's default generator, so building a layout
//! without Python means reproducing three pieces of numpy exactly:
//!
//! - `SeedSequence(seed)`: the seed's 32-bit words hashed into a pool of four words
//!   (`mix_entropy`), and the pool expanded into the generator's state (`generate_state`);
//! - `PCG64`: a 128-bit LCG (state and increment from four state words) with the XSL-RR output,
//!   stepped *before* each output, as numpy does;
//! - `Generator.integers`: Lemire's nearly-divisionless bounded integers, 64-bit when the range
//!   exceeds 32 bits and otherwise 32-bit draws that use both halves of each 64-bit output.
//!
//! Every constant below is numpy's (`numpy/random/bit_generator.pyx`, `pcg64.h`,
//! `distributions.c`); the tests compare against values numpy produced.

/// `SeedSequence` constants.
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
const POOL_SIZE: usize = 4;

/// PCG64's 128-bit LCG multiplier.
const PCG_MULTIPLIER: u128 = (2_549_297_995_355_413_924u128 << 64) + 4_865_540_595_714_422_341;

/// The pool of a `SeedSequence` built from one non-negative integer seed (no spawn key).
fn seed_pool(seed: u64) -> [u32; POOL_SIZE] {
    // The seed's little-endian 32-bit words, at least one.
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| {
        let mut value = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        value = value.wrapping_mul(hash_const);
        value ^ (value >> XSHIFT)
    };
    let mix = |x: u32, y: u32| {
        let result = MIX_MULT_L
            .wrapping_mul(x)
            .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        result ^ (result >> XSHIFT)
    };
    let mut pool = [0u32; POOL_SIZE];
    for (i, word) in pool.iter_mut().enumerate() {
        *word = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for src in 0..POOL_SIZE {
        for dst in 0..POOL_SIZE {
            if src != dst {
                let hashed = hashmix(pool[src]);
                pool[dst] = mix(pool[dst], hashed);
            }
        }
    }
    // Entropy beyond the pool size (never for a u64 seed: at most two words), for completeness.
    for &extra in entropy.iter().skip(POOL_SIZE) {
        for word in pool.iter_mut() {
            let hashed = hashmix(extra);
            *word = mix(*word, hashed);
        }
    }
    pool
}

/// `SeedSequence.generate_state(4, np.uint64)`.
fn generate_state(pool: &[u32; POOL_SIZE]) -> [u64; 4] {
    let mut hash_const = INIT_B;
    let mut words = [0u32; 8];
    for (i, word) in words.iter_mut().enumerate() {
        let mut value = pool[i % POOL_SIZE] ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_B);
        value = value.wrapping_mul(hash_const);
        *word = value ^ (value >> XSHIFT);
    }
    let mut out = [0u64; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u64::from(words[2 * i]) | (u64::from(words[2 * i + 1]) << 32);
    }
    out
}

/// numpy's `PCG64` bit generator, seeded as `np.random.default_rng(seed)` seeds it.
#[derive(Debug, Clone)]
pub(crate) struct Pcg64 {
    state: u128,
    inc: u128,
    /// The upper half of the last 64-bit output, not yet handed out by [`Pcg64::next_u32`].
    buffered: Option<u32>,
}

impl Pcg64 {
    /// The generator of `np.random.default_rng(seed)`.
    pub(crate) fn from_seed(seed: u64) -> Self {
        let words = generate_state(&seed_pool(seed));
        let initstate = (u128::from(words[0]) << 64) | u128::from(words[1]);
        let initseq = (u128::from(words[2]) << 64) | u128::from(words[3]);
        let mut rng = Self {
            state: 0,
            inc: (initseq << 1) | 1,
            buffered: None,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }

    /// The next 64-bit output: step, then XSL-RR of the new state.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.step();
        let folded = ((self.state >> 64) as u64) ^ (self.state as u64);
        folded.rotate_right((self.state >> 122) as u32)
    }

    /// The next 32-bit output: the low half of a fresh 64-bit output, then its high half.
    pub(crate) fn next_u32(&mut self) -> u32 {
        if let Some(high) = self.buffered.take() {
            return high;
        }
        let next = self.next_u64();
        self.buffered = Some((next >> 32) as u32);
        next as u32
    }

    /// A uniform integer in `0..=range` (numpy's `bounded_lemire_uint64`).
    fn bounded_u64(&mut self, range: u64) -> u64 {
        let excl = range + 1;
        let mut m = u128::from(self.next_u64()) * u128::from(excl);
        let mut leftover = m as u64;
        if leftover < excl {
            let threshold = (u64::MAX - range) % excl;
            while leftover < threshold {
                m = u128::from(self.next_u64()) * u128::from(excl);
                leftover = m as u64;
            }
        }
        (m >> 64) as u64
    }

    /// A uniform integer in `0..=range`, `range < u32::MAX` (numpy's
    /// `buffered_bounded_lemire_uint32`).
    fn bounded_u32(&mut self, range: u32) -> u32 {
        let excl = range + 1;
        let mut m = u64::from(self.next_u32()) * u64::from(excl);
        let mut leftover = m as u32;
        if leftover < excl {
            let threshold = (u32::MAX - range) % excl;
            while leftover < threshold {
                m = u64::from(self.next_u32()) * u64::from(excl);
                leftover = m as u32;
            }
        }
        (m >> 32) as u32
    }

    /// `Generator.integers(0, high, size=count, dtype=np.int64)` for `high >= 1`: `count`
    /// integers in `0..high`.
    pub(crate) fn integers_below(&mut self, high: u64, count: usize) -> Vec<u64> {
        // numpy draws on the closed range [0, high - 1].
        let range = high.saturating_sub(1);
        (0..count)
            .map(|_| {
                if range == 0 {
                    0
                } else if range == u64::from(u32::MAX) {
                    u64::from(self.next_u32())
                } else if range < u64::from(u32::MAX) {
                    u64::from(self.bounded_u32(range as u32))
                } else if range == u64::MAX {
                    self.next_u64()
                } else {
                    self.bounded_u64(range)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Pcg64;

    #[test]
    fn matches_numpy_raw_outputs() {
        // np.random.PCG64(0).random_raw(3) and np.random.PCG64(10007).random_raw(2) (numpy 2.4).
        let mut rng = Pcg64::from_seed(0);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            [
                11_749_869_230_777_074_271,
                4_976_686_463_289_251_617,
                755_828_109_848_996_024
            ]
        );
        let mut rng = Pcg64::from_seed(10_007);
        let got: Vec<u64> = (0..2).map(|_| rng.next_u64()).collect();
        assert_eq!(got, [15_187_255_322_829_266_483, 959_186_003_677_246_517]);
    }

    #[test]
    fn matches_numpy_bounded_integers() {
        // np.random.default_rng(seed).integers(0, high, size=4, dtype=np.int64) (numpy 2.4): the
        // 64-bit path, the 32-bit path (both halves of each output), the full 32-bit range, and a
        // seed of two 32-bit words.
        let cases: [(u64, u64, [u64; 4]); 6] = [
            (0, 1000, [850, 636, 511, 269]),
            (
                140_098,
                46_761_472_949_621,
                [
                    34_019_940_188_175,
                    25_878_279_666_171,
                    15_534_434_815_969,
                    41_506_696_974_486,
                ],
            ),
            (
                7,
                3_000_000_000,
                [2_834_714_867, 2_052_539_810, 2_691_641_402, 1_734_877_356],
            ),
            (1 << 40, 5, [4, 1, 1, 3]),
            (
                3,
                1 << 32,
                [3_485_385_464, 367_860_371, 770_692_085, 1_017_093_381],
            ),
            (
                5,
                (1 << 31) + 1,
                [1_440_510_676, 1_728_730_615, 48_647_418, 1_353_417_275],
            ),
        ];
        for (seed, high, want) in cases {
            let got = Pcg64::from_seed(seed).integers_below(high, 4);
            assert_eq!(got, want, "seed {seed} high {high}");
        }
    }
}
