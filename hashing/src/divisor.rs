//! Fast `x mod d` for a divisor fixed ahead of time (each head's prime), by Barrett reduction.
//!
//! The hot loop takes one remainder per (position, head); a hardware 64-bit division costs tens
//! of cycles, a multiply-high and a correction a few.

use std::num::NonZeroU64;

/// A divisor with its precomputed reciprocal `floor((2^64 - 1) / d)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Divisor {
    d: u64,
    reciprocal: u64,
}

impl Divisor {
    /// Prepares `d` for repeated remainders.
    pub(crate) fn new(d: NonZeroU64) -> Self {
        let d = d.get();
        Self {
            d,
            reciprocal: u64::MAX / d,
        }
    }

    /// `x % d`.
    #[inline(always)]
    pub(crate) fn rem(self, x: u64) -> u64 {
        // q <= floor(x / d) and floor(x / d) - q <= 1: with r = 2^64 - d * reciprocal, 1 <= r <= d,
        // the exact quotient exceeds x * reciprocal / 2^64 by x * r / (d * 2^64) < 1. So q * d <= x
        // and one conditional subtraction finishes the job.
        let q = ((u128::from(x) * u128::from(self.reciprocal)) >> 64) as u64;
        let r = x - q * self.d;
        if r >= self.d { r - self.d } else { r }
    }
}

#[cfg(test)]
mod tests {
    use super::Divisor;
    use rand::{Rng, SeedableRng, rngs::StdRng};
    use std::num::NonZeroU64;

    fn check(d: u64, x: u64) {
        let div = Divisor::new(NonZeroU64::new(d).expect("test divisors are non-zero"));
        assert_eq!(div.rem(x), x % d, "{x} mod {d}");
    }

    #[test]
    fn matches_hardware_remainder() {
        let edges = [
            0,
            1,
            2,
            3,
            7,
            646_403,
            2_262_409,
            u32::MAX as u64,
            1 << 32,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for &d in &edges[1..] {
            for &x in &edges {
                check(d, x);
                check(d, x.wrapping_sub(1));
            }
        }
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200_000 {
            let d = rng.random_range(1..=u64::MAX) >> rng.random_range(0..64);
            check(d.max(1), rng.random());
        }
    }
}
