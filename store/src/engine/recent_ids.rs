//! A sample of the row ids a table version's traffic reads, kept so that a new version of the
//! table can be warmed with them before it is swapped in. Every lookup and prefetch records up to
//! [`PER_REQUEST`] of its ids (spread evenly over the batch) into a ring of a fixed number of
//! slots, overwriting the oldest: hot rows come back often and fill much of the ring, which is
//! what a warm-up wants. Lock-free (one `fetch_add` and a few relaxed stores per request), so the
//! lookup path does not notice it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Ids recorded per request, at most.
pub(crate) const PER_REQUEST: usize = 32;

/// Slots of a served table's ring (8 bytes each).
pub(crate) const RING_SLOTS: usize = 1 << 18;

/// The ring. A slot holds `id + 1`; 0 is empty.
#[derive(Debug)]
pub(crate) struct RecentIds {
    ring: Box<[AtomicU64]>,
    next: AtomicUsize,
}

impl RecentIds {
    /// A ring of `slots` ids (0: records nothing).
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            ring: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Records up to [`PER_REQUEST`] of `ids`, evenly spread.
    pub(crate) fn record(&self, ids: &[u64]) {
        if self.ring.is_empty() || ids.is_empty() {
            return;
        }
        let n = ids.len().min(PER_REQUEST);
        let start = self.next.fetch_add(n, Ordering::Relaxed);
        for k in 0..n {
            let id = ids[k * ids.len() / n];
            self.ring[(start + k) % self.ring.len()].store(id.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The distinct ids recorded, sorted (so that a warm-up reads them in file order).
    pub(crate) fn snapshot(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .ring
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&v| v != 0)
            .map(|v| v - 1)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_each_batch_and_keeps_the_latest() {
        let r = RecentIds::new(64);
        assert!(r.snapshot().is_empty());
        r.record(&[5, 3, 5]);
        assert_eq!(r.snapshot(), vec![3, 5]);
        // A large batch: PER_REQUEST ids, evenly spread over it.
        let big: Vec<u64> = (1000..2000).collect();
        r.record(&big);
        let s = r.snapshot();
        assert_eq!(s.len(), 2 + PER_REQUEST);
        assert!(s.contains(&1000) && s.iter().all(|&id| id < 2000));
        // The ring overwrites the oldest: after enough batches only the newest ids are left.
        for _ in 0..2 {
            r.record(
                &(0..PER_REQUEST as u64)
                    .map(|i| 7000 + i)
                    .collect::<Vec<_>>(),
            );
        }
        assert!(r.snapshot().iter().all(|&id| id >= 7000));
        // Id 0 and the largest id are recorded like any other.
        let r = RecentIds::new(4);
        r.record(&[0, u64::MAX - 1]);
        assert_eq!(r.snapshot(), vec![0, u64::MAX - 1]);
        // No slots: nothing is recorded.
        let none = RecentIds::new(0);
        none.record(&[1, 2]);
        assert!(none.snapshot().is_empty());
    }
}
