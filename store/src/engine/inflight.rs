//! Reads in flight, shared: when several lookups miss rows of the same block at once, only the
//! first reads it and the others wait for that read. One entry per read unit while it is in flight.

use std::collections::HashMap;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::Shared;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use engram_store_cache::KeyHashBuilder;
use engram_store_cache::io::AlignedBuf;

use super::error::LookupError;

/// Outcome of reading one unit: its verified bytes, or why they cannot be served.
pub(crate) type UnitResult = Result<Arc<AlignedBuf>, LookupError>;
/// A unit read that any number of lookups can await.
pub(crate) type UnitFuture = Shared<oneshot::Receiver<UnitResult>>;

const SHARDS: usize = 16;

/// Units being read now, by unit key.
#[derive(Debug, Default)]
pub(crate) struct InflightUnits {
    shards: [Mutex<HashMap<u64, UnitFuture, KeyHashBuilder>>; SHARDS],
}

/// What [`InflightUnits::join_or_lead`] hands back for one unit.
pub(crate) enum Joined {
    /// Someone else reads it: await this.
    Wait(UnitFuture),
    /// This caller reads it and must complete it through the sender.
    Lead(UnitFuture, oneshot::Sender<UnitResult>),
}

impl InflightUnits {
    fn shard(&self, key: u64) -> &Mutex<HashMap<u64, UnitFuture, KeyHashBuilder>> {
        &self.shards[engram_store_cache::shard_of(key, SHARDS)]
    }

    /// Joins the read of `key` in flight, or registers a new one led by the caller.
    pub(crate) fn join_or_lead(&self, key: u64) -> Joined {
        let mut map = self.shard(key).lock();
        if let Some(f) = map.get(&key) {
            return Joined::Wait(f.clone());
        }
        let (tx, rx) = oneshot::channel();
        let f = rx.shared();
        map.insert(key, f.clone());
        Joined::Lead(f, tx)
    }

    /// Publishes the result of a led read and forgets the entry.
    pub(crate) fn complete(&self, key: u64, tx: oneshot::Sender<UnitResult>, result: UnitResult) {
        self.shard(key).lock().remove(&key);
        let _ = tx.send(result);
    }

    /// Reads in flight now.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}
