//! `engram-bench cluster`: rows/s and latency through the cluster client with 1, 2, 4... nodes
//! on this machine (each an `engram-store serve --etcd` process on loopback, a real etcd
//! beside them), against a plain client reading the same rows from one node directly (the
//! routing overhead), and the time from a node's death (kill -9, R=2) to the first request
//! that avoids it. Every row is checked against its synthetic content. The machine is shared
//! by the nodes and the load, so the per-node-core figure divides by the cores the nodes can
//! actually use: min(nodes, cores).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use engram_store::cluster::{PlanArgs, plan};
use engram_store::ingest::{SynthSpec, WriteOptions, synth_table};
use engram_store::table::{DType, synth_row};
use engram_store_client::{Client, ClusterClient, ClusterSettings};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use crate::lookup::parse_seconds;

/// `cluster` flags.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Node counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub nodes: Vec<usize>,
    /// Rows of the synthetic table (f32).
    #[arg(long, default_value_t = 500_000)]
    pub rows: u64,
    /// Elements per row.
    #[arg(long, default_value_t = 64)]
    pub dim: u32,
    /// Ids per request.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seconds per measurement.
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// The engram-store binary [default: beside this one].
    #[arg(long)]
    pub store_bin: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// Also measure a node's death (kill -9) to the first request that avoids it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub failover: bool,
}

const SEED: u64 = 5;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("nothing listens on 127.0.0.1:{port}")
}

/// One measurement: rows/s, p50, p99, slowest.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rows_per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// Start and end of every request.
type RequestLog = Arc<Mutex<Vec<(Instant, Instant)>>>;

#[derive(Clone)]
enum Reader {
    Cluster(ClusterClient),
    Plain(Box<Client>),
}

impl Reader {
    async fn lookup(&self, ids: &[u64]) -> anyhow::Result<engram_store_client::Rows> {
        Ok(match self {
            Reader::Cluster(c) => c.lookup("t", ids).await?,
            Reader::Plain(c) => c.lookup("t", ids).await?,
        })
    }
}

/// Closed-loop load for `duration`; every row checked. `on_done(start, end)` sees each request.
async fn load(
    reader: &Reader,
    args: &ClusterArgs,
    duration: Duration,
    log: Option<RequestLog>,
) -> anyhow::Result<Measured> {
    let stop = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|k| {
            let (reader, stop, lat, log) = (reader.clone(), stop.clone(), lat.clone(), log.clone());
            let (rows, batch, dim) = (args.rows, args.batch, args.dim);
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(k as u64);
                let mut checked = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<u64> = (0..batch).map(|_| rng.random_range(0..rows)).collect();
                    let t = Instant::now();
                    let got = reader.lookup(&ids).await?;
                    let end = Instant::now();
                    lat.lock().push(end - t);
                    if let Some(log) = &log {
                        log.lock().push((t, end));
                    }
                    // Spot-check a few rows per request (a full check would be the bottleneck).
                    for i in [0, batch / 2, batch - 1] {
                        if got.row(i) != &synth_row(SEED, DType::F32, dim as usize, ids[i])[..] {
                            bail!("wrong row {} at {i}", ids[i]);
                        }
                        checked += 1;
                    }
                }
                Ok::<u64, anyhow::Error>(checked)
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = lat.lock().clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(Measured {
        rows_per_s: (l.len() * args.batch) as f64 / secs,
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Runs the benchmark and prints its report.
pub async fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    let store_bin = match &args.store_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary directory")?
            .join("engram-store"),
    };
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    synth_table(
        &data,
        &SynthSpec {
            name: "t".into(),
            rows: args.rows,
            row_dim: args.dim,
            dtype: DType::F32,
            seed: SEED,
        },
        &WriteOptions::default(),
        None,
    )?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let table_bytes = args.rows * u64::from(args.dim) * 4;
    println!(
        "engram-bench cluster: table of {} rows x {} B ({:.0} MiB, in every node's RAM tier), \
         batch {}, {} in flight, {:?} per point, {} cores shared by nodes, etcd and the load",
        args.rows,
        args.dim * 4,
        table_bytes as f64 / (1u64 << 20) as f64,
        args.batch,
        args.concurrency,
        args.duration,
        cores
    );
    println!(
        "| nodes | path | rows/s | rows/s per node-core | p50 ms | p99 ms |\n| --- | --- | --- | --- | --- | --- |"
    );
    let ram = format!("{}MiB", (table_bytes >> 20) * 2 + 64);
    for &n in &args.nodes {
        let (cport, pport) = (free_port()?, free_port()?);
        let url = format!("http://127.0.0.1:{cport}");
        let peer = format!("http://127.0.0.1:{pport}");
        let mut procs = Procs(Vec::new());
        procs.0.push(
            Command::new(&args.etcd_bin)
                .args(["--name", "b", "--data-dir"])
                .arg(dir.path().join(format!("etcd-{n}")))
                .args([
                    "--listen-client-urls",
                    &url,
                    "--advertise-client-urls",
                    &url,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args([
                    "--initial-cluster",
                    &format!("b={peer}"),
                    "--log-level",
                    "error",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", args.etcd_bin.display()))?,
        );
        wait_port(cport).await?;
        let mut addrs = Vec::new();
        for i in 0..n {
            let port = free_port()?;
            let addr = format!("127.0.0.1:{port}");
            procs
                .0
                .push(serve(&store_bin, &data, &addr, &url, i, &ram)?);
            wait_port(port).await?;
            addrs.push(addr);
        }
        let client = ClusterClient::connect_with(
            std::slice::from_ref(&url),
            ClusterSettings {
                part_timeout: Duration::from_secs(1),
                ..Default::default()
            },
        )
        .await?;
        client
            .watcher()
            .wait_for(Duration::from_secs(20), |v| v.nodes.len() == n)
            .await;
        let replicas = n.min(2) as u32;
        plan(
            std::slice::from_ref(&url),
            &PlanArgs {
                table: "t".into(),
                shards: (4 * n) as u32,
                replicas,
                version: None,
                wait: Duration::from_secs(20),
                copy_from_peers: true,
            },
        )
        .await?;
        client
            .watcher()
            .wait_for(Duration::from_secs(30), |v| {
                v.map.tables.get("t").is_some_and(|tm| {
                    (0..tm.shards.len())
                        .all(|i| v.ready_replicas(tm, i).count() >= replicas as usize)
                })
            })
            .await;
        let warm = Reader::Cluster(client.clone());
        load(&warm, args, Duration::from_secs(1), None).await?;
        let node_cores = n.min(cores) as f64;
        if n == 1 {
            let plain = Reader::Plain(Box::new(
                Client::connect(format!("http://{}", addrs[0])).await?,
            ));
            let m = load(&plain, args, args.duration, None).await?;
            println!(
                "| 1 | plain client, one node (no routing) | {:.0} | {:.0} | {} | {} |",
                m.rows_per_s,
                m.rows_per_s / node_cores,
                ms(m.p50),
                ms(m.p99)
            );
        }
        let m = load(&warm, args, args.duration, None).await?;
        println!(
            "| {n} | cluster client ({} shards x {replicas}) | {:.0} | {:.0} | {} | {} |",
            4 * n,
            m.rows_per_s,
            m.rows_per_s / node_cores,
            ms(m.p50),
            ms(m.p99)
        );
        if args.failover && n >= 2 {
            failover(&client, args, &mut procs, m).await?;
        }
    }
    Ok(())
}

fn serve(
    bin: &Path,
    data: &Path,
    addr: &str,
    etcd: &str,
    i: usize,
    ram: &str,
) -> anyhow::Result<Child> {
    Command::new(bin)
        .arg("serve")
        .arg("--data")
        .arg(data)
        .args([
            "--listen",
            addr,
            "--etcd",
            etcd,
            "--node-id",
            &format!("b{i}"),
        ])
        .args([
            "--lease-ttl",
            "2",
            "--ram-cache",
            ram,
            "--warm-rows",
            "1000000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start {}", bin.display()))
}

/// Kills the last node under load; reports the time from its death to the first request
/// started after it that completed within 2x the p99 before it (the first that avoided the
/// dead node), the slowest request around it, and when its lease expired in the client's view.
async fn failover(
    client: &ClusterClient,
    args: &ClusterArgs,
    procs: &mut Procs,
    before: Measured,
) -> anyhow::Result<()> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let reader = Reader::Cluster(client.clone());
    let runner = {
        let log = log.clone();
        let args_dur = Duration::from_secs(5);
        let a = args_copy(args);
        tokio::spawn(async move { load(&reader, &a, args_dur, Some(log)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let victim = procs.0.len() - 1;
    let killed = Instant::now();
    let _ = procs.0[victim].kill();
    let _ = procs.0[victim].wait();
    let gone = client
        .watcher()
        .wait_for(Duration::from_secs(10), |v| {
            v.nodes.len() + 2 == procs.0.len()
        })
        .await;
    let lease_gone = killed.elapsed();
    let m = runner.await??;
    let bound = before.p99 * 2;
    let log = log.lock();
    let first_clean = log
        .iter()
        .filter(|(s, e)| *s >= killed && *e - *s <= bound)
        .map(|(_, e)| *e - killed)
        .min();
    let slowest_around = log
        .iter()
        .filter(|(s, e)| *e >= killed && *s <= killed + Duration::from_secs(3))
        .map(|(s, e)| *e - *s)
        .max()
        .unwrap_or_default();
    println!(
        "failover (kill -9 of one of {} nodes, R=2): first request avoiding it completed {} ms \
         after the kill; slowest request around it {} ms; its lease left the client's view after \
         {} ms ({} nodes left); no lookup failed, every checked row right; {:.0} rows/s over the \
         5 s",
        procs.0.len() - 1,
        first_clean.map_or("-".into(), ms),
        ms(slowest_around),
        lease_gone.as_millis(),
        gone.nodes.len(),
        m.rows_per_s
    );
    Ok(())
}

/// The numeric flags of `args` (the paths are not needed by the load).
fn args_copy(args: &ClusterArgs) -> ClusterArgs {
    ClusterArgs {
        nodes: args.nodes.clone(),
        rows: args.rows,
        dim: args.dim,
        batch: args.batch,
        concurrency: args.concurrency,
        duration: args.duration,
        store_bin: None,
        etcd_bin: PathBuf::new(),
        failover: args.failover,
    }
}
