//! Monotonic counters from counts the engine keeps: the engine's counters drop to zero on
//! `Stats(reset)` and start at zero for a new table version, while a Prometheus counter only
//! goes up. Each scrape adds what a count grew by since the last one; a count that went down
//! was reset, and all of it is new.

use std::collections::HashMap;

use metrics::Key;
use parking_lot::Mutex;

/// The last value seen of every folded count.
#[derive(Debug, Default)]
pub(crate) struct CounterFold {
    last: Mutex<HashMap<Key, u64>>,
}

impl CounterFold {
    /// How much to add to the counter `key` now that its count reads `now`.
    pub(crate) fn delta(&self, key: &Key, now: u64) -> u64 {
        let mut last = self.last.lock();
        let before = last.insert(key.clone(), now).unwrap_or(0);
        if now >= before { now - before } else { now }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_adds_and_a_reset_starts_over() {
        let f = CounterFold::default();
        let k = Key::from_name("x");
        assert_eq!(f.delta(&k, 5), 5);
        assert_eq!(f.delta(&k, 5), 0);
        assert_eq!(f.delta(&k, 12), 7);
        assert_eq!(f.delta(&k, 3), 3);
        assert_eq!(f.delta(&Key::from_name("y"), 4), 4);
    }
}
