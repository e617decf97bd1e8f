//! Reads in flight, shared: when several lookups miss rows of the same block at once, only the
//! first reads it and the others wait for that read. One entry per read unit while it is in
//! flight, holding the senders of the lookups that joined it (none, usually): the lookup that
//! leads a read gets its results straight from its batch, so the common case allocates nothing
//! per unit here.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::KeyHashBuilder;
use crate::io::AlignedBuf;
use crate::tier::TierError;

/// Outcome of reading one unit: its verified bytes, or why they cannot be served.
pub(crate) type UnitResult = Result<std::sync::Arc<AlignedBuf>, TierError>;

const SHARDS: usize = 16;

/// Lookups waiting for a unit read by another.
type Waiters = Vec<oneshot::Sender<UnitResult>>;

/// Units being read now, by unit key.
#[derive(Debug, Default)]
pub(crate) struct InflightUnits {
    shards: [Mutex<HashMap<u64, Waiters, KeyHashBuilder>>; SHARDS],
}

/// What [`InflightUnits::join_or_lead`] hands back for one unit.
pub(crate) enum Joined {
    /// Someone else reads it: its result arrives here.
    Wait(oneshot::Receiver<UnitResult>),
    /// This caller reads it and must [`InflightUnits::complete`] it.
    Lead,
}

impl InflightUnits {
    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, Waiters, KeyHashBuilder>> {
        &self.shards[crate::shard_of(key, SHARDS)]
    }

    /// Joins the read of `key` in flight, or registers a new one led by the caller.
    pub(crate) fn join_or_lead(&self, key: u64) -> Joined {
        let mut map = self.shard(key).lock();
        if let Some(waiters) = map.get_mut(&key) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Joined::Wait(rx);
        }
        map.insert(key, Vec::new());
        Joined::Lead
    }

    /// Publishes the result of a led read to the lookups that joined it and forgets the entry.
    pub(crate) fn complete(&self, key: u64, result: &UnitResult) {
        let waiters = self.shard(key).lock().remove(&key);
        for tx in waiters.into_iter().flatten() {
            // A joiner that gave up (its request was cancelled) no longer listens.
            let _ = tx.send(result.clone());
        }
    }

    /// Reads in flight now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn joiners_get_the_leaders_result_and_the_entry_goes() {
        let inflight = InflightUnits::default();
        assert!(matches!(inflight.join_or_lead(7), Joined::Lead));
        let Joined::Wait(first) = inflight.join_or_lead(7) else {
            panic!("second caller should join");
        };
        let Joined::Wait(gone) = inflight.join_or_lead(7) else {
            panic!("third caller should join");
        };
        drop(gone); // a cancelled joiner must not disturb the others
        assert!(matches!(inflight.join_or_lead(8), Joined::Lead));
        assert_eq!(inflight.len(), 2);

        let mut buf = AlignedBuf::zeroed(4096, 4096);
        buf[0] = 42;
        inflight.complete(7, &Ok(Arc::new(buf)));
        let got = first.await.expect("joiner answered").expect("read ok");
        assert_eq!(got[0], 42);
        assert_eq!(inflight.len(), 1);
        // Once complete, the next miss of unit 7 reads again.
        assert!(matches!(inflight.join_or_lead(7), Joined::Lead));
    }
}
