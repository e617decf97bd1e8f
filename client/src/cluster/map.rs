//! What the cluster keeps in etcd, as typed records: the node records (one per live node, under
//! its lease), the shard map (one key, every planned table version, stamped with an epoch), and
//! the Engram groups' hashing data (so that clients route LookupNgrams by the rows it resolves
//! to). The key layout is [`keys`]; every value is JSON except the compression map (npy bytes).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// The etcd keys of a cluster.
pub mod keys {
    /// Every key of the cluster lives under this prefix.
    pub const PREFIX: &str = "/engram-store/";
    /// Prefix of the node records.
    pub const NODES: &str = "/engram-store/nodes/";
    /// The shard map ([`super::ClusterMap`]).
    pub const MAP: &str = "/engram-store/map";
    /// Prefix of the Engram groups' hashing data.
    pub const GROUPS: &str = "/engram-store/groups/";

    /// The record of node `id`.
    pub fn node(id: &str) -> String {
        format!("{NODES}{id}")
    }

    /// What group `name` maps layers to ([`super::GroupRecord`]).
    pub fn group_meta(name: &str) -> String {
        format!("{GROUPS}{name}/meta")
    }

    /// The layout JSON of group `name`.
    pub fn group_layout(name: &str) -> String {
        format!("{GROUPS}{name}/layout")
    }

    /// The compression map (npy bytes) of group `name`.
    pub fn group_compress(name: &str) -> String {
        format!("{GROUPS}{name}/compress")
    }
}

/// Per-tier capacity of a node, in bytes (the placement's weights).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// RAM tier budget.
    pub ram_bytes: u64,
    /// VRAM tier budget.
    pub gpu_bytes: u64,
    /// Bytes of table data in the node's data directory (its NVMe tier).
    pub disk_bytes: u64,
}

impl Capacity {
    /// The weight of a node in the placement: its cache tiers in GiB (at least 1/64), so a node
    /// with twice the RAM is given about twice the shards.
    pub fn weight(&self) -> f64 {
        let cached = self.ram_bytes.saturating_add(self.gpu_bytes) as f64 / (1u64 << 30) as f64;
        cached.max(1.0 / 64.0)
    }
}

/// One Engram layer table's column boundaries: its heads' first rows and its row count, so
/// shards can be cut between heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupLayer {
    /// The Engram group.
    pub group: String,
    /// The layer this table serves.
    pub layer_id: u32,
    /// First row of each hash column, in column order (the layout's offsets).
    pub column_offsets: Vec<u64>,
}

/// A table version a node holds in its data directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldTable {
    /// Table name.
    pub name: String,
    /// Version served.
    pub version: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes per row.
    pub row_bytes: u32,
    /// Set when the table is an Engram group's layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupLayer>,
    /// The row ranges `[start, end)` held, when the node holds only part of the version (shards
    /// copied from peers); absent when it holds every row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_rows: Option<Vec<(u64, u64)>>,
}

impl HeldTable {
    /// True when the node holds every row of the version.
    pub fn whole(&self) -> bool {
        self.held_rows.is_none()
    }

    /// True when the node holds every row of `start..end`.
    pub fn holds(&self, start: u64, end: u64) -> bool {
        self.held_rows
            .as_ref()
            .is_none_or(|r| r.iter().any(|&(s, e)| s <= start && end <= e))
    }
}

/// A shard of a table version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ShardRef {
    /// Table name.
    pub table: String,
    /// Table version.
    pub version: u64,
    /// Shard index in the table's map.
    pub shard: u32,
}

/// What a node says of itself, under its lease: gone when the lease expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's id (`--node-id`).
    pub node_id: String,
    /// Where clients reach it (`--advertise`, host:port).
    pub addr: String,
    /// Tier capacities.
    pub capacity: Capacity,
    /// Table versions in its data directory.
    pub tables: Vec<HeldTable>,
    /// True once every shard the map gives it is ready.
    pub ready: bool,
    /// The shards it serves now (loaded, warmed).
    pub ready_shards: Vec<ShardRef>,
    /// The map epoch it last acted on.
    pub map_epoch: u64,
    /// Whether it forwards parts it does not hold (`--route`).
    #[serde(default)]
    pub route: bool,
}

impl NodeRecord {
    /// True when the node serves `shard` now.
    pub fn serves(&self, shard: &ShardRef) -> bool {
        self.ready_shards.iter().any(|s| s == shard)
    }

    /// The version of `table` it holds, if any.
    pub fn held(&self, table: &str) -> Option<&HeldTable> {
        self.tables.iter().find(|t| t.name == table)
    }
}

/// One shard: a row range of a table version (for an Engram layer, whole hash columns), with
/// its replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// First row.
    pub start: u64,
    /// One past the last row.
    pub end: u64,
    /// Hash columns `[first, last)` of an Engram layer's shard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<(u32, u32)>,
    /// The nodes that serve it, best first.
    pub replicas: Vec<String>,
    /// Replicas of the previous epoch that keep serving it until the new ones are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaving: Vec<String>,
}

impl Shard {
    /// Every node that may serve the shard: its replicas, then those leaving.
    pub fn all_replicas(&self) -> impl Iterator<Item = &String> {
        self.replicas.iter().chain(&self.leaving)
    }
}

/// The placement of one table version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableMap {
    /// Table name.
    pub table: String,
    /// The version placed.
    pub version: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes per row.
    pub row_bytes: u32,
    /// Replicas per shard asked for.
    pub replicas: u32,
    /// The epoch that placed it.
    pub epoch: u64,
    /// Shards, in row order, covering `0..rows`.
    pub shards: Vec<Shard>,
}

impl TableMap {
    /// The shard holding `row` (`None` past the end).
    pub fn shard_of(&self, row: u64) -> Option<usize> {
        if row >= self.rows {
            return None;
        }
        let i = self.shards.partition_point(|s| s.end <= row);
        (i < self.shards.len()).then_some(i)
    }

    /// A reference to shard `i`.
    pub fn shard_ref(&self, i: usize) -> ShardRef {
        ShardRef {
            table: self.table.clone(),
            version: self.version,
            shard: i as u32,
        }
    }
}

/// The shard map: every placed table, and the epoch of the last change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// Raised by every published change.
    pub epoch: u64,
    /// Placed tables by name.
    pub tables: BTreeMap<String, TableMap>,
}

/// An Engram group's layers, as a client needs them to hash LookupNgrams itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// Group name.
    pub name: String,
    /// Layer id -> the table serving it.
    pub layers: BTreeMap<u32, String>,
}

/// Everything a router needs: the map and the live nodes.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// The shard map.
    pub map: ClusterMap,
    /// Live nodes by id.
    pub nodes: HashMap<String, NodeRecord>,
    /// The etcd revision this view was read at (0: never read).
    pub revision: i64,
    /// Engram groups' hashing data, by group name.
    pub groups: HashMap<String, std::sync::Arc<super::ngrams::GroupHashing>>,
}

impl ClusterView {
    /// The replicas of shard `i` of `table` that are alive and report it ready, in map order.
    pub fn ready_replicas<'a>(
        &'a self,
        table: &'a TableMap,
        i: usize,
    ) -> impl Iterator<Item = &'a NodeRecord> + 'a {
        let shard = table.shard_ref(i);
        table.shards[i]
            .all_replicas()
            .filter_map(|id| self.nodes.get(id))
            .filter(move |n| n.serves(&shard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(bounds: &[u64]) -> TableMap {
        TableMap {
            table: "t".into(),
            version: 1,
            rows: *bounds.last().unwrap_or(&0),
            row_bytes: 4,
            replicas: 1,
            epoch: 1,
            shards: bounds
                .windows(2)
                .map(|w| Shard {
                    start: w[0],
                    end: w[1],
                    columns: None,
                    replicas: vec![],
                    leaving: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn shard_of_finds_the_range() {
        let m = map(&[0, 10, 20, 35]);
        assert_eq!(m.shard_of(0), Some(0));
        assert_eq!(m.shard_of(9), Some(0));
        assert_eq!(m.shard_of(10), Some(1));
        assert_eq!(m.shard_of(34), Some(2));
        assert_eq!(m.shard_of(35), None);
    }

    #[test]
    fn records_round_trip_as_json() {
        let m = ClusterMap {
            epoch: 3,
            tables: [("t".to_string(), map(&[0, 5]))].into(),
        };
        let text = serde_json::to_string(&m).expect("json");
        assert_eq!(serde_json::from_str::<ClusterMap>(&text).expect("back"), m);
    }
}
