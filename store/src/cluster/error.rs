//! Errors of the cluster commands and of a node's etcd work.

use engram_store_client::cluster::placement::PlanError;

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A record in etcd is not what this version writes.
    #[error("unreadable {what} in etcd: {source}")]
    Record {
        /// Which record.
        what: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The placement cannot be made.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// Nothing to place under that name.
    #[error("no live node holds a table or Engram group named {0:?}")]
    UnknownTable(String),
    /// Others kept changing the map.
    #[error("the shard map changed {0} times while publishing; try again")]
    Contended(u32),
}
