//! Shared by the cluster tests: a real etcd (Debian's `etcd-server`) on addresses the test
//! picks, stopped when dropped, free ports, the synthetic f32 table the cluster tests place,
//! and in-process nodes serving it.

#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engram_store::cluster::{ClusterNode, ClusterOptions};
use engram_store::engine::{Engine, EngineConfig};
use engram_store::server::{ListenAddr, RunningServer, ServerOptions, spawn_server_with};
use engram_store::table::{DType, synth_row};
use engram_store_client::ClusterClient;

/// The etcd binary, or why there is none.
pub fn etcd_binary() -> Result<PathBuf, String> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join("etcd");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err("no etcd binary on PATH (Debian: apt-get install -y etcd-server)".into())
}

/// A free TCP port on `ip` (bound and released: another process could take it, rarely).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a free port")
}

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    pub client_url: String,
    args: Vec<String>,
    prefix: Vec<String>,
    pub dir: PathBuf,
}

impl Etcd {
    /// Starts etcd listening on `ip` (`prefix` runs it, e.g. `ip netns exec NS`), its data in
    /// `dir`; panics, with its log, if it does not come up.
    pub fn start(prefix: &[&str], ip: &str, client_port: u16, peer_port: u16, dir: &Path) -> Self {
        Self::try_start(prefix, ip, client_port, peer_port, dir).unwrap_or_else(|e| panic!("{e}"))
    }

    /// As [`Etcd::start`], the failure returned: etcd exited (a port of the two was taken
    /// between [`free_port`] and its bind, say) or did not listen within 20 s.
    pub fn try_start(
        prefix: &[&str],
        ip: &str,
        client_port: u16,
        peer_port: u16,
        dir: &Path,
    ) -> Result<Self, String> {
        let client = format!("http://{ip}:{client_port}");
        let peer = format!("http://{ip}:{peer_port}");
        let args = vec![
            "--name".to_string(),
            "t".into(),
            "--data-dir".into(),
            dir.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("t={peer}"),
            "--log-level".into(),
            "error".into(),
        ];
        let mut e = Self {
            child: None,
            client_url: client,
            args,
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            dir: dir.to_path_buf(),
        };
        e.try_spawn()?;
        Ok(e)
    }

    fn spawn(&mut self) {
        if let Err(e) = self.try_spawn() {
            panic!("{e}");
        }
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let bin = etcd_binary().expect("etcd binary");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let log = std::fs::File::create(self.dir.join("etcd.log")).expect("etcd log");
        let child = cmd
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let addr: SocketAddr = self
            .client_url
            .trim_start_matches("http://")
            .parse()
            .expect("etcd addr");
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = self.dir.join("etcd.log");
        let tail = |log: &Path| {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n")
        };
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "etcd for {addr} exited ({status}); its log ends:\n{}",
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        Err(format!(
            "etcd did not listen on {addr} within 20 s; its log ends:\n{}",
            tail(&log)
        ))
    }

    /// Kills it (SIGKILL) and waits.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Rows, values per row and seed of the table the in-process cluster tests place.
pub const ROWS: u64 = 20_000;
pub const DIM: u32 = 16;
pub const SEED: u64 = 9;

/// Writes table `name` of `rows` synthetic f32 rows of `dim` values (seed `seed`: rows are
/// `engram_store::table::synth_row(seed, F32, dim, id)`) into `data`.
pub fn synth_f32_table(data: &Path, name: &str, rows: u64, dim: u32, seed: u64) {
    synth_f32_table_with(data, name, rows, dim, seed, &Default::default());
}

/// [`synth_f32_table`] written with `options` (block size, data file size).
pub fn synth_f32_table_with(
    data: &Path,
    name: &str,
    rows: u64,
    dim: u32,
    seed: u64,
    options: &engram_store::ingest::WriteOptions,
) {
    use engram_store::ingest::{SynthSpec, synth_table};
    synth_table(
        data,
        &SynthSpec {
            name: name.into(),
            rows,
            row_dim: dim,
            dtype: engram_store::table::DType::F32,
            seed,
        },
        options,
        None,
    )
    .expect("synth");
}

/// An in-process node: engine, cluster membership and gRPC server on a loopback port.
pub struct Node {
    pub server: Option<RunningServer>,
    pub addr: String,
    pub node: Arc<ClusterNode>,
}

/// Starts node `id` serving `data`, registered in the etcd at `etcd` (`route`: `--route`).
pub async fn start_node(data: &std::path::Path, etcd: &str, id: &str, route: bool) -> Node {
    start_node_with(
        data,
        etcd,
        id,
        route,
        Default::default(),
        Default::default(),
    )
    .await
}

/// [`start_node`] behind `edge` (TLS, tokens), reaching its peers with `security`.
pub async fn start_node_with(
    data: &std::path::Path,
    etcd: &str,
    id: &str,
    route: bool,
    edge: engram_store::edge::EdgeOptions,
    security: engram_store_client::Security,
) -> Node {
    let port = free_port("127.0.0.1");
    let addr = format!("127.0.0.1:{port}");
    let mut c = EngineConfig::new(data);
    c.ram_cache_bytes = 8 << 20;
    c.io_engine = engram_store_cache::io::IoEngineKind::Pread;
    let engine = Arc::new(Engine::open(c).expect("engine"));
    let mut o = ClusterOptions::new(vec![etcd.to_string()], id.to_string(), addr.clone());
    o.lease_ttl = Duration::from_secs(2);
    o.route = route;
    o.security = security;
    let node = ClusterNode::start(engine.clone(), o);
    let server = spawn_server_with(
        engine,
        ListenAddr::Tcp(addr.parse().expect("addr")),
        ServerOptions {
            cluster: Some(node.clone()),
            edge,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("serve");
    Node {
        server: Some(server),
        addr,
        node,
    }
}

/// Asserts `rows` are the synthetic rows of `ids` of the shared table.
pub fn check_rows(ids: &[u64], rows: &engram_store_client::Rows) {
    assert_eq!(rows.len(), ids.len());
    for (i, &id) in ids.iter().enumerate() {
        assert_eq!(
            rows.row(i),
            &synth_row(SEED, DType::F32, DIM as usize, id)[..],
            "row {id} at {i}"
        );
    }
}

/// Waits until every shard of `table` has `replicas` ready replicas in the client's view.
pub async fn wait_ready(client: &ClusterClient, table: &str, replicas: usize) {
    let ok = client
        .watcher()
        .wait_for(Duration::from_secs(20), |v| {
            v.map.tables.get(table).is_some_and(|tm| {
                (0..tm.shards.len()).all(|i| v.ready_replicas(tm, i).count() >= replicas)
            })
        })
        .await;
    assert!(
        ok.map.tables.get(table).is_some_and(|tm| {
            (0..tm.shards.len()).all(|i| ok.ready_replicas(tm, i).count() >= replicas)
        }),
        "shards of {table} not ready: {:?}",
        ok.map.tables.get(table)
    );
}

/// A loopback etcd under `dir` and its endpoints, or `None` (after printing `SKIP:` and why)
/// when there is no etcd binary.
pub fn etcd_or_skip(dir: &Path) -> Option<(Etcd, Vec<String>)> {
    if let Err(why) = etcd_binary() {
        println!("SKIP: {why}");
        return None;
    }
    let etcd = loopback_etcd(dir);
    let endpoints = vec![etcd.client_url.clone()];
    Some((etcd, endpoints))
}

/// An etcd on two free loopback ports, its data under `dir`; new ports, up to three times, if
/// it cannot start on them (a port found free can be taken before etcd binds it, e.g. as the
/// local port of another test's outgoing connection).
pub fn loopback_etcd(dir: &Path) -> Etcd {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let (client, peer) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
        match Etcd::try_start(&[], "127.0.0.1", client, peer, dir) {
            Ok(etcd) => return etcd,
            Err(e) => {
                failures.push(e);
                // What it wrote names the ports it failed on: start the next one afresh.
                let _ = std::fs::remove_dir_all(dir.join("etcd"));
            }
        }
    }
    panic!("etcd did not start: {}", failures.join("\n---\n"));
}

/// A cluster client (parts time out after 800 ms) that has seen `nodes` nodes register.
pub async fn client_seeing(endpoints: &[String], nodes: usize) -> ClusterClient {
    let client = ClusterClient::connect_with(
        endpoints,
        engram_store_client::ClusterSettings {
            part_timeout: Duration::from_millis(800),
            ..Default::default()
        },
    )
    .await
    .expect("cluster client");
    client
        .watcher()
        .wait_for(Duration::from_secs(10), |v| v.nodes.len() == nodes)
        .await;
    client
}

/// Places table `t` as `shards` x `replicas` (nodes without it copy their shards), waiting up to
/// `wait` for replacements before dropping the replicas they replace.
pub async fn place(
    endpoints: &[String],
    shards: u32,
    replicas: u32,
    wait: Duration,
) -> engram_store::cluster::PlanOutcome {
    place_table(endpoints, "t", shards, replicas, wait).await
}

/// [`place`] of `table` (a table, or an Engram group: each of its layer tables).
pub async fn place_table(
    endpoints: &[String],
    table: &str,
    shards: u32,
    replicas: u32,
    wait: Duration,
) -> engram_store::cluster::PlanOutcome {
    engram_store::cluster::plan(
        endpoints,
        &engram_store::cluster::PlanArgs {
            table: table.into(),
            shards,
            replicas,
            version: None,
            wait,
            copy_from_peers: true,
        },
    )
    .await
    .expect("plan")
}
