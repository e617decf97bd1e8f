//! The library baseline: moka's W-TinyLFU (`moka::sync::Cache` with `max_capacity` rows of unit
//! weight), as a [`SimPolicy`]. moka is not slot-based (it owns its values), so it can only be
//! simulated, not paired with the RAM tier's arena.
//!
//! moka applies reads and writes to its policy in batches from internal buffers; after each
//! insert this wrapper runs those pending tasks, so eviction and admission happen before the next
//! access, as in a cache under no concurrency. Without that the cache overshoots its capacity
//! between batches and the hit rate reads slightly high.

use moka::sync::Cache;

use super::SimPolicy;

/// Inserts between explicit runs of moka's pending tasks.
const RUN_EVERY: u64 = 64;

/// moka's `sync::Cache<u64, ()>` bounded to a number of rows.
#[derive(Debug)]
pub struct MokaTinyLfu {
    cache: Cache<u64, ()>,
    inserts: u64,
}

impl MokaTinyLfu {
    /// A moka cache of at most `capacity` rows.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: Cache::new(capacity as u64),
            inserts: 0,
        }
    }

    /// Rows resident now (after pending tasks ran).
    pub fn len(&self) -> usize {
        self.cache.run_pending_tasks();
        self.cache.entry_count() as usize
    }

    /// True when nothing is resident.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SimPolicy for MokaTinyLfu {
    fn policy_name(&self) -> &'static str {
        "moka"
    }

    fn access(&mut self, key: u64) -> bool {
        if self.cache.get(&key).is_some() {
            return true;
        }
        self.cache.insert(key, ());
        self.inserts += 1;
        if self.inserts.is_multiple_of(RUN_EVERY) {
            self.cache.run_pending_tasks();
        }
        false
    }

    fn accounted_bytes(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_and_hits() {
        let mut moka = MokaTinyLfu::new(10);
        for round in 0..20 {
            for key in 0..5 {
                let hit = moka.access(key);
                if round > 2 {
                    assert!(hit, "key {key} round {round}");
                }
            }
            moka.access(100 + round);
        }
        assert!(moka.len() <= 10);
    }
}
