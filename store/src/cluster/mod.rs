//! The server side of a cluster of engram-store nodes, coordinated through etcd (membership,
//! leases, the shard map) rather than a protocol of our own:
//!
//! - [`ClusterNode`] (`serve --etcd ... --node-id ... --advertise ...`): registers under a
//!   lease, follows the map, loads (from its data directory, or copied from a peer) and warms
//!   the shards it is given, reports them ready.
//! - [`ClusterService`]: the store service behind the cluster's rules (epoch check,
//!   FAILED_PRECONDITION for shards not held, `--route` forwarding).
//! - [`plan`] and [`show`] (`engram-store cluster plan|show`): publish a placement as a new map
//!   epoch in one etcd transaction, and print the map.
//!
//! The records, the placement and the routing client live in `engram-store-client`
//! (`cluster::map`, `cluster::placement`, `ClusterClient`), shared with the clients.

mod error;
mod node;
mod peer_copy;
mod plan;
mod service;
mod shard_release;

use std::time::Duration;

pub use error::ClusterError;
pub use node::{ClusterNode, ReadySet};
pub use peer_copy::{Copied, CopyError, ShardCopy, copy_group_dir};
pub use plan::{PlanArgs, PlanOutcome, plan, read_cluster, show};
pub use service::ClusterService;

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// etcd endpoints (`http://host:2379`).
    pub etcd: Vec<String>,
    /// This node's id (unique in the cluster; in Kubernetes, the pod name).
    pub node_id: String,
    /// Where clients reach this node (host:port).
    pub advertise: String,
    /// Lease time to live: a node that stops renewing leaves the cluster after this. Default 5 s.
    pub lease_ttl: Duration,
    /// Forward the parts of a plain request that this node does not serve. Default off.
    pub route: bool,
    /// Rows of each new shard brought into the fastest tier before it is reported ready.
    /// Default 4096.
    pub warm_rows: u64,
    /// TLS and token of the node's own connections to its peers (forwarding with `route`,
    /// shard copies). Default: plaintext, no token.
    pub security: engram_store_client::Security,
}

impl ClusterOptions {
    /// Options with the defaults.
    pub fn new(etcd: Vec<String>, node_id: String, advertise: String) -> Self {
        Self {
            etcd,
            node_id,
            advertise,
            lease_ttl: Duration::from_secs(5),
            route: false,
            warm_rows: 4096,
            security: engram_store_client::Security::default(),
        }
    }
}
