//! Belady's OPT: the offline optimum, the upper bound every online policy is measured against.
//! It knows the whole trace: on a miss it admits the key only if the key is used again sooner
//! than some resident key, which it then evicts (the resident used again furthest in the future).
//! With admission optional, as here, this maximizes hits. Simulator only.

use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use super::SimPolicy;
use crate::key_hash::KeyHashBuilder;

/// Position of "never accessed again".
pub const NEVER: u64 = u64::MAX;

/// For each access of `trace`, the position of the next access to the same key ([`NEVER`] if
/// there is none). Computed once per trace and shared by every [`Opt`] run over it.
pub fn next_uses(trace: &[u64]) -> Arc<[u64]> {
    let mut last: HashMap<u64, u64, KeyHashBuilder> = HashMap::default();
    let mut next = vec![NEVER; trace.len()];
    for (i, &key) in trace.iter().enumerate().rev() {
        if let Some(seen) = last.insert(key, i as u64) {
            next[i] = seen;
        }
    }
    next.into()
}

/// Belady's OPT over one trace; [`SimPolicy::access`] must be called with that trace's keys, in
/// order, once each.
#[derive(Debug)]
pub struct Opt {
    next: Arc<[u64]>,
    pos: usize,
    /// Resident key -> position of its next access.
    resident: HashMap<u64, u64, KeyHashBuilder>,
    /// (next access, key) of residents, with stale entries skipped lazily.
    heap: BinaryHeap<(u64, u64)>,
    capacity: usize,
}

impl Opt {
    /// OPT with `capacity` rows over the trace whose [`next_uses`] are `next`.
    pub fn new(capacity: usize, next: Arc<[u64]>) -> Self {
        Self {
            next,
            pos: 0,
            resident: HashMap::with_capacity_and_hasher(capacity, KeyHashBuilder),
            heap: BinaryHeap::with_capacity(capacity),
            capacity,
        }
    }

    /// The resident key used again furthest in the future, with that position.
    fn furthest(&mut self) -> Option<(u64, u64)> {
        while let Some(&(next, key)) = self.heap.peek() {
            if self.resident.get(&key) == Some(&next) {
                return Some((next, key));
            }
            self.heap.pop();
        }
        None
    }

    fn compact_heap(&mut self) {
        if self.heap.len() > 2 * self.capacity + 1024 {
            self.heap = self.resident.iter().map(|(&k, &n)| (n, k)).collect();
        }
    }
}

impl SimPolicy for Opt {
    fn policy_name(&self) -> &'static str {
        "opt"
    }

    fn access(&mut self, key: u64) -> bool {
        let next = self.next[self.pos];
        self.pos += 1;
        if let Some(n) = self.resident.get_mut(&key) {
            *n = next;
            self.heap.push((next, key));
            self.compact_heap();
            return true;
        }
        if next == NEVER || self.capacity == 0 {
            return false;
        }
        if self.resident.len() == self.capacity {
            match self.furthest() {
                Some((n, victim)) if n > next => {
                    self.heap.pop();
                    self.resident.remove(&victim);
                }
                _ => return false,
            }
        }
        self.resident.insert(key, next);
        self.heap.push((next, key));
        false
    }

    fn accounted_bytes(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::*;

    /// Most hits any admission/eviction schedule gets: dynamic programming over every resident
    /// set reachable at each step.
    fn brute_force(trace: &[u64], capacity: usize) -> usize {
        let mut states: HashMap<BTreeSet<u64>, usize> = HashMap::from([(BTreeSet::new(), 0)]);
        for &key in trace {
            let mut next: HashMap<BTreeSet<u64>, usize> = HashMap::new();
            let mut offer = |set: BTreeSet<u64>, hits: usize| {
                let best = next.entry(set).or_insert(0);
                *best = (*best).max(hits);
            };
            for (set, hits) in states {
                if set.contains(&key) {
                    offer(set, hits + 1);
                    continue;
                }
                offer(set.clone(), hits); // bypass
                if set.len() < capacity {
                    let mut s = set.clone();
                    s.insert(key);
                    offer(s, hits);
                } else {
                    for &victim in &set {
                        let mut s = set.clone();
                        s.remove(&victim);
                        s.insert(key);
                        offer(s, hits);
                    }
                }
            }
            states = next;
        }
        states.into_values().max().unwrap_or(0)
    }

    #[test]
    fn matches_brute_force_on_tiny_traces() {
        let mut rng = StdRng::seed_from_u64(7);
        for case in 0..300 {
            let len = rng.random_range(1..14);
            let keys = rng.random_range(1..6);
            let capacity = rng.random_range(0..4);
            let trace: Vec<u64> = (0..len).map(|_| rng.random_range(0..keys)).collect();
            let mut opt = Opt::new(capacity, next_uses(&trace));
            let hits = trace.iter().filter(|&&k| opt.access(k)).count();
            assert_eq!(
                hits,
                brute_force(&trace, capacity),
                "case {case}: {trace:?} capacity {capacity}"
            );
        }
    }

    #[test]
    fn next_uses_point_forward() {
        let next = next_uses(&[1, 2, 1, 1, 3]);
        assert_eq!(&*next, &[2, NEVER, 3, NEVER, NEVER]);
    }
}
