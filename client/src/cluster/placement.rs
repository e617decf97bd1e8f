//! Placement: which nodes serve which shard of a table version. Shards are contiguous row
//! ranges (an Engram layer's cut between hash columns, so a tensor-parallel rank's columns stay
//! together); each gets the `replicas` nodes with the highest weighted rendezvous score
//! (`-weight / ln(u)`, u a stable hash of node and shard in (0, 1)), so a join or a leave moves
//! only the shards whose top nodes changed, and a node with twice the capacity gets about twice
//! the shards. The replicas of the previous placement that lose a shard stay as `leaving` until
//! the planner sees the new ones ready. Any live node may be given a shard (one that does not
//! hold the version copies the shard's rows from a peer that does); with `copy_from_peers` off,
//! only nodes holding the version whole are.

use std::collections::BTreeSet;

use super::map::{NodeRecord, Shard, TableMap};

/// Why a table cannot be placed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// No live node holds the table.
    #[error("no live node holds table {table:?}")]
    NoHolder {
        /// Table.
        table: String,
    },
    /// Fewer nodes can take the version than replicas were asked for.
    #[error(
        "table {table:?}: {replicas} replicas asked for, but only {holders} live node(s) can \
         serve version {version} ({nodes})"
    )]
    TooFewNodes {
        /// Table.
        table: String,
        /// Version placed.
        version: u64,
        /// Replicas asked for.
        replicas: u32,
        /// Nodes that can serve it.
        holders: usize,
        /// Their ids.
        nodes: String,
    },
    /// The shard count does not fit the table.
    #[error("table {table:?}: cannot cut {shards} shard(s) from {units} {unit}")]
    BadShardCount {
        /// Table.
        table: String,
        /// Shards asked for.
        shards: u32,
        /// Rows or hash columns available.
        units: u64,
        /// "rows" or "hash columns".
        unit: &'static str,
    },
}

/// What to place.
#[derive(Debug, Clone)]
pub struct PlanRequest<'a> {
    /// Table name.
    pub table: &'a str,
    /// Shards to cut.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// The version to place (`None`: the newest one a live node holds whole, or with
    /// `copy_from_peers` off, the newest one enough live nodes hold whole).
    pub version: Option<u64>,
    /// Place shards on any live node (one without the version copies its shards from a peer
    /// that holds them), not only on nodes holding the version whole.
    pub copy_from_peers: bool,
}

/// Places `req.table` over `nodes` as the map of epoch `epoch`. `previous` is the table's
/// current placement: replicas it had that the new one drops become `leaving`.
pub fn plan_table(
    req: &PlanRequest<'_>,
    nodes: &[&NodeRecord],
    previous: Option<&TableMap>,
    epoch: u64,
) -> Result<TableMap, PlanError> {
    let table = req.table;
    let replicas = req.replicas.max(1);
    // Sources: nodes holding a version whole (a partial copy is not one).
    let whole = |n: &NodeRecord, v: u64| n.held(table).is_some_and(|t| t.version == v && t.whole());
    let versions: BTreeSet<u64> = nodes
        .iter()
        .filter_map(|n| n.held(table).filter(|t| t.whole()).map(|t| t.version))
        .collect();
    if versions.is_empty() {
        return Err(PlanError::NoHolder {
            table: table.into(),
        });
    }
    // Nodes a shard of version `v` may go to: with copies, every live node not serving a newer
    // version of the table; without, the nodes holding `v` whole.
    let candidates_of = |v: u64| -> Vec<&NodeRecord> {
        nodes
            .iter()
            .copied()
            .filter(|n| {
                if req.copy_from_peers {
                    n.held(table).is_none_or(|t| t.version <= v)
                } else {
                    whole(n, v)
                }
            })
            .collect()
    };
    let version = match req.version {
        Some(v) => v,
        None => versions
            .iter()
            .rev()
            .copied()
            .find(|&v| candidates_of(v).len() >= replicas as usize)
            .unwrap_or_else(|| versions.iter().next_back().copied().unwrap_or(0)),
    };
    let Some(held) = nodes
        .iter()
        .find(|n| whole(n, version))
        .and_then(|n| n.held(table))
    else {
        return Err(PlanError::NoHolder {
            table: table.into(),
        });
    };
    let holders = candidates_of(version);
    if holders.len() < replicas as usize {
        return Err(PlanError::TooFewNodes {
            table: table.into(),
            version,
            replicas,
            holders: holders.len(),
            nodes: holders
                .iter()
                .map(|n| n.node_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let cuts = cut(table, held.rows, held.group.as_ref(), req.shards)?;
    let shards = cuts
        .into_iter()
        .enumerate()
        .map(|(i, (start, end, columns))| {
            let chosen = rank(table, i as u32, &holders, replicas as usize);
            let leaving = match previous {
                Some(p) if p.version == version => p
                    .shards
                    .iter()
                    .filter(|s| s.start < end && start < s.end)
                    .flat_map(|s| s.all_replicas())
                    .filter(|id| !chosen.contains(id))
                    .filter(|id| holders.iter().any(|n| &n.node_id == *id))
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                _ => Vec::new(),
            };
            Shard {
                start,
                end,
                columns,
                replicas: chosen,
                leaving,
            }
        })
        .collect();
    Ok(TableMap {
        table: table.into(),
        version,
        rows: held.rows,
        row_bytes: held.row_bytes,
        replicas,
        epoch,
        shards,
    })
}

/// One shard's rows `[start, end)` and, for an Engram layer, its hash columns.
type Cut = (u64, u64, Option<(u32, u32)>);

/// `shards` row ranges of a table: equal row counts, or for an Engram layer, equal numbers of
/// whole hash columns.
fn cut(
    table: &str,
    rows: u64,
    group: Option<&super::map::GroupLayer>,
    shards: u32,
) -> Result<Vec<Cut>, PlanError> {
    let bad = |units: u64, unit| PlanError::BadShardCount {
        table: table.into(),
        shards,
        units,
        unit,
    };
    match group {
        Some(g) if !g.column_offsets.is_empty() => {
            let columns = g.column_offsets.len() as u64;
            if shards == 0 || u64::from(shards) > columns {
                return Err(bad(columns, "hash columns"));
            }
            let row_of =
                |c: u64| -> u64 { g.column_offsets.get(c as usize).copied().unwrap_or(rows) };
            Ok((0..u64::from(shards))
                .map(|i| {
                    let a = columns * i / u64::from(shards);
                    let b = columns * (i + 1) / u64::from(shards);
                    (row_of(a), row_of(b), Some((a as u32, b as u32)))
                })
                .collect())
        }
        _ => {
            if shards == 0 || u64::from(shards) > rows {
                return Err(bad(rows, "rows"));
            }
            let s = u128::from(shards);
            Ok((0..s)
                .map(|i| {
                    let a = (u128::from(rows) * i / s) as u64;
                    let b = (u128::from(rows) * (i + 1) / s) as u64;
                    (a, b, None)
                })
                .collect())
        }
    }
}

/// The `k` nodes with the highest weighted rendezvous score for shard `shard` of `table`.
fn rank(table: &str, shard: u32, nodes: &[&NodeRecord], k: usize) -> Vec<String> {
    let mut scored: Vec<(f64, &str)> = nodes
        .iter()
        .map(|n| {
            let h = stable_hash(&[n.node_id.as_bytes(), table.as_bytes(), &shard.to_le_bytes()]);
            // u in (0, 1): never 0 (ln -inf) nor 1 (ln 0).
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (-n.capacity.weight() / u.ln(), n.node_id.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|(_, id)| id.to_string())
        .collect()
}

/// FNV-1a over the parts (with a separator), finished with splitmix64: stable across builds
/// and platforms, which the placement must be.
fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::map::{Capacity, GroupLayer, HeldTable};

    fn node(id: &str, ram_gib: u64, version: u64) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            addr: format!("{id}:1"),
            capacity: Capacity {
                ram_bytes: ram_gib << 30,
                ..Default::default()
            },
            tables: vec![HeldTable {
                name: "t".into(),
                version,
                rows: 1000,
                row_bytes: 8,
                group: None,
                held_rows: None,
            }],
            ready: true,
            ready_shards: vec![],
            map_epoch: 0,
            route: false,
        }
    }

    fn req(shards: u32, replicas: u32) -> PlanRequest<'static> {
        PlanRequest {
            table: "t",
            shards,
            replicas,
            version: None,
            copy_from_peers: false,
        }
    }

    #[test]
    fn shards_cover_the_rows_with_distinct_replicas() {
        let nodes: Vec<NodeRecord> = (0..4).map(|i| node(&format!("n{i}"), 4, 1)).collect();
        let refs: Vec<&NodeRecord> = nodes.iter().collect();
        let m = plan_table(&req(7, 2), &refs, None, 1).expect("plan");
        assert_eq!(m.shards.first().map(|s| s.start), Some(0));
        assert_eq!(m.shards.last().map(|s| s.end), Some(1000));
        for w in m.shards.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        for s in &m.shards {
            assert_eq!(s.replicas.len(), 2);
            assert_ne!(s.replicas[0], s.replicas[1]);
        }
    }

    #[test]
    fn nodes_without_the_table_get_shards_only_when_they_may_copy_them() {
        let mut nodes: Vec<NodeRecord> = (0..2).map(|i| node(&format!("n{i}"), 4, 1)).collect();
        for i in 2..4 {
            let mut empty = node(&format!("n{i}"), 4, 1);
            empty.tables.clear();
            nodes.push(empty);
        }
        let mut partial = node("n4", 4, 1);
        partial.tables[0].held_rows = Some(vec![(0, 10)]);
        nodes.push(partial);
        let refs: Vec<&NodeRecord> = nodes.iter().collect();
        let on = |m: &TableMap, id: &str| {
            m.shards
                .iter()
                .filter(|s| s.replicas.iter().any(|r| r == id))
                .count()
        };
        let copying = PlanRequest {
            copy_from_peers: true,
            ..req(32, 2)
        };
        let m = plan_table(&copying, &refs, None, 1).expect("plan with copies");
        for id in ["n2", "n3", "n4"] {
            assert!(on(&m, id) > 0, "{id} got no shard");
        }
        let m = plan_table(&req(32, 2), &refs, None, 1).expect("plan without copies");
        for id in ["n2", "n3", "n4"] {
            assert_eq!(on(&m, id), 0, "{id} got a shard it would have to copy");
        }
        // A partial copy is no source: nothing to place when only it holds the version.
        let err = plan_table(&copying, &[&nodes[4], &nodes[2]], None, 1).expect_err("no source");
        assert!(matches!(err, PlanError::NoHolder { .. }), "{err}");
    }

    #[test]
    fn a_join_moves_few_shards_and_keeps_the_old_replica_as_leaving() {
        let mut nodes: Vec<NodeRecord> = (0..4).map(|i| node(&format!("n{i}"), 4, 1)).collect();
        let before = {
            let refs: Vec<&NodeRecord> = nodes.iter().collect();
            plan_table(&req(64, 1), &refs, None, 1).expect("plan")
        };
        nodes.push(node("n4", 4, 1));
        let refs: Vec<&NodeRecord> = nodes.iter().collect();
        let after = plan_table(&req(64, 1), &refs, Some(&before), 2).expect("plan");
        let moved: Vec<_> = before
            .shards
            .iter()
            .zip(&after.shards)
            .filter(|(a, b)| a.replicas != b.replicas)
            .collect();
        // About a fifth of the shards go to the new node, and only to it.
        assert!(!moved.is_empty() && moved.len() < 32, "{}", moved.len());
        for (a, b) in moved {
            assert_eq!(b.replicas, vec!["n4".to_string()]);
            assert_eq!(b.leaving, a.replicas);
        }
    }

    #[test]
    fn capacity_weights_the_share() {
        let nodes = [node("small", 1, 1), node("big", 8, 1)];
        let refs: Vec<&NodeRecord> = nodes.iter().collect();
        let m = plan_table(&req(900, 1), &refs, None, 1).expect("plan");
        let big = m.shards.iter().filter(|s| s.replicas[0] == "big").count();
        assert!(big > 700, "big got {big} of 900");
    }

    #[test]
    fn too_few_holders_and_bad_counts_are_errors() {
        let nodes = [node("a", 1, 1), node("b", 1, 2)];
        let refs: Vec<&NodeRecord> = nodes.iter().collect();
        assert!(matches!(
            plan_table(&req(2, 2), &refs, None, 1),
            Err(PlanError::TooFewNodes { .. })
        ));
        assert!(matches!(
            plan_table(&req(0, 1), &refs, None, 1),
            Err(PlanError::BadShardCount { .. })
        ));
    }

    #[test]
    fn engram_layers_are_cut_between_hash_columns() {
        let mut n = node("a", 1, 1);
        n.tables[0].group = Some(GroupLayer {
            group: "g".into(),
            layer_id: 1,
            column_offsets: vec![0, 100, 250, 400],
        });
        let refs = [&n];
        let m = plan_table(&req(2, 1), &refs, None, 1).expect("plan");
        assert_eq!(
            m.shards
                .iter()
                .map(|s| (s.start, s.end, s.columns))
                .collect::<Vec<_>>(),
            vec![(0, 250, Some((0, 2))), (250, 1000, Some((2, 4)))]
        );
        assert!(plan_table(&req(5, 1), &refs, None, 1).is_err());
    }
}
