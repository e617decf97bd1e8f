//! `engram-store cluster plan` and `cluster show`. A plan reads the live nodes and the map,
//! places the table (or every layer table of an Engram group) with the rendezvous placement,
//! and publishes the result as the next map epoch in one etcd transaction that succeeds only if
//! the map is still the one it read. It then waits for the new replicas to report ready and
//! publishes one more epoch without the `leaving` replicas, so a replica is dropped only once
//! its replacement serves.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use engram_store_client::cluster::map::{ClusterMap, NodeRecord, TableMap, keys};
use engram_store_client::cluster::placement::{PlanRequest, plan_table};
use engram_store_client::cluster::watcher::WatchSettings;
use etcd_client::{Client as Etcd, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::ClusterError;

/// What `cluster plan` places.
#[derive(Debug, Clone)]
pub struct PlanArgs {
    /// Table, or Engram group (each of its layer tables is placed).
    pub table: String,
    /// Shards per table.
    pub shards: u32,
    /// Replicas per shard.
    pub replicas: u32,
    /// Version to place (default: the newest enough nodes hold).
    pub version: Option<u64>,
    /// How long to wait for the new replicas before dropping the leaving ones (0: do not).
    pub wait: Duration,
    /// Give shards to nodes that do not hold the version too: they copy them from a peer.
    pub copy_from_peers: bool,
}

/// What a plan published.
#[derive(Debug, Clone)]
pub struct PlanOutcome {
    /// The epoch of the placement.
    pub epoch: u64,
    /// The epoch without the leaving replicas, if it was published.
    pub settled_epoch: Option<u64>,
    /// The placed tables.
    pub tables: Vec<TableMap>,
    /// Shards (over all tables) whose replicas changed from the previous map.
    pub moved: usize,
}

/// The map, its etcd mod revision (0: absent) and the live nodes.
pub async fn read_cluster(
    etcd: &mut Etcd,
) -> Result<(ClusterMap, i64, Vec<NodeRecord>), ClusterError> {
    let resp = etcd.get(keys::MAP, None).await?;
    let (map, rev) = match resp.kvs().first() {
        Some(kv) => (
            serde_json::from_slice(kv.value()).map_err(|source| ClusterError::Record {
                what: "shard map".into(),
                source,
            })?,
            kv.mod_revision(),
        ),
        None => (ClusterMap::default(), 0),
    };
    let resp = etcd
        .get(keys::NODES, Some(GetOptions::new().with_prefix()))
        .await?;
    let mut nodes = Vec::new();
    for kv in resp.kvs() {
        nodes.push(
            serde_json::from_slice::<NodeRecord>(kv.value()).map_err(|source| {
                ClusterError::Record {
                    what: format!("node record {}", String::from_utf8_lossy(kv.key())),
                    source,
                }
            })?,
        );
    }
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    Ok((map, rev, nodes))
}

async fn connect(endpoints: &[String]) -> Result<Etcd, ClusterError> {
    Ok(Etcd::connect(endpoints, Some(WatchSettings::default().connect_options())).await?)
}

/// Publishes `map` if the map key is still at `rev`.
async fn publish(etcd: &mut Etcd, map: &ClusterMap, rev: i64) -> Result<bool, ClusterError> {
    let value = serde_json::to_vec(map).map_err(|source| ClusterError::Record {
        what: "shard map".into(),
        source,
    })?;
    let r = etcd
        .txn(
            Txn::new()
                .when([Compare::mod_revision(keys::MAP, CompareOp::Equal, rev)])
                .and_then([TxnOp::put(keys::MAP, value, None)]),
        )
        .await?;
    Ok(r.succeeded())
}

/// The tables `name` stands for: itself, or the layer tables of the group of that name.
fn tables_named(name: &str, nodes: &[NodeRecord]) -> Vec<String> {
    if nodes.iter().any(|n| n.held(name).is_some()) {
        return vec![name.to_string()];
    }
    let mut layers: Vec<(u32, String)> = nodes
        .iter()
        .flat_map(|n| &n.tables)
        .filter_map(|t| {
            t.group
                .as_ref()
                .filter(|g| g.group == name)
                .map(|g| (g.layer_id, t.name.clone()))
        })
        .collect();
    layers.sort();
    layers.dedup();
    layers.into_iter().map(|(_, t)| t).collect()
}

/// Computes and publishes the placement of `args.table` as a new map epoch.
pub async fn plan(endpoints: &[String], args: &PlanArgs) -> Result<PlanOutcome, ClusterError> {
    let mut etcd = connect(endpoints).await?;
    let mut outcome = None;
    for _ in 0..5 {
        let (map, rev, nodes) = read_cluster(&mut etcd).await?;
        let names = tables_named(&args.table, &nodes);
        if names.is_empty() {
            return Err(ClusterError::UnknownTable(args.table.clone()));
        }
        let live: Vec<&NodeRecord> = nodes.iter().collect();
        let mut next = map.clone();
        next.epoch = map.epoch + 1;
        let mut placed = Vec::new();
        let mut moved = 0;
        for name in &names {
            let previous = map.tables.get(name);
            let tm = plan_table(
                &PlanRequest {
                    table: name,
                    shards: args.shards,
                    replicas: args.replicas,
                    version: args.version,
                    copy_from_peers: args.copy_from_peers,
                },
                &live,
                previous,
                next.epoch,
            )?;
            moved += match previous {
                Some(p) if p.shards.len() == tm.shards.len() && p.version == tm.version => p
                    .shards
                    .iter()
                    .zip(&tm.shards)
                    .filter(|(a, b)| a.replicas != b.replicas)
                    .count(),
                _ => tm.shards.len(),
            };
            next.tables.insert(name.clone(), tm.clone());
            placed.push(tm);
        }
        if publish(&mut etcd, &next, rev).await? {
            outcome = Some(PlanOutcome {
                epoch: next.epoch,
                settled_epoch: None,
                tables: placed,
                moved,
            });
            break;
        }
    }
    let Some(mut outcome) = outcome else {
        return Err(ClusterError::Contended(5));
    };
    if args.wait > Duration::ZERO && outcome.tables.iter().any(has_leaving) {
        outcome.settled_epoch = settle(&mut etcd, &outcome, args.wait).await?;
    }
    Ok(outcome)
}

fn has_leaving(tm: &TableMap) -> bool {
    tm.shards.iter().any(|s| !s.leaving.is_empty())
}

/// Waits (at most `wait`) until every new replica of the placed tables is ready, then drops
/// the leaving replicas of the shards whose replicas all serve, as one more epoch.
async fn settle(
    etcd: &mut Etcd,
    outcome: &PlanOutcome,
    wait: Duration,
) -> Result<Option<u64>, ClusterError> {
    let deadline = Instant::now() + wait;
    loop {
        let (mut map, rev, nodes) = read_cluster(etcd).await?;
        let mut changed = false;
        let mut waiting = false;
        for placed in &outcome.tables {
            let Some(tm) = map.tables.get_mut(&placed.table) else {
                continue;
            };
            if tm.epoch != placed.epoch {
                // Re-planned since: that plan settles it.
                continue;
            }
            for i in 0..tm.shards.len() {
                let shard = tm.shard_ref(i);
                let s = &mut tm.shards[i];
                if s.leaving.is_empty() {
                    continue;
                }
                let all_ready = s
                    .replicas
                    .iter()
                    .all(|id| nodes.iter().any(|n| &n.node_id == id && n.serves(&shard)));
                if all_ready {
                    s.leaving.clear();
                    changed = true;
                } else {
                    waiting = true;
                }
            }
        }
        if changed && !waiting {
            map.epoch += 1;
            if publish(etcd, &map, rev).await? {
                return Ok(Some(map.epoch));
            }
            continue;
        }
        if !waiting {
            return Ok(None);
        }
        if Instant::now() >= deadline {
            if changed {
                map.epoch += 1;
                if publish(etcd, &map, rev).await? {
                    return Ok(Some(map.epoch));
                }
            }
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The map and the live nodes, as text.
pub async fn show(endpoints: &[String]) -> Result<String, ClusterError> {
    let mut etcd = connect(endpoints).await?;
    let (map, _, nodes) = read_cluster(&mut etcd).await?;
    let mut out = String::new();
    let _ = writeln!(out, "map epoch {}", map.epoch);
    for tm in map.tables.values() {
        let _ = writeln!(
            out,
            "table {} v{}: {} rows x {} B, {} shard(s) x {} replica(s) (epoch {})",
            tm.table,
            tm.version,
            tm.rows,
            tm.row_bytes,
            tm.shards.len(),
            tm.replicas,
            tm.epoch
        );
        for (i, s) in tm.shards.iter().enumerate() {
            let shard = tm.shard_ref(i);
            let mark = |id: &String| {
                let ready = nodes.iter().any(|n| &n.node_id == id && n.serves(&shard));
                let live = nodes.iter().any(|n| &n.node_id == id);
                format!(
                    "{id}{}",
                    match (live, ready) {
                        (false, _) => " (gone)",
                        (true, false) => " (loading)",
                        (true, true) => "",
                    }
                )
            };
            let columns = s
                .columns
                .map(|(a, b)| format!(" columns [{a}, {b})"))
                .unwrap_or_default();
            let leaving = if s.leaving.is_empty() {
                String::new()
            } else {
                format!(
                    "; leaving: {}",
                    s.leaving.iter().map(mark).collect::<Vec<_>>().join(", ")
                )
            };
            let _ = writeln!(
                out,
                "  shard {i}: rows [{}, {}){columns}: {}{leaving}",
                s.start,
                s.end,
                s.replicas.iter().map(mark).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let _ = writeln!(out, "{} live node(s)", nodes.len());
    for n in &nodes {
        let tables: Vec<String> = n
            .tables
            .iter()
            .map(|t| format!("{} v{}", t.name, t.version))
            .collect();
        let _ = writeln!(
            out,
            "  {} at {}: {}, {} shard(s) ready at epoch {}, RAM {} GiB, tables: {}{}",
            n.node_id,
            n.addr,
            if n.ready { "ready" } else { "loading" },
            n.ready_shards.len(),
            n.map_epoch,
            n.capacity.ram_bytes >> 30,
            tables.join(", "),
            if n.route { ", routes" } else { "" }
        );
    }
    Ok(out)
}
