//! `engram-bench channel`: the sidecar channel against the two gRPC paths, in the same run, on
//! the same rows: `grpc_lookup` (Lookup: rows in the reply), `grpc_lookup_into` (LookupInto a
//! shared-memory region) and `channel` (a request written into the ring, rows written into the
//! same region, completion awaited on the slot), and with `--mapped` `mapped` (the worker copies
//! the rows itself from the server's shared-memory file, `ShareTable`: no request at all; the
//! server needs `--share-memory` and a RAM budget holding the table). One request in flight at a
//! time, as a decode step issues it; per path and batch: p50 and p99 latency and rows/s.
//!
//! ```text
//! engram-bench channel --addr 127.0.0.1:50051 --table T --batch 256,4096,65536 \
//!     --duration 5s --csv results.csv
//! ```
//!
//! CSV columns: `path,batch,p50_us,p99_us,rows_per_s`. The server must run on this host with a
//! local socket (`serve --local-socket PATH`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use engram_store_cache::LatencyHistogram;
use engram_store_client::{ChannelTarget, Client};
use rand::{Rng, SeedableRng};

/// `channel` flags.
#[derive(Debug, Args)]
pub struct ChannelArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Table to read.
    #[arg(long)]
    pub table: String,
    /// Rows per request, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "256,4096,65536")]
    pub batch: Vec<usize>,
    /// How long each path runs per batch size, e.g. 5s.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Ids from the first this many rows (0: the whole table).
    #[arg(long, default_value_t = 0)]
    pub hot_rows: u64,
    /// Write the results as CSV here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Runs of each path and batch (the median is reported); runs alternate between paths.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip reading the rows once before timing (then early runs pay the disk).
    #[arg(long)]
    pub no_warm: bool,
    /// Also time `mapped`: rows copied from the server's shared file (`ShareTable`).
    #[arg(long)]
    pub mapped: bool,
}

/// A duration like `5s`, `500ms` or `1.5` (seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 1e-3)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .map(|v| Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{s:?} is not a duration like 5s or 500ms"))
}

/// One path at one batch size.
#[derive(Debug, Clone)]
pub struct PathResult {
    /// `grpc_lookup`, `grpc_lookup_into`, `channel` or `mapped`.
    pub path: &'static str,
    /// Rows per request.
    pub batch: usize,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Rows per second.
    pub rows_per_s: f64,
}

const PATHS: [&str; 4] = ["grpc_lookup", "grpc_lookup_into", "channel", "mapped"];

/// Runs every path at every batch size; prints and returns the results.
pub async fn run(args: &ChannelArgs) -> anyhow::Result<Vec<PathResult>> {
    let client = Client::builder(format!("http://{}", args.addr))
        .retries(0)
        .connect()
        .await?;
    let info = client.describe_table(&args.table).await?;
    let rows = if args.hot_rows == 0 {
        info.rows
    } else {
        args.hot_rows.min(info.rows)
    };
    let max_batch = args.batch.iter().copied().max().unwrap_or(1);
    let region_bytes = max_batch * info.row_bytes as usize;
    let region = client.shm_region(region_bytes).await?;
    let mut channel = client
        .open_channel(
            ChannelTarget::Table(args.table.clone()),
            &region,
            max_batch,
            2,
        )
        .await?;
    println!(
        "engram-bench channel: table {:?} ({} rows of {} B, ids from the first {rows}), one request in flight, {:?} x {} runs per path and batch",
        args.table, info.rows, info.row_bytes, args.duration, args.runs
    );
    println!(
        "{:<17} {:>7} {:>10} {:>10} {:>14}",
        "path", "batch", "p50 us", "p99 us", "rows/s"
    );
    let mapped = if args.mapped {
        Some(engram_store_client::MappedRows::open(&client, &args.table).await?)
    } else {
        None
    };
    let mut worker_buffer = vec![0u8; region_bytes];
    let paths: Vec<&'static str> = PATHS
        .into_iter()
        .filter(|p| *p != "mapped" || mapped.is_some())
        .collect();
    if !args.no_warm {
        // Every row the runs may ask for, once, so that no path pays the disk.
        let t = Instant::now();
        let chunk = max_batch as u64;
        let mut first = 0;
        while first < rows {
            let ids: Vec<u64> = (first..(first + chunk).min(rows)).collect();
            client
                .lookup_into(region.id(), region.token(), 0, &args.table, &ids)
                .await?;
            first += chunk;
        }
        println!("warmed {rows} rows in {:.1} s", t.elapsed().as_secs_f64());
    }
    let mut results = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for &batch in &args.batch {
        let mut by_path: Vec<Vec<PathResult>> = vec![Vec::new(); paths.len()];
        for _ in 0..args.runs.max(1) {
            for (p, &path) in paths.iter().enumerate() {
                let latency = LatencyHistogram::new();
                let start = Instant::now();
                let mut done = 0u64;
                while start.elapsed() < args.duration {
                    let ids: Vec<u64> = (0..batch).map(|_| rng.random_range(0..rows)).collect();
                    let t = Instant::now();
                    match path {
                        "grpc_lookup" => {
                            client.lookup(&args.table, &ids).await?;
                        }
                        "grpc_lookup_into" => {
                            client
                                .lookup_into(region.id(), region.token(), 0, &args.table, &ids)
                                .await?;
                        }
                        "mapped" => {
                            if let Some(m) = &mapped {
                                let out = &mut worker_buffer[..batch * m.row_bytes()];
                                m.gather_into(&ids, out)?;
                            }
                        }
                        _ => {
                            channel.submit_rows(0, &ids, 0)?;
                            channel.wait(0, Duration::from_secs(30))?;
                        }
                    }
                    latency.record(t.elapsed());
                    done += batch as u64;
                }
                let s = latency.snapshot();
                by_path[p].push(PathResult {
                    path,
                    batch,
                    p50_us: s.p50_us,
                    p99_us: s.p99_us,
                    rows_per_s: done as f64 / start.elapsed().as_secs_f64(),
                });
            }
        }
        for mut runs in by_path {
            runs.sort_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
            let median = runs[runs.len() / 2].clone();
            println!(
                "{:<17} {:>7} {:>10.1} {:>10.1} {:>14.0}",
                median.path, median.batch, median.p50_us, median.p99_us, median.rows_per_s
            );
            results.push(median);
        }
        let p50 = |p: &str| {
            results
                .iter()
                .find(|r| r.path == p && r.batch == batch)
                .map_or(f64::NAN, |r| r.p50_us)
        };
        println!(
            "  batch {batch}: channel p50 / grpc_lookup_into p50 = {:.3}",
            p50("channel") / p50("grpc_lookup_into")
        );
        if mapped.is_some() {
            println!(
                "  batch {batch}: mapped p50 / channel p50 = {:.3}",
                p50("mapped") / p50("channel")
            );
        }
    }
    if let Some(path) = &args.csv {
        let mut text = String::from("path,batch,p50_us,p99_us,rows_per_s\n");
        for r in &results {
            text.push_str(&format!(
                "{},{},{:.1},{:.1},{:.0}\n",
                r.path, r.batch, r.p50_us, r.p99_us, r.rows_per_s
            ));
        }
        std::fs::write(path, text)?;
    }
    Ok(results)
}
