//! Follows the cluster in etcd: reads every key under the cluster prefix into a
//! [`ClusterView`], then watches the prefix and re-reads on each change (or when asked, after a
//! node answered with a newer epoch). When etcd is unreachable the last view stays in force and
//! the watcher reconnects with backoff; nodes and clients keep serving from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client as Etcd, ConnectOptions, GetOptions, WatchOptions};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::map::{ClusterMap, ClusterView, GroupRecord, NodeRecord, keys};
use super::ngrams::GroupHashing;

/// How the watcher talks to etcd.
#[derive(Debug, Clone)]
pub struct WatchSettings {
    /// Connection timeout. Default 2 s.
    pub connect_timeout: Duration,
    /// Timeout of one etcd request. Default 2 s.
    pub request_timeout: Duration,
    /// HTTP/2 keepalive to etcd (a cut link is noticed after interval + timeout). Default 1 s.
    pub keepalive: Duration,
    /// First backoff after a failure, doubled up to 2 s.
    pub backoff: Duration,
}

impl Default for WatchSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            keepalive: Duration::from_secs(1),
            backoff: Duration::from_millis(100),
        }
    }
}

impl WatchSettings {
    /// etcd connection options from these settings.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(self.keepalive, self.keepalive)
            .with_keep_alive_while_idle(true)
    }
}

/// A view of the cluster kept current from etcd by a background task (stopped on drop).
#[derive(Debug)]
pub struct MapWatcher {
    rx: watch::Receiver<Arc<ClusterView>>,
    refresh: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Drop for MapWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MapWatcher {
    /// Starts following the cluster at `endpoints` (`http://host:2379`, ...). Returns at once;
    /// the view is empty (revision 0) until the first read.
    pub fn spawn(endpoints: Vec<String>, settings: WatchSettings) -> Self {
        let (tx, rx) = watch::channel(Arc::new(ClusterView::default()));
        let refresh = Arc::new(Notify::new());
        let task = tokio::spawn(follow(endpoints, settings, tx, refresh.clone()));
        Self { rx, refresh, task }
    }

    /// The latest view.
    pub fn view(&self) -> Arc<ClusterView> {
        self.rx.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.rx.clone()
    }

    /// Asks for a re-read now (a node answered with another epoch).
    pub fn refresh(&self) {
        self.refresh.notify_one();
    }

    /// Waits until a view satisfies `ready`, at most `timeout`; returns the last view either way.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&ClusterView) -> bool,
    ) -> Arc<ClusterView> {
        let mut rx = self.rx.clone();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|v| ready(v))).await;
        self.view()
    }
}

async fn follow(
    endpoints: Vec<String>,
    settings: WatchSettings,
    tx: watch::Sender<Arc<ClusterView>>,
    refresh: Arc<Notify>,
) {
    let mut backoff = settings.backoff;
    let mut groups = GroupCache::default();
    loop {
        match follow_once(&endpoints, &settings, &tx, &refresh, &mut groups).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch interrupted; serving from the last map");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        // A success resets the backoff inside follow_once's loop (below) on the next read.
        if tx.is_closed() {
            return;
        }
    }
}

/// Connects, reads, watches until an error (or until nobody listens: `Ok`).
async fn follow_once(
    endpoints: &[String],
    settings: &WatchSettings,
    tx: &watch::Sender<Arc<ClusterView>>,
    refresh: &Notify,
    groups: &mut GroupCache,
) -> Result<(), etcd_client::Error> {
    let mut etcd = Etcd::connect(endpoints, Some(settings.connect_options())).await?;
    let revision = read_view(&mut etcd, tx, groups).await?;
    let mut stream = etcd
        .watch(
            keys::PREFIX,
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(revision + 1),
            ),
        )
        .await?;
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        tokio::select! {
            msg = stream.message() => match msg? {
                Some(r) if r.canceled() => {
                    return Err(etcd_client::Error::WatchError(r.cancel_reason().to_string()));
                }
                Some(_) => {
                    read_view(&mut etcd, tx, groups).await?;
                }
                None => return Err(etcd_client::Error::WatchError("watch ended".into())),
            },
            () = refresh.notified() => {
                read_view(&mut etcd, tx, groups).await?;
            }
        }
    }
}

/// Reads every key of the cluster into a new view and publishes it; returns its revision.
async fn read_view(
    etcd: &mut Etcd,
    tx: &watch::Sender<Arc<ClusterView>>,
    groups: &mut GroupCache,
) -> Result<i64, etcd_client::Error> {
    let resp = etcd
        .get(keys::PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let mut view = ClusterView {
        revision,
        ..Default::default()
    };
    let mut group_parts: HashMap<String, GroupParts> = HashMap::new();
    for kv in resp.kvs() {
        let Ok(key) = std::str::from_utf8(kv.key()) else {
            continue;
        };
        if key == keys::MAP {
            match serde_json::from_slice::<ClusterMap>(kv.value()) {
                Ok(m) => view.map = m,
                Err(e) => tracing::warn!(error = %e, "unreadable shard map in etcd"),
            }
        } else if let Some(id) = key.strip_prefix(keys::NODES) {
            match serde_json::from_slice::<NodeRecord>(kv.value()) {
                Ok(n) => {
                    view.nodes.insert(id.to_string(), n);
                }
                Err(e) => tracing::warn!(node = id, error = %e, "unreadable node record"),
            }
        } else if let Some(rest) = key.strip_prefix(keys::GROUPS)
            && let Some((name, part)) = rest.rsplit_once('/')
        {
            let parts = group_parts.entry(name.to_string()).or_default();
            let slot = match part {
                "meta" => &mut parts.meta,
                "layout" => &mut parts.layout,
                "compress" => &mut parts.compress,
                _ => continue,
            };
            *slot = Some((kv.mod_revision(), kv.value().to_vec()));
        }
    }
    view.groups = groups.update(group_parts);
    let _ = tx.send(Arc::new(view));
    Ok(revision)
}

#[derive(Debug, Default)]
struct GroupParts {
    meta: Option<(i64, Vec<u8>)>,
    layout: Option<(i64, Vec<u8>)>,
    compress: Option<(i64, Vec<u8>)>,
}

/// Parsed groups, kept while their keys are unchanged (the compression map is large).
#[derive(Debug, Default)]
struct GroupCache {
    parsed: HashMap<String, ([i64; 3], Arc<GroupHashing>)>,
}

impl GroupCache {
    fn update(&mut self, parts: HashMap<String, GroupParts>) -> HashMap<String, Arc<GroupHashing>> {
        let mut out = HashMap::new();
        let mut next = HashMap::new();
        for (name, p) in parts {
            let (Some(meta), Some(layout), Some(compress)) = (p.meta, p.layout, p.compress) else {
                continue;
            };
            let stamp = [meta.0, layout.0, compress.0];
            let parsed = match self.parsed.remove(&name) {
                Some((s, g)) if s == stamp => Some(g),
                _ => match GroupHashing::parse(&meta.1, &layout.1, &compress.1) {
                    Ok(g) => Some(Arc::new(g)),
                    Err(e) => {
                        tracing::warn!(group = %name, error = %e, "unreadable group in etcd");
                        None
                    }
                },
            };
            if let Some(g) = parsed {
                out.insert(name.clone(), g.clone());
                next.insert(name, (stamp, g));
            }
        }
        self.parsed = next;
        out
    }
}

/// The group record a node publishes for `name` (used by nodes; here for the key layout).
pub fn group_record(name: &str, layers: impl IntoIterator<Item = (u32, String)>) -> GroupRecord {
    GroupRecord {
        name: name.to_string(),
        layers: layers.into_iter().collect(),
    }
}
