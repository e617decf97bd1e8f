//! What a hostile or careless client on the same host could do (issue #11), replayed against a
//! live server one scenario at a time, with a bystander client doing small lookups throughout;
//! per scenario, whether the server held, the server's RSS before and at its peak (from Stats,
//! sampled every 50 ms), and the bystander's p99 and failures. `engram-bench abuse` prints them;
//! the server's tests assert them.

mod bystander;
mod raw_h2;
mod scenarios;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use engram_store_client::Client;

pub use bystander::{Bystander, BystanderReport};
pub use scenarios::Finding;

/// Every scenario, in the order they run.
pub const SCENARIOS: &[&str] = &[
    "undecodable",
    "region-flood",
    "truncate",
    "path-race",
    "prefetch-flood",
    "non-reading",
    "idle-connections",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct AbuseConfig {
    /// Server address (TCP).
    pub addr: SocketAddr,
    /// Table to use (None: the first the server lists).
    pub table: Option<String>,
    /// Scenarios to run (names of [`SCENARIOS`], or `all`).
    pub scenarios: Vec<String>,
    /// How long the timed scenarios run (path race, non-reading, idle connections).
    pub duration: Duration,
    /// Rows per request of the flooding scenarios (None: the server's batch limit, at most
    /// 1,048,576).
    pub rows: Option<usize>,
    /// Connections of the non-reading and idle scenarios.
    pub connections: usize,
    /// A file the path race must leave untouched (None: one the race makes itself).
    pub protected: Option<PathBuf>,
}

impl AbuseConfig {
    /// Every scenario against `addr`, 3 s each, 64 connections.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            table: None,
            scenarios: vec!["all".into()],
            duration: Duration::from_secs(3),
            rows: None,
            connections: 64,
            protected: None,
        }
    }
}

/// One scenario's outcome.
#[derive(Debug, Clone)]
pub struct ScenarioReport {
    /// Scenario name.
    pub name: String,
    /// What it found.
    pub finding: Finding,
    /// Server RSS before, bytes.
    pub rss_before: u64,
    /// Server RSS at its peak during the scenario, bytes.
    pub rss_peak: u64,
    /// The bystander's view.
    pub bystander: BystanderReport,
}

/// Runs the chosen scenarios; returns their reports (also printed).
pub async fn run(args: &AbuseConfig) -> anyhow::Result<Vec<ScenarioReport>> {
    let client = Client::builder(format!("http://{}", args.addr))
        .retries(0)
        .connect()
        .await?;
    let tables = client.list_tables().await?;
    let table = match &args.table {
        Some(t) => tables
            .iter()
            .find(|i| &i.name == t)
            .ok_or_else(|| anyhow::anyhow!("the server has no table {t:?}"))?,
        None => tables
            .first()
            .ok_or_else(|| anyhow::anyhow!("the server serves no table"))?,
    }
    .clone();
    let info = client.server_info().await?;
    let local_socket = (!info.local_socket.is_empty()).then(|| PathBuf::from(&info.local_socket));
    let rows_per_request = args
        .rows
        .unwrap_or(info.max_batch_rows as usize)
        .clamp(1, 1 << 20);
    let seconds = args.duration.max(Duration::from_millis(100));
    let chosen: Vec<&str> = if args.scenarios.iter().any(|s| s == "all") {
        SCENARIOS.to_vec()
    } else {
        args.scenarios.iter().map(String::as_str).collect()
    };
    println!(
        "abuse: {} (table {:?}, {} rows of {} B; local socket {})",
        args.addr,
        table.name,
        table.rows,
        table.row_bytes,
        local_socket
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string())
    );
    println!(
        "{:<17} {:>5} {:>10} {:>10} {:>12} {:>8}  detail",
        "scenario", "held", "rss MB", "peak MB", "bystander p99", "failed"
    );
    let mut reports = Vec::new();
    for name in chosen {
        let rss_before = client.stats(false).await?.process_rss_bytes;
        let bystander = Bystander::start(
            client.clone(),
            table.name.clone(),
            table.rows,
            Duration::from_millis(20),
        );
        let sampler = RssSampler::start(client.clone());
        let finding = match name {
            "undecodable" => scenarios::undecodable(args.addr).await?,
            "region-flood" => match &local_socket {
                Some(p) => scenarios::region_flood(&client, p).await?,
                None => skipped("the server has no local socket"),
            },
            "truncate" => match &local_socket {
                Some(p) => scenarios::truncate_region(&client, p, &table.name).await?,
                None => skipped("the server has no local socket"),
            },
            "path-race" => {
                scenarios::path_race(&client, seconds, args.protected.as_deref()).await?
            }
            "prefetch-flood" => {
                scenarios::prefetch_flood(&client, &table.name, table.rows, rows_per_request, 60)
                    .await?
            }
            "non-reading" => {
                scenarios::non_reading(args.addr, &table.name, 60_000, args.connections, seconds)
                    .await?
            }
            "idle-connections" => {
                scenarios::idle_connections(args.addr, args.connections, seconds).await?
            }
            other => anyhow::bail!(
                "unknown scenario {other:?}; known: {}",
                SCENARIOS.join(", ")
            ),
        };
        // Let the server settle, so the bystander's last lookups see its state after the abuse.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let bystander = bystander.stop().await;
        let rss_peak = sampler.stop().await.max(rss_before);
        println!(
            "{:<17} {:>5} {:>10.1} {:>10.1} {:>10.1}ms {:>8}  {}",
            name,
            if finding.held { "yes" } else { "NO" },
            rss_before as f64 / 1e6,
            rss_peak as f64 / 1e6,
            bystander.latency.p99_us / 1e3,
            bystander.failed,
            finding.detail
        );
        if let Some(e) = &bystander.first_error {
            println!("{:<17} bystander's first error: {e}", "");
        }
        reports.push(ScenarioReport {
            name: name.to_owned(),
            finding,
            rss_before,
            rss_peak,
            bystander,
        });
    }
    Ok(reports)
}

fn skipped(why: &str) -> Finding {
    Finding {
        held: true,
        detail: format!("skipped: {why}"),
    }
}

/// Samples the server's RSS (Stats) every 50 ms; reports the largest seen.
struct RssSampler {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<u64>,
}

impl RssSampler {
    fn start(client: Client) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let mut peak = 0;
            loop {
                if let Ok(s) = client.stats(false).await {
                    peak = peak.max(s.process_rss_bytes);
                }
                tokio::select! {
                    _ = &mut stopped => return peak,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        });
        Self { stop, task }
    }

    async fn stop(self) -> u64 {
        let _ = self.stop.send(());
        self.task.await.unwrap_or(0)
    }
}
