//! A node's membership: registers under an etcd lease (address, capacity per tier, the table
//! versions in its data directory, the shards it serves, ready or not) and keeps the lease
//! alive, so a node that dies leaves the cluster when its lease expires. It follows the shard
//! map, loads the shards it is given from its local data directory, or copies them from a peer
//! that holds them ([`super::peer_copy`]) when it does not, warms them, and only then lists them
//! as ready.
//! A shard it loses is dropped when the map no longer names it (the planner keeps an old
//! replica as `leaving` until its replacement is ready). If etcd is unreachable the node keeps
//! serving from the last map and re-registers when etcd is back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use engram_store_client::cluster::map::{
    Capacity, ClusterView, GroupLayer, HeldTable, NodeRecord, ShardRef, TableMap, keys,
};
use engram_store_client::cluster::watcher::{MapWatcher, WatchSettings, group_record};
use engram_store_client::{ClientBuilder, ClusterSettings};
use etcd_client::{Client as Etcd, Compare, CompareOp, PutOptions, Txn, TxnOp};
use parking_lot::RwLock;
use tokio::sync::Notify;

use super::ClusterOptions;
use super::peer_copy::{Copied, ShardCopy, copy_group_dir};
use super::shard_release::release_rows;
use crate::engine::Engine;
use crate::table::HeldRows;

/// A node of a cluster: its registration, its view of the map and the shards it serves.
#[derive(Debug)]
pub struct ClusterNode {
    options: ClusterOptions,
    engine: Arc<Engine>,
    watcher: Arc<MapWatcher>,
    router: engram_store_client::ClusterClient,
    ready: RwLock<Arc<ReadySet>>,
    changed: Notify,
}

/// The shards a node serves now, at the epoch it acted on.
#[derive(Debug, Default)]
pub struct ReadySet {
    /// Map epoch.
    pub epoch: u64,
    /// Shards loaded and warmed.
    pub shards: HashSet<ShardRef>,
    /// True when every shard the map gives the node is in `shards`.
    pub complete: bool,
}

impl ClusterNode {
    /// Joins the cluster: starts following the map, registering and warming in the background.
    pub fn start(engine: Arc<Engine>, options: ClusterOptions) -> Arc<Self> {
        let watch = WatchSettings::default();
        let watcher = Arc::new(MapWatcher::spawn(options.etcd.clone(), watch.clone()));
        let router = engram_store_client::ClusterClient::from_watcher(
            watcher.clone(),
            ClusterSettings {
                watch,
                security: options.security.clone(),
                ..Default::default()
            },
        );
        let node = Arc::new(Self {
            options,
            engine,
            watcher,
            router,
            ready: RwLock::new(Arc::new(ReadySet::default())),
            changed: Notify::new(),
        });
        tokio::spawn(register_loop(Arc::downgrade(&node)));
        tokio::spawn(assign_loop(Arc::downgrade(&node)));
        node
    }

    /// The node's options.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The node's view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        self.watcher.view()
    }

    /// The shards it serves now.
    pub fn ready(&self) -> Arc<ReadySet> {
        self.ready.read().clone()
    }

    /// The router it forwards through (`--route`).
    pub fn router(&self) -> &engram_store_client::ClusterClient {
        &self.router
    }

    /// The engine it serves from.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Its record, as it would publish it now.
    pub fn record(&self) -> NodeRecord {
        let ready = self.ready();
        let mut ready_shards: Vec<ShardRef> = ready.shards.iter().cloned().collect();
        ready_shards.sort();
        NodeRecord {
            node_id: self.options.node_id.clone(),
            addr: self.options.advertise.clone(),
            capacity: self.capacity(),
            tables: self.held_tables(),
            ready: ready.complete,
            ready_shards,
            map_epoch: ready.epoch,
            route: self.options.route,
        }
    }

    fn capacity(&self) -> Capacity {
        let c = self.engine.config();
        Capacity {
            ram_bytes: c.ram_cache_bytes,
            gpu_bytes: c.gpu_budget_bytes,
            disk_bytes: self
                .engine
                .tables()
                .map(|t| t.manifest().data_bytes())
                .sum(),
        }
    }

    fn held_tables(&self) -> Vec<HeldTable> {
        let mut layers = std::collections::HashMap::new();
        for g in self.engine.groups() {
            for l in g.layers() {
                if let Some(spec) = g.layout().layer(l.layer_id()) {
                    layers.insert(
                        l.table().manifest().name.clone(),
                        GroupLayer {
                            group: g.name().to_string(),
                            layer_id: l.layer_id(),
                            column_offsets: spec.offsets().to_vec(),
                        },
                    );
                }
            }
        }
        self.engine
            .tables()
            .map(|t| {
                let m = t.manifest();
                HeldTable {
                    name: m.name.clone(),
                    version: m.version,
                    rows: m.rows,
                    row_bytes: m.row_bytes,
                    group: layers.remove(&m.name),
                    held_rows: t
                        .held_rows()
                        .map(|h| h.ranges().map(|r| (r.start, r.end)).collect()),
                }
            })
            .collect()
    }

    /// The shards of `tm` this node is given by the map (replica or leaving).
    fn assigned(&self, tm: &TableMap) -> Vec<usize> {
        tm.shards
            .iter()
            .enumerate()
            .filter(|(_, s)| s.all_replicas().any(|id| *id == self.options.node_id))
            .map(|(i, _)| i)
            .collect()
    }

    /// True when this node serves every row of `ids` of `table` at the version the map places
    /// (its own map; the epoch a client sent does not matter when the version agrees).
    pub fn serves_rows(&self, table: &str, ids: &[u64]) -> bool {
        let view = self.view();
        let Some(tm) = view.map.tables.get(table) else {
            return false;
        };
        let ready = self.ready();
        let mut last = usize::MAX;
        for &id in ids {
            let Some(shard) = tm.shard_of(id) else {
                // Past the end: the engine answers OUT_OF_RANGE.
                continue;
            };
            if shard != last {
                if !ready.shards.contains(&tm.shard_ref(shard)) {
                    return false;
                }
                last = shard;
            }
        }
        true
    }

    /// True when this node serves every shard of `table`.
    pub fn serves_whole(&self, table: &str) -> bool {
        let view = self.view();
        let Some(tm) = view.map.tables.get(table) else {
            return false;
        };
        let ready = self.ready();
        (0..tm.shards.len()).all(|i| ready.shards.contains(&tm.shard_ref(i)))
    }

    /// Loads and warms the shards the map `view` gives this node; returns the new ready set.
    async fn assign(&self, view: &ClusterView) -> ReadySet {
        let current = self.ready();
        let mut next = HashSet::new();
        let mut complete = true;
        for tm in view.map.tables.values() {
            for i in self.assigned(tm) {
                let shard = tm.shard_ref(i);
                if current.shards.contains(&shard) {
                    next.insert(shard);
                    continue;
                }
                let loaded = match self.load(view, tm, i).await {
                    Ok(()) => self.warm(tm, i).await.map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                match loaded {
                    Ok(()) => {
                        next.insert(shard);
                    }
                    Err(e) => {
                        complete = false;
                        tracing::warn!(table = %tm.table, shard = i, error = %e, "loading a shard failed");
                    }
                }
            }
            self.release_moved(tm);
        }
        ReadySet {
            epoch: view.map.epoch,
            shards: next,
            complete,
        }
    }

    /// Gives back the rows of a partial copy of `tm`'s version that the map no longer gives
    /// this node (its shards moved to others and their replacements are ready: the planner
    /// drops a leaving replica only then). Data the node holds whole is never released.
    fn release_moved(&self, tm: &TableMap) {
        let Ok(t) = self.engine.table(&tm.table) else {
            return;
        };
        if t.version() != tm.version {
            return;
        }
        let keep = HeldRows::new(
            self.assigned(tm)
                .into_iter()
                .map(|i| tm.shards[i].start..tm.shards[i].end),
        );
        match release_rows(&t, &keep) {
            Ok(0) => {}
            Ok(rows) => tracing::info!(table = %tm.table, version = tm.version, rows,
                "released the rows of shards moved to other nodes"),
            Err(e) => tracing::warn!(table = %tm.table, error = %e,
                "releasing the rows of shards moved away failed"),
        }
    }

    /// Makes shard `i` of `tm` servable here: the version it places, served now, holding the
    /// shard's rows; copied from a peer that holds them when the data directory does not.
    async fn load(&self, view: &ClusterView, tm: &TableMap, i: usize) -> Result<(), String> {
        let s = &tm.shards[i];
        let rows = s.start..s.end;
        let served = |node: &Self| -> Result<bool, String> {
            match node.engine.table(&tm.table) {
                Ok(t) if t.version() == tm.version => Ok(t.holds(&rows)),
                Ok(t) if t.version() > tm.version => Err(format!(
                    "this node serves version {} of {:?}, newer than version {} the map places",
                    t.version(),
                    tm.table,
                    tm.version
                )),
                _ => Ok(false),
            }
        };
        if served(self)? {
            return Ok(());
        }
        let copy = ShardCopy {
            data_dir: &self.engine.config().data_dir,
            table: &tm.table,
            version: tm.version,
            rows: rows.clone(),
        };
        let mut failures = Vec::new();
        for (peer, addr) in self.sources(view, tm, i) {
            let started = std::time::Instant::now();
            let connected = ClientBuilder::new(addr.as_str())
                .security(self.options.security.clone())
                .connect()
                .await;
            // The group of an Engram layer table: its directory comes along with the shard.
            let group = view
                .nodes
                .get(&peer)
                .and_then(|n| n.held(&tm.table))
                .and_then(|t| t.group.as_ref())
                .map(|g| g.group.clone());
            let mut group_new = false;
            let copied = match connected {
                Ok(client) => {
                    let copied = copy.from_peer(&client, &addr).await;
                    if let (Ok(_), Some(group)) = (&copied, &group) {
                        let data_dir = &self.engine.config().data_dir;
                        match copy_group_dir(&client, &addr, data_dir, group).await {
                            Ok(new) => group_new = new,
                            Err(e) => tracing::warn!(group = %group, from = %peer, error = %e,
                                "the Engram group's directory was not copied: LookupNgrams is not \
                                 served here"),
                        }
                    }
                    copied.map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            };
            let reload = match copied {
                Ok(Copied::Extended) => {
                    if let Ok(t) = self.engine.table(&tm.table)
                        && t.version() == tm.version
                    {
                        t.extend_held(rows.clone());
                    }
                    group_new
                }
                Ok(Copied::NewVersion | Copied::AlreadyHeld) => true,
                Err(e) => {
                    failures.push(format!("{peer}: {e}"));
                    continue;
                }
            };
            // Every table and group looked at: a group opens once its tables are there.
            if reload && let Err(e) = self.engine.reload(&[], true).await {
                failures.push(format!("{peer}: loading the copy: {e}"));
                continue;
            }
            if served(self)? {
                tracing::info!(table = %tm.table, version = tm.version, shard = i, from = %peer,
                    rows = rows.end - rows.start, took_ms = started.elapsed().as_millis() as u64,
                    "copied a shard from a peer");
                return Ok(());
            }
            failures.push(format!(
                "{peer}: copied, but the engine does not serve the rows"
            ));
        }
        if failures.is_empty() {
            return Err(format!(
                "no live node holds rows {}..{} of {:?} version {} to copy from",
                rows.start, rows.end, tm.table, tm.version
            ));
        }
        Err(failures.join("; "))
    }

    /// Peers (id, address) holding every row of shard `i` of `tm`: its ready replicas first.
    fn sources(&self, view: &ClusterView, tm: &TableMap, i: usize) -> Vec<(String, String)> {
        let s = &tm.shards[i];
        let mut peers: Vec<(bool, String, String)> = view
            .nodes
            .values()
            .filter(|n| n.node_id != self.options.node_id)
            .filter(|n| {
                n.held(&tm.table)
                    .is_some_and(|t| t.version == tm.version && t.holds(s.start, s.end))
            })
            .map(|n| {
                let ready = n.ready_shards.contains(&tm.shard_ref(i));
                (!ready, n.node_id.clone(), n.addr.clone())
            })
            .collect();
        peers.sort();
        peers.into_iter().map(|(_, id, addr)| (id, addr)).collect()
    }

    /// Brings up to `warm_rows` rows of shard `i`, spread over its range, into the fastest tier.
    async fn warm(&self, tm: &TableMap, i: usize) -> Result<(), crate::engine::LookupError> {
        let table = self.engine.table(&tm.table)?;
        let s = &tm.shards[i];
        let n = (s.end - s.start).min(self.options.warm_rows);
        if n == 0 {
            return Ok(());
        }
        let step = ((s.end - s.start) / n).max(1);
        let ids: Vec<u64> = (0..n).map(|k| s.start + k * step).collect();
        table.prefetch(&ids).await.map(|_| ())
    }
}

/// Follows the map and keeps the ready set current.
async fn assign_loop(node: std::sync::Weak<ClusterNode>) {
    let Some(mut rx) = node.upgrade().map(|n| n.watcher.subscribe()) else {
        return;
    };
    loop {
        let view = rx.borrow_and_update().clone();
        let Some(n) = node.upgrade() else {
            return;
        };
        if view.revision > 0 {
            let ready = n.assign(&view).await;
            let changed = {
                let cur = n.ready();
                cur.shards != ready.shards
                    || cur.complete != ready.complete
                    || cur.epoch != ready.epoch
            };
            if changed {
                tracing::info!(
                    epoch = ready.epoch,
                    shards = ready.shards.len(),
                    "serving shards"
                );
                *n.ready.write() = Arc::new(ready);
                n.changed.notify_one();
            }
        }
        drop(n);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Registers under a lease, keeps it alive and republishes the record when it changes; starts
/// over (a new lease) after any etcd failure.
async fn register_loop(node: std::sync::Weak<ClusterNode>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(n) = node.upgrade() else {
            return;
        };
        match register_once(&n).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "etcd registration interrupted; retrying");
            }
        }
        drop(n);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn register_once(n: &Arc<ClusterNode>) -> Result<(), etcd_client::Error> {
    let o = &n.options;
    let ttl = o.lease_ttl.as_secs().max(1);
    let mut etcd = Etcd::connect(&o.etcd, Some(WatchSettings::default().connect_options())).await?;
    let lease = etcd.lease_grant(ttl as i64, None).await?.id();
    publish_groups(n, &mut etcd).await?;
    let mut published = n.record();
    put_record(&mut etcd, &published, lease).await?;
    tracing::info!(node = %o.node_id, lease, ttl, "registered in etcd");
    let (mut keeper, mut answers) = etcd.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(Duration::from_millis((ttl * 1000 / 3).max(200)));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                keeper.keep_alive().await?;
                let record = n.record();
                if record != published {
                    put_record(&mut etcd, &record, lease).await?;
                    published = record;
                }
            }
            answer = answers.message() => match answer? {
                Some(a) if a.ttl() > 0 => {}
                _ => return Err(etcd_client::Error::LeaseKeepAliveError("lease expired".into())),
            },
            () = n.changed.notified() => {
                let record = n.record();
                if record != published {
                    put_record(&mut etcd, &record, lease).await?;
                    published = record;
                }
            }
        }
    }
}

async fn put_record(
    etcd: &mut Etcd,
    record: &NodeRecord,
    lease: i64,
) -> Result<(), etcd_client::Error> {
    let value =
        serde_json::to_vec(record).map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
    etcd.put(
        keys::node(&record.node_id),
        value,
        Some(PutOptions::new().with_lease(lease)),
    )
    .await?;
    Ok(())
}

/// Publishes what clients need to hash each group's n-grams (record, layout, compression
/// map), each only when it differs from what etcd holds.
async fn publish_groups(n: &ClusterNode, etcd: &mut Etcd) -> Result<(), etcd_client::Error> {
    let data = &n.engine.config().data_dir;
    for g in n.engine.groups() {
        let name = g.name();
        let record = group_record(
            name,
            g.layers()
                .map(|l| (l.layer_id(), l.table().manifest().name.clone())),
        );
        let layout = g
            .layout()
            .to_json()
            .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
        let map_path = data
            .join(format!("{name}{}", crate::group::GROUP_DIR_SUFFIX))
            .join(crate::group::MAP_FILE);
        let compress = match std::fs::read(&map_path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(group = name, path = %map_path.display(), error = %e, "group not published");
                continue;
            }
        };
        let meta = serde_json::to_vec(&record)
            .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?;
        for (key, value) in [
            (keys::group_meta(name), meta),
            (keys::group_layout(name), layout.into_bytes()),
            (keys::group_compress(name), compress),
        ] {
            etcd.txn(
                Txn::new()
                    .when([Compare::value(
                        key.clone(),
                        CompareOp::NotEqual,
                        value.clone(),
                    )])
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]),
            )
            .await?;
            // A missing key compares unequal to nothing: put it if it is absent too.
            etcd.txn(
                Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]),
            )
            .await?;
        }
    }
    Ok(())
}
