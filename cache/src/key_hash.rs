//! A fast hasher for `u64` row ids (a multiply-xorshift finalizer), used by cache indexes where
//! keys are integers and SipHash's DoS resistance buys nothing.

use std::hash::{BuildHasher, Hasher};

/// Builds [`KeyHasher`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHashBuilder;

impl BuildHasher for KeyHashBuilder {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Hashes one `u64` (other inputs are folded in byte by byte).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// The splitmix64 / murmur3 64-bit finalizer: a bijection that spreads every input bit.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Shard of `key` among `shards` (a power of two), from a hash independent of [`mix64`]`(key)`,
/// so that keys sharing a shard still spread over every bucket of the shard's own index (which
/// hashes with [`mix64`]).
#[inline]
pub fn shard_of(key: u64, shards: usize) -> usize {
    debug_assert!(shards.is_power_of_two());
    // A hash of the hash: mix64(key ^ c) alone stays correlated with mix64(key) for small keys.
    (mix64(mix64(key) ^ 0x6a09_e667_f3bc_c909) >> 32) as usize & (shards - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mix64` places ids in the VRAM tier's index, which workers probe with their own kernel
    /// (`SharedVramTier` in the protocol): its values are a contract. The Python client's test
    /// (`test_torch_mapped.py`) checks its copy against the same values.
    #[test]
    fn mix64_is_splitmix64s_finalizer() {
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_eq!(mix64(12345), 0xf36c_f116_4265_dd51);
        assert_eq!(mix64(383_999_999), 0xc006_05d7_0f67_bac2);
    }
}
