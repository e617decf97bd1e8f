//! The cluster client: follows the shard map in etcd, splits each batch by shard, sends the
//! parts in parallel to a ready replica each (the less loaded of two random choices), hedges a
//! part that has not answered by its p95 with a second replica, fails over on UNAVAILABLE, a
//! deadline or a lagging node, and reassembles the rows in request order. Every part carries
//! the map epoch (`engram-epoch`); a node that does not serve the shard answers
//! FAILED_PRECONDITION with its own epoch, and the client refreshes the map and re-splits what is
//! left. Rows of a version other than the map's are never accepted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::stream::{FuturesUnordered, StreamExt};
use tonic::Code;

use super::map::{ClusterView, TableMap};
use super::replicas::{Latencies, NodeConn, Pool, order};
use super::watcher::{MapWatcher, WatchSettings};
use crate::error::ClientError;
use crate::proto as pb;
use crate::rows::Rows;
use crate::security::Security;

/// Metadata key of the map epoch a routed request was split under.
pub const EPOCH_HEADER: &str = "engram-epoch";

/// Settings of a [`ClusterClient`], with their defaults.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Deadline of one part on one replica; past it, the next replica. Default 2 s.
    pub part_timeout: Duration,
    /// Send a part to a second replica when the first has not answered by the p95 of recent
    /// parts. Default on.
    pub hedge: bool,
    /// Bounds of the hedge delay (the p95 is clamped into them). Default 2 ms ..= 250 ms.
    pub hedge_min: Duration,
    /// See `hedge_min`.
    pub hedge_max: Duration,
    /// Rounds of re-splitting after stale answers before giving up. Default 8.
    pub max_rounds: u32,
    /// How long a node that timed out or was unreachable is tried last. Default 3 s.
    pub suspect_for: Duration,
    /// How long to wait for the first map from etcd at connect. Default 5 s.
    pub map_wait: Duration,
    /// How etcd is followed.
    pub watch: WatchSettings,
    /// TLS and token settings of the connections to the nodes. Default: plaintext, no token.
    pub security: Security,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            part_timeout: Duration::from_secs(2),
            hedge: true,
            hedge_min: Duration::from_millis(2),
            hedge_max: Duration::from_millis(250),
            max_rounds: 8,
            suspect_for: Duration::from_secs(3),
            map_wait: Duration::from_secs(5),
            watch: WatchSettings::default(),
            security: Security::default(),
        }
    }
}

/// A client of a cluster of engram-store nodes, found through etcd. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    watcher: Arc<MapWatcher>,
    settings: ClusterSettings,
    pool: Pool,
    latencies: Latencies,
}

/// How one part ended.
enum PartError {
    /// The map moved under it (or no replica could serve it now): re-split after a refresh.
    Stale(ClientError),
    /// An answer that retrying will not change.
    Fatal(ClientError),
}

impl ClusterClient {
    /// Connects to the cluster whose etcd is at `endpoints` (`http://host:2379`, ...) with
    /// default settings; waits for the first map.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Self, ClientError> {
        Self::connect_with(endpoints, ClusterSettings::default()).await
    }

    /// [`ClusterClient::connect`] with `settings`.
    pub async fn connect_with<S: AsRef<str>>(
        endpoints: &[S],
        settings: ClusterSettings,
    ) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_string()).collect();
        let watcher = Arc::new(MapWatcher::spawn(endpoints.clone(), settings.watch.clone()));
        let view = watcher
            .wait_for(settings.map_wait, |v| v.revision > 0)
            .await;
        if view.revision == 0 {
            return Err(ClientError::Connect {
                addr: endpoints.join(","),
                message: format!("no answer from etcd within {:?}", settings.map_wait),
            });
        }
        Ok(Self::from_watcher(watcher, settings))
    }

    /// A client over an existing watcher (a node routing for plain clients shares its own).
    pub fn from_watcher(watcher: Arc<MapWatcher>, settings: ClusterSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                watcher,
                latencies: Latencies::new(settings.hedge_max / 4),
                pool: Pool::new(settings.security.clone()),
                settings,
            }),
        }
    }

    /// The current view of the cluster.
    pub fn view(&self) -> Arc<ClusterView> {
        self.inner.watcher.view()
    }

    /// The watcher following etcd.
    pub fn watcher(&self) -> &Arc<MapWatcher> {
        &self.inner.watcher
    }

    /// The rows of `ids` in `table`, in order, each from a ready replica of its shard.
    pub async fn lookup(&self, table: &str, ids: &[u64]) -> Result<Rows, ClientError> {
        let s = &self.inner.settings;
        let mut out: Option<(BytesMut, usize, u32, pb::DType, u64)> = None;
        let mut pending: Vec<usize> = (0..ids.len()).collect();
        let mut last = None;
        for round in 0..=s.max_rounds {
            if round > 0 {
                self.refresh_after(last.as_ref()).await;
            }
            let view = self.view();
            let tm = table_map(&view, table)?;
            if let Some(&(_, &bad)) = pending
                .iter()
                .map(|&p| (p, &ids[p]))
                .find(|(_, id)| **id >= tm.rows)
                .as_ref()
            {
                return Err(ClientError::OutOfRange(format!(
                    "row id {bad} of table {table:?} (version {}) with {} rows",
                    tm.version, tm.rows
                )));
            }
            let mut parts: HashMap<usize, Vec<usize>> = HashMap::new();
            for &p in &pending {
                if let Some(shard) = tm.shard_of(ids[p]) {
                    parts.entry(shard).or_default().push(p);
                }
            }
            let mut running: FuturesUnordered<_> = parts
                .into_iter()
                .map(|(shard, positions)| {
                    let part_ids: Vec<u64> = positions.iter().map(|&p| ids[p]).collect();
                    let view = view.clone();
                    async move {
                        let r = self.fetch_part(&view, tm, shard, part_ids).await;
                        (positions, r)
                    }
                })
                .collect();
            let mut again = Vec::new();
            while let Some((positions, result)) = running.next().await {
                match result {
                    Ok(resp) => {
                        let rb = resp.row_bytes as usize;
                        let (buf, row_bytes, ..) = out.get_or_insert_with(|| {
                            (
                                BytesMut::zeroed(ids.len() * rb),
                                rb,
                                resp.row_dim,
                                pb::DType::try_from(resp.dtype)
                                    .unwrap_or(pb::DType::DtypeUnspecified),
                                resp.version,
                            )
                        });
                        if *row_bytes != rb || resp.rows.len() != positions.len() * rb {
                            return Err(ClientError::Protocol(format!(
                                "asked {} rows of {row_bytes} bytes, got {} bytes of {rb}-byte rows",
                                positions.len(),
                                resp.rows.len()
                            )));
                        }
                        for (k, &p) in positions.iter().enumerate() {
                            buf[p * rb..(p + 1) * rb]
                                .copy_from_slice(&resp.rows[k * rb..(k + 1) * rb]);
                        }
                    }
                    Err(PartError::Fatal(e)) => return Err(e),
                    Err(PartError::Stale(e)) => {
                        last = Some(e);
                        again.extend(positions);
                    }
                }
            }
            pending = again;
            if pending.is_empty() {
                let (buf, rb, dim, dtype, version) = out.unwrap_or((
                    BytesMut::new(),
                    tm.row_bytes as usize,
                    0,
                    pb::DType::DtypeUnspecified,
                    tm.version,
                ));
                return Ok(Rows::new(buf.freeze(), rb, dim, dtype, version));
            }
        }
        Err(last.unwrap_or_else(|| {
            ClientError::Unavailable(format!("table {table:?}: no replica answered"))
        }))
    }

    /// Refreshes the map (after a stale answer) and waits briefly for a newer revision.
    async fn refresh_after(&self, last: Option<&ClientError>) {
        let before = self.view().revision;
        self.inner.watcher.refresh();
        let wait = match last {
            Some(e) if e.code() == Code::FailedPrecondition => Duration::from_millis(200),
            _ => Duration::from_millis(50),
        };
        self.inner
            .watcher
            .wait_for(wait, |v| v.revision > before)
            .await;
    }

    /// One shard's part: replicas in order, a hedge after the p95, failover on errors.
    async fn fetch_part(
        &self,
        view: &ClusterView,
        tm: &TableMap,
        shard: usize,
        ids: Vec<u64>,
    ) -> Result<pb::LookupResponse, PartError> {
        let s = &self.inner.settings;
        let mut candidates: Vec<Arc<NodeConn>> = view
            .ready_replicas(tm, shard)
            .filter_map(|n| self.inner.pool.get(&n.node_id, &n.addr).ok())
            .collect();
        if candidates.is_empty() {
            return Err(PartError::Stale(ClientError::Unavailable(format!(
                "no ready replica of shard {shard} of table {:?} v{}",
                tm.table, tm.version
            ))));
        }
        candidates = order(candidates);
        let request = pb::LookupRequest {
            table: tm.table.clone(),
            ids,
            ..Default::default()
        };
        let epoch = view.map.epoch;
        let hedge_after = self
            .inner
            .latencies
            .p95()
            .clamp(s.hedge_min, s.hedge_max.max(s.hedge_min));
        let mut next = candidates.into_iter();
        let mut running = FuturesUnordered::new();
        let launch = |node: Arc<NodeConn>| {
            let request = request.clone();
            let timeout = s.part_timeout;
            async move {
                let _guard = node.start();
                let started = Instant::now();
                let mut req = tonic::Request::new(request);
                req.set_timeout(timeout);
                if let Ok(v) = epoch.to_string().parse() {
                    req.metadata_mut().insert(EPOCH_HEADER, v);
                }
                let mut stub = node.stub.clone();
                let r = tokio::time::timeout(timeout, stub.lookup(req)).await;
                let r = match r {
                    Ok(r) => r.map(tonic::Response::into_inner),
                    Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                        "no answer from {} within {timeout:?}",
                        node.id
                    ))),
                };
                (node, started.elapsed(), r)
            }
        };
        if let Some(first) = next.next() {
            running.push(launch(first));
        }
        let mut hedged = !s.hedge;
        let mut last: Option<ClientError> = None;
        let mut stale = false;
        loop {
            let hedge = tokio::time::sleep(hedge_after);
            tokio::select! {
                done = running.next() => {
                    let Some((node, took, result)) = done else {
                        let e = last.unwrap_or_else(|| ClientError::Unavailable("no replica".into()));
                        return Err(if stale || is_stale(e.code()) { PartError::Stale(e) } else { PartError::Fatal(e) });
                    };
                    match result {
                        Ok(resp) if resp.version == tm.version => {
                            node.healthy();
                            self.inner.latencies.record(took);
                            return Ok(resp);
                        }
                        Ok(resp) => {
                            stale = true;
                            last = Some(ClientError::Status {
                                code: Code::FailedPrecondition,
                                message: format!(
                                    "{} served version {} of {:?}, the map places version {}",
                                    node.id, resp.version, tm.table, tm.version
                                ),
                            });
                        }
                        Err(status) => {
                            let code = status.code();
                            if matches!(code, Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown) {
                                node.suspect(s.suspect_for);
                            }
                            if code == Code::FailedPrecondition {
                                stale = true;
                            }
                            if is_fatal(code) {
                                return Err(PartError::Fatal(status.into()));
                            }
                            last = Some(status.into());
                        }
                    }
                    if let Some(n) = next.next() {
                        running.push(launch(n));
                    }
                }
                () = hedge, if !hedged => {
                    hedged = true;
                    if let Some(n) = next.next() {
                        running.push(launch(n));
                    }
                }
            }
        }
    }

    /// Brings `ids` of `table` into the fastest tier of every ready replica of their shards;
    /// returns the distinct rows accepted (the most any replica of a shard accepted, summed).
    pub async fn prefetch(&self, table: &str, ids: &[u64]) -> Result<u64, ClientError> {
        let view = self.view();
        let tm = table_map(&view, table)?;
        let mut parts: HashMap<usize, Vec<u64>> = HashMap::new();
        for &id in ids {
            if let Some(shard) = tm.shard_of(id) {
                parts.entry(shard).or_default().push(id);
            }
        }
        let epoch = view.map.epoch;
        let calls = parts.into_iter().map(|(shard, part)| {
            let nodes: Vec<Arc<NodeConn>> = view
                .ready_replicas(tm, shard)
                .filter_map(|n| self.inner.pool.get(&n.node_id, &n.addr).ok())
                .collect();
            async move {
                let each = nodes.into_iter().map(|node| {
                    let mut req = tonic::Request::new(pb::PrefetchRequest {
                        target: Some(pb::prefetch_request::Target::Rows(pb::PrefetchRows {
                            table: tm.table.clone(),
                            ids: part.clone(),
                            ..Default::default()
                        })),
                    });
                    req.set_timeout(self.inner.settings.part_timeout);
                    if let Ok(v) = epoch.to_string().parse() {
                        req.metadata_mut().insert(EPOCH_HEADER, v);
                    }
                    let mut stub = node.stub.clone();
                    async move {
                        stub.prefetch(req)
                            .await
                            .map(|r| r.into_inner().accepted_rows)
                    }
                });
                futures::future::join_all(each)
                    .await
                    .into_iter()
                    .filter_map(Result::ok)
                    .max()
                    .unwrap_or(0)
            }
        });
        Ok(futures::future::join_all(calls).await.into_iter().sum())
    }

    /// The rows an Engram layer consumes for `sequences` of raw token ids (as
    /// [`crate::Client::lookup_ngrams`]), hashed here and routed by the rows they resolve to.
    pub async fn lookup_ngrams(
        &self,
        group: &str,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
    ) -> Result<Rows, ClientError> {
        self.lookup_ngrams_request(&pb::LookupNgramsRequest {
            group: group.to_owned(),
            layer_id,
            sequences: sequences.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// [`ClusterClient::lookup_ngrams`] for a full request (compressed ids, a column range).
    pub async fn lookup_ngrams_request(
        &self,
        req: &pb::LookupNgramsRequest,
    ) -> Result<Rows, ClientError> {
        let (table, ids) = self.ngram_rows(req)?;
        self.lookup(&table, &ids).await
    }

    /// Prefetches the rows `sequences` read in layer `layer_id` of `group`.
    pub async fn prefetch_ngrams(
        &self,
        group: &str,
        layer_id: u32,
        sequences: &[pb::TokenSequence],
    ) -> Result<u64, ClientError> {
        let (table, ids) = self.ngram_rows(&pb::LookupNgramsRequest {
            group: group.to_owned(),
            layer_id,
            sequences: sequences.to_vec(),
            ..Default::default()
        })?;
        self.prefetch(&table, &ids).await
    }

    fn ngram_rows(&self, req: &pb::LookupNgramsRequest) -> Result<(String, Vec<u64>), ClientError> {
        let view = self.view();
        let Some(g) = view.groups.get(&req.group) else {
            return Err(ClientError::NotFound(format!(
                "Engram group {:?} is not in the cluster (no node has published it)",
                req.group
            )));
        };
        let columns = req
            .columns
            .as_ref()
            .map(|c| c.start as usize..c.end as usize);
        let (table, ids) = g.rows(req.layer_id, &req.sequences, req.compressed, columns)?;
        Ok((table.to_string(), ids))
    }
}

fn table_map<'a>(view: &'a ClusterView, table: &str) -> Result<&'a TableMap, ClientError> {
    view.map.tables.get(table).ok_or_else(|| {
        ClientError::NotFound(format!(
            "table {table:?} is not in the cluster map (epoch {}): plan it with `engram-store \
             cluster plan`",
            view.map.epoch
        ))
    })
}

/// Codes no other replica would answer differently.
fn is_fatal(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::OutOfRange | Code::Unauthenticated | Code::PermissionDenied
    )
}

/// Codes after which a refreshed map may help.
fn is_stale(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::FailedPrecondition | Code::Cancelled
    )
}
