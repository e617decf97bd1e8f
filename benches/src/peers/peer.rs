//! What the driver needs of a system under test: connections that answer a batch of row ids with
//! the rows, packed in request order. Implemented by Redis ([`super::redis_peer`]) and by
//! engram-store ([`super::engram_peer`]); the driver ([`super::drive`]) knows neither.

use std::future::Future;

use anyhow::Result;
use bytes::Bytes;

/// Who a result line is about: one of the two systems, or the machine's limits (the `system`
/// column of the CSV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Redis, rows as string values read with MGET.
    Redis,
    /// engram-store, rows read with Lookup.
    EngramStore,
    /// A limit of the machine measured in the same run.
    Limit,
}

impl System {
    /// The name in reports and in the CSV.
    pub fn name(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::EngramStore => "engram-store",
            Self::Limit => "limit",
        }
    }
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One client connection to a system under test, owned by one client task.
pub trait Connection: Send + 'static {
    /// The rows of `ids`, packed in request order (duplicates repeated).
    fn fetch(&mut self, ids: &[u64]) -> impl Future<Output = Result<Bytes>> + Send;
}
