//! `engram-bench lookup`: closed-loop Lookup load against a running server, reporting rows/s,
//! GB/s, latency percentiles and the server's per-tier hit rates for the run; with `--limit-file`
//! it also measures the machine's limits in the same run and prints the ratios.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use engram_store::table::{DType, synth_row_filler};
use engram_store_driver::{IdDistribution, LoadSpec, RowCheck, run_load};

/// `lookup` flags.
#[derive(Debug, Args)]
pub struct LookupArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Table name.
    #[arg(long)]
    pub table: String,
    /// Ids per request.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// zipf:S, uniform or trace:FILE (LE u64 row ids).
    #[arg(long, default_value = "zipf:0.8")]
    pub dist: IdDistribution,
    /// Seconds per run, e.g. 20s or 20.
    #[arg(long, default_value = "20s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Runs; the report gives each and the median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Seconds of warm-up load before the measured runs (fills the RAM tier).
    #[arg(long, default_value = "0s", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Before measuring, prefetch every row of the table (in id order) into the RAM tier and
    /// wait until it is resident: the "every row cached" hot path.
    #[arg(long)]
    pub prefetch_all: bool,
    /// Check every row against the synthetic content of this seed (tables made by `synth`).
    #[arg(long)]
    pub verify_seed: Option<u64>,
    /// Measure the machine's limits in the same run: raw io_uring IOPS on this file (e.g. the
    /// table's data file) and loopback TCP bandwidth.
    #[arg(long)]
    pub limit_file: Option<PathBuf>,
    /// Queue depth of the raw IOPS measurement.
    #[arg(long, default_value_t = 64)]
    pub limit_queue_depth: usize,
}

/// Parses `20s`, `500ms`, `2m` or a plain number of seconds.
pub fn parse_seconds(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 20s, 500ms, 2m"))?;
    if !(v >= 0.0 && v.is_finite()) {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * mult))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// Prefetches every row of `table` (in id order) into the server's RAM tier and waits until the
/// resident count stops growing: the "every row cached" hot path.
pub async fn prefetch_all(
    client: &engram_store_client::Client,
    table: &str,
    rows: u64,
) -> anyhow::Result<()> {
    let t = std::time::Instant::now();
    let ids: Vec<u64> = (0..rows).collect();
    for chunk in ids.chunks(1 << 16) {
        client.prefetch(table, chunk).await?;
    }
    // Prefetches run in the background: wait until the resident count stops growing.
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = client.stats(false).await?;
        let resident = s
            .tiers
            .iter()
            .find(|t| t.tier == "ram")
            .map_or(0, |t| t.resident_rows);
        if resident == last || resident >= rows {
            println!(
                "prefetched: {resident} rows resident after {:.1}s",
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        last = resident;
    }
}

/// Runs the benchmark and prints its report.
pub async fn run(args: &LookupArgs) -> anyhow::Result<()> {
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let client = engram_store_client::Client::connect(addr).await?;
    let info = client.describe_table(&args.table).await?;
    let dtype = DType::ALL
        .into_iter()
        .find(|d| d.to_proto() as i32 == info.dtype)
        .ok_or_else(|| anyhow::anyhow!("unknown dtype {}", info.dtype))?;
    let mut spec = LoadSpec {
        table: args.table.clone(),
        rows: info.rows,
        dist: args.dist.clone(),
        batch: args.batch,
        concurrency: args.concurrency,
        duration: args.warmup,
        check: args.verify_seed.map(|seed| {
            let check: RowCheck = Arc::new(synth_row_filler(seed, dtype, info.row_dim as usize));
            check
        }),
        seed: 11,
    };
    println!(
        "engram-bench lookup: table {} ({} rows x {} B), batch {}, concurrency {}, dist {:?}",
        args.table, info.rows, info.row_bytes, args.batch, args.concurrency, args.dist
    );
    let limits = match &args.limit_file {
        Some(f) => {
            let la = crate::limits::LimitsArgs {
                file: f.clone(),
                queue_depth: args.limit_queue_depth,
                read_bytes: 4096,
                seconds: 5.0,
            };
            let l = crate::limits::measure(&la)?;
            println!(
                "limit: raw io_uring 4 KiB random reads qd {} = {:.0} IOPS; loopback TCP = {:.2} GB/s",
                args.limit_queue_depth,
                l.iops,
                l.tcp_bytes_per_s / 1e9
            );
            Some(l)
        }
        None => None,
    };
    if args.prefetch_all {
        prefetch_all(&client, &args.table, info.rows).await?;
    }
    if !args.warmup.is_zero() {
        run_load(&client, &spec, None).await?;
    }
    spec.duration = args.duration;
    let (mut rates, mut gbs) = (Vec::new(), Vec::new());
    println!(
        "run  rows/s        GB/s    p50_us   p99_us   p999_us  ram_hit  nvme_rows  errors wrong"
    );
    for run in 0..args.runs.max(1) {
        client.stats(true).await?;
        spec.seed = 11 + run as u64;
        let r = run_load(&client, &spec, None).await?;
        let s = client.stats(false).await?;
        let ram = s
            .tiers
            .iter()
            .find(|t| t.tier == "ram")
            .map_or(0.0, |t| t.hit_rate);
        let nvme_rows = s
            .tiers
            .iter()
            .find(|t| t.tier == "nvme")
            .map_or(0, |t| t.hits);
        println!(
            "{:<4} {:<13.0} {:<7.3} {:<8.0} {:<8.0} {:<8.0} {:<8.4} {:<10} {:<6} {}",
            run,
            r.rows_per_s(),
            r.bytes_per_s() / 1e9,
            r.latency.p50_us,
            r.latency.p99_us,
            r.latency.p999_us,
            ram,
            nvme_rows,
            r.errors,
            r.mismatches
        );
        if let Some(e) = &r.first_error {
            println!("     first error: {e}");
        }
        anyhow::ensure!(r.mismatches == 0, "{} wrong rows", r.mismatches);
        rates.push(r.rows_per_s());
        gbs.push(r.bytes_per_s());
    }
    let s = client.stats(false).await?;
    if let Some(ram) = s.tiers.iter().find(|t| t.tier == "ram") {
        println!(
            "server memory: RSS {:.1} MiB; RAM tier budget {:.1} MiB holding {} rows in {:.1} MiB; fixed overhead {:.1} MiB (checksums)",
            s.process_rss_bytes as f64 / 1048576.0,
            ram.capacity_bytes as f64 / 1048576.0,
            ram.resident_rows,
            ram.resident_bytes as f64 / 1048576.0,
            s.fixed_overhead_bytes as f64 / 1048576.0
        );
    }
    let (rate, bw) = (median(rates), median(gbs));
    println!("median: {:.0} rows/s, {:.3} GB/s", rate, bw / 1e9);
    if let Some(l) = limits {
        println!(
            "ratios: rows/s / raw IOPS = {:.3}; payload GB/s / loopback TCP = {:.3}",
            rate / l.iops,
            bw / l.tcp_bytes_per_s
        );
    }
    Ok(())
}
