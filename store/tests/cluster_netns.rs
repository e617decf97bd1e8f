//! A cluster across network namespaces: etcd and each `engram-store serve` process in a
//! namespace of its own, with its own address on a bridge this test creates (198.18.N.0/24,
//! the range RFC 2544 sets aside for benchmark networks; nothing else is addressed). Under a
//! steady lookup load from the cluster client (in the test's own namespace):
//!
//! 1. kill -9 a node (R=2): no lookup fails, no row is wrong, the slowest request stays within
//!    the failover bound; re-plan over the survivors;
//! 2. cut a node's link (link down inside its namespace): the same; the link comes back and the
//!    node registers again;
//! 3. a node joins with an empty data directory and the table is re-planned: shards move to it,
//!    it copies their rows from its peers and serves them, nothing fails;
//! 4. etcd is killed and restarted: serving goes on.
//!
//! Needs root and `ip netns`; otherwise (or without etcd) it prints `SKIP: <reason>` and passes.
//! Everything it creates is removed when it ends, pass or fail.

mod cluster_common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster_common::{Etcd, etcd_binary};
use engram_store::cluster::{PlanArgs, plan};
use engram_store::table::{DType, synth_row};
use engram_store_client::{ClusterClient, ClusterSettings};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

const ROWS: u64 = 50_000;
const DIM: u32 = 32;
const SEED: u64 = 3;
const PART_TIMEOUT: Duration = Duration::from_millis(800);

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The bridge, the namespaces and their veths, removed on drop.
struct Net {
    tag: String,
    subnet: u32,
    bridge: String,
    spaces: Vec<String>,
}

impl Net {
    fn new() -> Result<Self, String> {
        let pid = std::process::id();
        let tag = format!("es{}", pid % 100_000);
        let net = Self {
            subnet: 20 + pid % 200,
            bridge: format!("{tag}br"),
            tag,
            spaces: Vec::new(),
        };
        run(&["ip", "link", "add", &net.bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", net.ip(1)),
            "dev",
            &net.bridge,
        ])?;
        run(&["ip", "link", "set", &net.bridge, "up"])?;
        Ok(net)
    }

    fn ip(&self, host: u32) -> String {
        format!("198.18.{}.{host}", self.subnet)
    }

    fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    fn veth(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    /// A namespace `name` with address .`host` on the bridge (interface `eth0` inside).
    fn add(&mut self, name: &str, host: u32) -> Result<String, String> {
        let ns = self.ns(name);
        let outside = self.veth(name);
        run(&["ip", "netns", "add", &ns])?;
        self.spaces.push(ns.clone());
        run(&[
            "ip", "link", "add", &outside, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        run(&["ip", "link", "set", &outside, "master", &self.bridge, "up"])?;
        let ip = self.ip(host);
        let inside = |args: &[&str]| {
            let mut all = vec!["ip", "netns", "exec", ns.as_str()];
            all.extend_from_slice(args);
            run(&all)
        };
        inside(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        inside(&["ip", "link", "set", "eth0", "up"])?;
        inside(&["ip", "link", "set", "lo", "up"])?;
        Ok(ip)
    }

    /// Link of namespace `name` down or up (from inside it).
    fn link(&self, name: &str, up: bool) {
        let ns = self.ns(name);
        run(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ip",
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ])
        .expect("set link");
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.spaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces need root)".into());
    }
    if let Err(why) = etcd_binary() {
        return Some(why);
    }
    let probe = format!("es-probe-{}", std::process::id());
    match run(&["ip", "netns", "add", &probe]) {
        Ok(()) => {
            let _ = run(&["ip", "netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("ip netns is unavailable: {e}")),
    }
}

/// An `engram-store serve` in a namespace.
struct NodeProc {
    child: Child,
}

impl NodeProc {
    fn start(ns: &str, ip: &str, id: &str, etcd: &str, data: &Path, logs: &Path) -> Self {
        let addr = format!("{ip}:50051");
        let log = std::fs::File::create(logs.join(format!("{id}.log"))).expect("log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_engram-store"),
                "serve",
            ])
            .args(["--data", &data.display().to_string()])
            .args(["--listen", &addr, "--advertise", &addr])
            .args(["--etcd", etcd, "--node-id", id, "--lease-ttl", "2"])
            .args(["--ram-cache", "16MiB", "--io-engine", "pread"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start engram-store");
        Self { child }
    }

    /// kill -9.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Default)]
struct LoadStats {
    lookups: u64,
    failed: Vec<String>,
    wrong_rows: u64,
    slowest: Duration,
}

fn start_load(
    client: &ClusterClient,
    stop: &Arc<AtomicBool>,
    stats: &Arc<Mutex<LoadStats>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4)
        .map(|k| {
            let (client, stop, stats) = (client.clone(), stop.clone(), stats.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(k);
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<u64> = (0..256).map(|_| rng.random_range(0..ROWS)).collect();
                    let t = Instant::now();
                    let result = client.lookup("t", &ids).await;
                    let took = t.elapsed();
                    let mut s = stats.lock();
                    s.lookups += 1;
                    s.slowest = s.slowest.max(took);
                    match result {
                        Ok(rows) => {
                            for (i, &id) in ids.iter().enumerate() {
                                if rows.row(i) != &synth_row(SEED, DType::F32, DIM as usize, id)[..]
                                {
                                    s.wrong_rows += 1;
                                }
                            }
                        }
                        Err(e) => s.failed.push(e.to_string()),
                    }
                }
            })
        })
        .collect()
}

async fn wait_view(
    client: &ClusterClient,
    what: &str,
    ok: impl Fn(&engram_store_client::cluster::map::ClusterView) -> bool,
) {
    let v = client
        .watcher()
        .wait_for(Duration::from_secs(25), &ok)
        .await;
    assert!(
        ok(&v),
        "timed out waiting for {what}; nodes {:?}, map epoch {}",
        v.nodes.keys().collect::<Vec<_>>(),
        v.map.epoch
    );
}

fn all_ready(v: &engram_store_client::cluster::map::ClusterView, replicas: usize) -> bool {
    v.map.tables.get("t").is_some_and(|tm| {
        (0..tm.shards.len()).all(|i| v.ready_replicas(tm, i).count() >= replicas)
            && tm.shards.iter().all(|s| s.leaving.is_empty())
    })
}

async fn replan(endpoints: &[String]) -> engram_store::cluster::PlanOutcome {
    plan(
        endpoints,
        &PlanArgs {
            table: "t".into(),
            shards: 8,
            replicas: 2,
            version: None,
            wait: Duration::from_secs(20),
            copy_from_peers: true,
        },
    )
    .await
    .expect("plan")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_in_namespaces_survive_kill_cut_join_and_an_etcd_restart() {
    if let Some(why) = skip_reason() {
        println!("SKIP: {why}");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let data: PathBuf = dir.path().join("data");
    cluster_common::synth_f32_table(&data, "t", ROWS, DIM, SEED);
    let mut net = Net::new().expect("bridge");
    let etcd_ip = net.add("etcd", 10).expect("etcd namespace");
    let etcd_ns = net.ns("etcd");
    let mut etcd = Etcd::start(
        &["ip", "netns", "exec", &etcd_ns],
        &etcd_ip,
        2379,
        2380,
        dir.path(),
    );
    let endpoints = vec![etcd.client_url.clone()];
    let mut nodes = std::collections::BTreeMap::new();
    for i in 0..4u32 {
        let name = format!("n{i}");
        let ip = net.add(&name, 20 + i).expect("node namespace");
        let ns = net.ns(&name);
        nodes.insert(
            name.clone(),
            NodeProc::start(&ns, &ip, &name, &etcd.client_url, &data, dir.path()),
        );
    }
    let client = ClusterClient::connect_with(
        &endpoints,
        ClusterSettings {
            part_timeout: PART_TIMEOUT,
            suspect_for: Duration::from_secs(5),
            ..Default::default()
        },
    )
    .await
    .expect("cluster client");
    wait_view(&client, "4 nodes", |v| v.nodes.len() == 4).await;
    replan(&endpoints).await;
    wait_view(&client, "every shard on 2 ready replicas", |v| {
        all_ready(v, 2)
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(LoadStats::default()));
    let load = start_load(&client, &stop, &stats);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. kill -9 n1; its lease expires; re-plan over the survivors.
    if let Some(n) = nodes.get_mut("n1") {
        n.kill();
    }
    wait_view(&client, "n1's lease to expire", |v| {
        !v.nodes.contains_key("n1")
    })
    .await;
    replan(&endpoints).await;
    wait_view(&client, "re-placed on 3 nodes", |v| all_ready(v, 2)).await;
    println!("after kill -9: {:?}", stats.lock());

    // 2. Cut n2's link: its lease expires and traffic avoids it; the link comes back.
    net.link("n2", false);
    wait_view(&client, "n2 (cut off) to leave", |v| {
        !v.nodes.contains_key("n2")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    net.link("n2", true);
    wait_view(&client, "n2 back", |v| {
        v.nodes.get("n2").is_some_and(|n| n.ready)
    })
    .await;
    println!("after link down/up: {:?}", stats.lock());

    // 3. n4 joins with an empty data directory; re-plan: shards move to it, it copies their
    // rows from its peers (across the namespaces) and serves them.
    let ip = net.add("n4", 24).expect("n4 namespace");
    let ns = net.ns("n4");
    let n4_data = dir.path().join("data-n4");
    std::fs::create_dir_all(&n4_data).expect("n4's data directory");
    nodes.insert(
        "n4".into(),
        NodeProc::start(&ns, &ip, "n4", &etcd.client_url, &n4_data, dir.path()),
    );
    wait_view(&client, "n4 to register", |v| v.nodes.contains_key("n4")).await;
    let outcome = replan(&endpoints).await;
    assert!(outcome.moved > 0, "no shard moved to n4");
    assert!(
        outcome.settled_epoch.is_some(),
        "the replaced replicas were not dropped"
    );
    wait_view(&client, "n4 serving its shards", |v| {
        all_ready(v, 2)
            && v.nodes
                .get("n4")
                .is_some_and(|n| !n.ready_shards.is_empty())
    })
    .await;
    assert!(
        n4_data
            .join("t")
            .join("v00000001")
            .join("held_rows.json")
            .exists(),
        "n4 serves shards without a copy of them"
    );
    println!("after join: {:?}", stats.lock());

    // 4. etcd is killed and restarted: lookups go on from the last map.
    etcd.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.restart();
    wait_view(&client, "the nodes back in etcd", |v| {
        v.nodes.len() == 4 && all_ready(v, 2)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    let s = stats.lock();
    println!(
        "{} lookups of 256 rows in {:.1} s: {} failed, {} wrong rows, slowest {:?}",
        s.lookups,
        started.elapsed().as_secs_f64(),
        s.failed.len(),
        s.wrong_rows,
        s.slowest
    );
    assert!(s.lookups > 100, "{s:?}");
    assert!(s.failed.is_empty(), "failed lookups: {:?}", s.failed);
    assert_eq!(s.wrong_rows, 0);
    // A part waits at most the hedge delay and one part timeout per dead replica tried.
    assert!(
        s.slowest < PART_TIMEOUT * 2 + Duration::from_millis(700),
        "slowest {:?}",
        s.slowest
    );
}
