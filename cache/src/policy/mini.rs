//! Miniature simulations (SHARDS-style, as in "Cache Modeling and Optimization using Miniature
//! Simulations"): candidate configurations of a policy run side by side on a spatial sample of
//! the keys, each at the same fraction of the cache's slots, and the one that hits most lately
//! is the configuration the full cache should run.
//!
//! A key is in the sample when its hash falls in a fixed 1 in 2^k of the hash space, so a sampled
//! key is always sampled and a mini-cache of `capacity / 2^k` slots sees the same reuse distances,
//! scaled, as the full cache. The candidates see the same sampled accesses, so their comparison
//! is paired: the noise of which keys fell in the sample cancels out of the difference.
//!
//! Scores are hits per epoch (one sampled access per mini-cache slot, at least
//! [`MIN_EPOCH`]), halved at every epoch's end so that they follow the trace; the leader changes
//! only when another candidate's score passes it by a margin (a share of the decayed accesses).

use super::{Policy, SimPolicy};
use crate::key_hash::mix64;

/// Seed that keeps the sample's hash independent of the index's and the sketch's.
const SEED: u64 = 0x6a09_e667_f3bc_c909;
/// Fewest sampled accesses per epoch.
const MIN_EPOCH: u32 = 256;

/// Candidate policies of the same kind, simulated on a sample of the keys (see the module doc).
#[derive(Debug)]
pub(crate) struct MiniSims<P> {
    minis: Box<[P]>,
    shift: u32,
    scores: Box<[f64]>,
    epoch_hits: Box<[u32]>,
    epoch: u32,
    seen: u32,
    leader: usize,
    margin: f64,
}

impl<P: Policy> MiniSims<P> {
    /// Runs `minis` (each already sized to 1 in 2^`shift` of the full cache's slots) on the keys
    /// whose hash is in the sample; candidate `leader` leads until another does better.
    pub(crate) fn new(
        minis: Vec<P>,
        shift: u32,
        epoch_per_row: f64,
        leader: usize,
        margin: f64,
    ) -> Self {
        let rows = minis.first().map_or(0, Policy::capacity);
        let n = minis.len();
        Self {
            minis: minis.into_boxed_slice(),
            shift: shift.clamp(1, 32),
            scores: vec![0.0; n].into_boxed_slice(),
            epoch_hits: vec![0; n].into_boxed_slice(),
            epoch: ((rows as f64 * epoch_per_row) as u32).max(MIN_EPOCH),
            seen: 0,
            leader: leader.min(n.saturating_sub(1)),
            margin,
        }
    }

    /// Heap bytes held, the candidates' own included.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.minis.iter().map(|m| m.metadata_bytes()).sum::<usize>()
            + std::mem::size_of_val(&*self.scores)
            + std::mem::size_of_val(&*self.epoch_hits)
    }

    /// The candidate that does best lately.
    pub(crate) fn leader(&self) -> usize {
        self.leader
    }

    /// Feeds an access of `key` to every candidate if `key` is sampled; true when an epoch ended
    /// and the leader changed.
    #[inline]
    pub(crate) fn access(&mut self, key: u64) -> bool {
        if mix64(key ^ SEED) >> (64 - self.shift) != 0 {
            return false;
        }
        for (mini, hits) in self.minis.iter_mut().zip(self.epoch_hits.iter_mut()) {
            *hits += u32::from(mini.access(key));
        }
        self.seen += 1;
        if self.seen < self.epoch {
            return false;
        }
        self.end_epoch()
    }

    fn end_epoch(&mut self) -> bool {
        for (score, hits) in self.scores.iter_mut().zip(self.epoch_hits.iter_mut()) {
            *score = *score / 2.0 + f64::from(*hits);
            *hits = 0;
        }
        self.seen = 0;
        // Decayed scores sum to about twice an epoch's accesses.
        let margin = self.margin * f64::from(self.epoch) * 2.0;
        if self.epoch > 1000 {
            eprintln!(
                "EPOCH {} scores {:?} leader {}",
                self.epoch, self.scores, self.leader
            );
        }
        let best = (0..self.scores.len())
            .max_by(|&a, &b| self.scores[a].total_cmp(&self.scores[b]))
            .unwrap_or(0);
        if best != self.leader && self.scores[best] > self.scores[self.leader] + margin {
            self.leader = best;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Lru, Sieve};

    #[test]
    fn the_candidate_that_hits_more_leads() {
        // A loop over 300 keys: a 100-slot LRU never hits (each key is evicted before its
        // return), a 400-slot one always does after the first pass.
        let minis = vec![Lru::new(100 / 8), Lru::new(400 / 8)];
        let mut m = MiniSims::new(minis, 3, 1.0, 0, 0.002);
        let mut changed = false;
        for _ in 0..2000 {
            for key in 0..300u64 {
                changed |= m.access(key);
            }
        }
        assert!(changed);
        assert_eq!(m.leader(), 1);
        assert!(m.heap_bytes() > 0);
    }

    #[test]
    fn unsampled_keys_reach_no_candidate() {
        let mut m = MiniSims::new(vec![Sieve::new(16)], 8, 1.0, 0, 0.002);
        let unsampled: Vec<u64> = (0..1000u64)
            .filter(|&k| mix64(k ^ SEED) >> 56 != 0)
            .take(50)
            .collect();
        for &k in &unsampled {
            assert!(!m.access(k));
        }
        assert_eq!(m.minis[0].len(), 0);
    }
}
