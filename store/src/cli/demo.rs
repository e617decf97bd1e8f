//! `engram-store demo`: the README's "run it" command. With nothing downloaded it writes an
//! Engram-like demo table (160-byte bf16 rows; reused on the next run), serves it in-process on
//! 127.0.0.1 with a RAM tier smaller than the table, drives a Zipf workload through the real
//! gRPC client for about ten seconds, checks every returned row against its documented content,
//! and prints throughput, latency percentiles and per-tier hit rates.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use engram_store::engine::{Engine, EngineConfig};
use engram_store::ingest::{SynthSpec, WriteOptions, synth_table};
use engram_store::size::{format_size, parse_size};
use engram_store::table::{DType, OpenTable, synth_row_filler};
use engram_store_driver::{IdDistribution, LoadSpec, run_load};

use super::progress::bytes_bar;

/// Name of the demo table.
pub(crate) const DEMO_TABLE: &str = "demo";
/// Content seed of the demo table.
pub(crate) const DEMO_SEED: u64 = 42;
/// Row dim of the demo table (Engram-27B: 80 bf16 = 160 bytes).
pub(crate) const DEMO_DIM: u32 = 80;

/// `demo` flags.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the demo table lives (created if missing, reused otherwise).
    #[arg(long, default_value = "demo-data")]
    pub(crate) data: PathBuf,
    /// Rows of the demo table (4,194,304 x 160 B = 640 MiB).
    #[arg(long, default_value_t = 1 << 22)]
    pub(crate) rows: u64,
    /// RAM tier budget; smaller than the table so both tiers serve.
    #[arg(long, default_value = "128MiB", value_parser = parse_size)]
    pub(crate) ram_cache: u64,
    /// How long to drive load, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) seconds: f64,
    /// Ids per request.
    #[arg(long, default_value_t = 4096)]
    pub(crate) batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub(crate) concurrency: usize,
    /// Zipf exponent of the ids.
    #[arg(long, default_value_t = 0.9)]
    pub(crate) zipf: f64,
}

/// Runs the demo; fails if any row was wrong or any request failed.
pub(crate) async fn run(a: DemoArgs) -> anyhow::Result<()> {
    let existing = OpenTable::open_newest(&a.data, DEMO_TABLE, false)
        .ok()
        .filter(|t| {
            t.manifest.rows == a.rows
                && t.manifest.row_dim == DEMO_DIM
                && t.manifest.source.contains(&format!("seed={DEMO_SEED} "))
        });
    if existing.is_none() {
        println!(
            "writing demo table: {} rows x {DEMO_DIM} bf16 into {}",
            a.rows,
            a.data.display()
        );
        let bar = bytes_bar("synth");
        let (data, rows) = (a.data.clone(), a.rows);
        let b = bar.clone();
        tokio::task::spawn_blocking(move || {
            let spec = SynthSpec {
                name: DEMO_TABLE.into(),
                rows,
                row_dim: DEMO_DIM,
                dtype: DType::Bf16,
                seed: DEMO_SEED,
            };
            synth_table(&data, &spec, &WriteOptions::default(), Some(&b))
        })
        .await??;
        bar.finish_and_clear();
    } else {
        println!("reusing demo table in {}", a.data.display());
    }

    let mut config = EngineConfig::new(&a.data);
    config.ram_cache_bytes = a.ram_cache;
    let engine = Arc::new(Engine::open(config)?);
    let server = engram_store::server::spawn_server(engine.clone(), "127.0.0.1:0".parse()?).await?;
    let table = engine.table(DEMO_TABLE)?;
    let m = table.manifest().clone();
    println!(
        "serving {:?} v{} on {} ({} rows, {}; RAM tier {} [{}], NVMe via {})",
        m.name,
        m.version,
        server.addr,
        m.rows,
        format_size(m.data_bytes()),
        format_size(a.ram_cache),
        table.ram().map_or("none", |r| r.cache().policy_name()),
        engine.io_engine_name()
    );

    let client = engram_store_client::Client::connect(format!("http://{}", server.addr)).await?;
    let spec = LoadSpec {
        table: DEMO_TABLE.into(),
        rows: m.rows,
        dist: IdDistribution::Zipf(a.zipf),
        batch: a.batch,
        concurrency: a.concurrency,
        duration: Duration::from_secs_f64(a.seconds.max(0.1)),
        check: Some(Arc::new(synth_row_filler(
            DEMO_SEED,
            DType::Bf16,
            DEMO_DIM as usize,
        ))),
        seed: 1,
    };
    println!(
        "driving zipf:{} lookups, batch {} x {} in flight, for {:.0}s; checking every row",
        a.zipf, a.batch, a.concurrency, a.seconds
    );
    let bar = ProgressBar::new(spec.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("load [{bar:40}] {elapsed} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let report = run_load(&client, &spec, Some(&bar)).await?;
    bar.finish_and_clear();
    let stats = client.stats(false).await?;
    server.shutdown().await?;

    println!();
    println!(
        "requests     {:>12}   errors {}",
        report.requests, report.errors
    );
    println!(
        "rows         {:>12}   checked {}, wrong {}",
        report.rows, report.checked, report.mismatches
    );
    println!(
        "throughput   {:>12.0} rows/s   {:.1} MB/s",
        report.rows_per_s(),
        report.bytes_per_s() / 1e6
    );
    println!(
        "latency      p50 {}   p99 {}   p999 {}   max {}",
        human_us(report.latency.p50_us),
        human_us(report.latency.p99_us),
        human_us(report.latency.p999_us),
        human_us(report.latency.max_us)
    );
    for t in &stats.tiers {
        let lat = t.latency.unwrap_or_default();
        println!(
            "tier {:<5} rows {:>11}   hit rate {:>6.2}%   {}   p50 {}  p99 {}{}",
            t.tier,
            t.hits,
            t.hit_rate * 100.0,
            if t.tier == "nvme" {
                format!("reads {}", t.reads)
            } else {
                format!("resident {}", format_size(t.resident_bytes))
            },
            human_us(lat.p50_us),
            human_us(lat.p99_us),
            if t.checksum_errors > 0 {
                format!("  checksum errors {}", t.checksum_errors)
            } else {
                String::new()
            }
        );
    }
    if let Some(e) = &report.first_error {
        println!("first error: {e}");
    }
    if report.mismatches > 0 || report.errors > 0 {
        anyhow::bail!(
            "{} wrong rows and {} failed requests",
            report.mismatches,
            report.errors
        );
    }
    println!("all {} rows checked: correct", report.checked);
    Ok(())
}

/// A latency in microseconds as people read it: "850 us", "12.4 ms", "1.20 s".
fn human_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1e3)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(super::human_us(117.0), "117 us");
        assert_eq!(super::human_us(117_441.0), "117.4 ms");
        assert_eq!(super::human_us(2_500_000.0), "2.50 s");
    }
}
