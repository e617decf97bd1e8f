//! Deterministic primality test for `u64`, used to validate the primes of a layout.
//!
//! Miller-Rabin with the first twelve primes as witnesses is exact for every `n < 3.3e24`, which
//! covers all of `u64`; products are taken in `u128`, so nothing overflows.

/// The witnesses: checking these bases is exact for all `u64` (they suffice below 3.3e24).
const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];

/// Whether `n` is prime. Exact for every `u64`.
///
/// ```
/// use engram_store_hashing::is_prime;
/// assert!(is_prime(646_403));
/// assert!(!is_prime(3_215_031_751)); // a strong pseudoprime to bases 2, 3, 5 and 7
/// ```
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in WITNESSES {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    // n is odd and above 37 here, so every witness is below n.
    let s = (n - 1).trailing_zeros();
    let d = (n - 1) >> s;
    'witness: for a in WITNESSES {
        let mut x = pow_mod(a, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// `a * b mod m` without overflow.
fn mul_mod(a: u64, b: u64, m: u64) -> u64 {
    // The remainder is below m, so it fits u64.
    ((u128::from(a) * u128::from(b)) % u128::from(m)) as u64
}

/// `base^exp mod m` by square and multiply.
fn pow_mod(base: u64, mut exp: u64, m: u64) -> u64 {
    let mut result = 1 % m;
    let mut base = base % m;
    while exp > 0 {
        if exp & 1 == 1 {
            result = mul_mod(result, base, m);
        }
        base = mul_mod(base, base, m);
        exp >>= 1;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::is_prime;

    fn trial_division(n: u64) -> bool {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn agrees_with_trial_division_below_200k() {
        for n in 0..200_000 {
            assert_eq!(is_prime(n), trial_division(n), "n = {n}");
        }
    }

    #[test]
    fn large_primes_and_pseudoprimes() {
        // Largest u64 prime, Mersenne primes, a prime just above 2^32.
        for p in [u64::MAX - 58, (1 << 61) - 1, (1 << 31) - 1, 4_294_967_311] {
            assert!(is_prime(p), "{p} is prime");
        }
        for c in [
            u64::MAX,
            561,                       // Carmichael
            3_215_031_751,             // strong pseudoprime to 2, 3, 5, 7
            3_825_123_056_546_413_051, // strong pseudoprime to the first nine prime bases
            4_294_967_291 * 4_294_967_279,
            (1 << 61) - 1 + 2,
        ] {
            assert!(!is_prime(c), "{c} is composite");
        }
    }
}
