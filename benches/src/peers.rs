//! `engram-bench peers`: engram-store side by side with Redis, and with the machine's limits.
//!
//! Both systems hold the same synthetic table ([`dataset`]) entirely in RAM: engram-store as a
//! separate `engram-store serve` process whose RAM tier is sized for the whole table and warmed
//! by reading every row once ([`engram_peer`]); Redis as string values under decimal row-id keys
//! ([`redis_peer`]). Both are then driven the same way ([`drive`]): the same client concurrency,
//! each client task on a connection of its own, the same id streams ([`IdSampler`]
//! seeds), the same batch sizes, the systems taking turns run by run. Every row is checked once
//! before measuring, a share of them while measuring and a random sample after ([`verify`]); a
//! wrong row fails the benchmark.
//!
//! Reported ([`report`], [`csv`], [`plot`]): rows/s, payload GB/s and p50/p99/p999 latency per
//! system and batch size, each server's RSS per stored row against the raw row bytes, and the
//! loopback TCP bandwidth measured in the same run (plus raw io_uring IOPS when the table does not
//! fit the RAM tier).
//!
//! `engram-bench peers` installs nothing; `benches/run-peers.sh` installs and starts Redis.
//!
//! [`IdSampler`]: engram_store_driver::IdSampler

pub mod args;
pub mod cpu;
pub mod csv;
pub mod dataset;
pub mod drive;
pub mod engram_peer;
pub mod machine;
pub mod outcome;
pub mod peer;
pub mod plot;
pub mod redis_peer;
pub mod report;
pub mod verify;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engram_store::size::format_size;
use engram_store_cache::LatencyHistogram;

pub use args::PeersArgs;
use dataset::{Dataset, TableShape};
use drive::{DriveSpec, Measured, check_sample, drive, scan};
use engram_peer::{EngramPeer, EngramServer, ram_tier};
use outcome::{MachineLimits, PeerOutcome, RawIops, ServerMemory};
use peer::{Connection, System};
use redis_peer::RedisPeer;
use verify::RowCheck;

/// Ids per request of the first read of every row.
const SCAN_CHUNK: usize = 4096;
/// Bytes per raw read of the IOPS limit.
const RAW_READ_BYTES: usize = 4096;

/// The default RAM tier budget: the rows, the tier's per-row metadata and room for rows landing
/// unevenly on its shards, so that the whole table stays resident.
pub fn default_ram_cache(rows: u64, row_bytes: usize) -> u64 {
    let per_row = row_bytes as u64 + 64;
    rows.saturating_mul(per_row).saturating_mul(5) / 4 + (32 << 20)
}

/// Runs `engram-bench peers` and prints its report.
pub async fn run(args: &PeersArgs) -> Result<()> {
    args.validate()?;
    let rb = args.row_bytes();
    let rows = args.rows;
    let check = RowCheck::new(args.seed, args.dtype, args.dim as usize);
    println!(
        "engram-bench peers: {rows} rows x {} {} ({rb} B/row, {} raw), batches {:?}, concurrency \
         {}, ids {:?}, {:?} per run after {:?} warm-up, {} run(s)",
        args.dim,
        args.dtype,
        format_size(rows * rb as u64),
        args.batches(),
        args.concurrency,
        args.dist,
        args.duration,
        args.warmup,
        args.runs
    );
    println!("machine: {}", machine::describe());
    let load_before = machine::load_average();
    println!("load average before: {load_before}");

    let shape = TableShape {
        name: args.table.clone(),
        rows,
        dim: args.dim,
        dtype: args.dtype,
        seed: args.seed,
    };
    let started = Instant::now();
    let dataset = Dataset::prepare(args.data.as_deref(), &shape)?;
    println!(
        "table {} in {} ({} in {:.1}s)",
        args.table,
        dataset.data_dir().display(),
        if dataset.written { "written" } else { "reused" },
        started.elapsed().as_secs_f64()
    );

    let mut tcp = tcp_limit(args.limit_duration).await?;

    // engram-store: its own process, RAM tier warmed with every row.
    let ram_cache = args
        .ram_cache
        .unwrap_or_else(|| default_ram_cache(rows, rb));
    let bin = match &args.engram_bin {
        Some(b) => b.clone(),
        None => engram_peer::default_bin()?,
    };
    let logs = tempfile::tempdir().context("create a directory for the server log")?;
    let server = EngramServer::start(
        &bin,
        dataset.data_dir(),
        ram_cache,
        &logs.path().join("engram-store.log"),
    )
    .await?;
    let engram = EngramPeer::new(server.url(), args.table.clone());
    let engram_empty = engram.stats(false).await?.process_rss_bytes;
    let mut engram_conns = Vec::new();
    for _ in 0..args.concurrency {
        engram_conns.push(engram.connect().await?);
    }
    let started = Instant::now();
    let engram_conns = scan(engram_conns, rows, SCAN_CHUNK, check)
        .await
        .context("engram-store: first read of every row")?;
    let s = engram.stats(true).await?;
    let (resident, _) = ram_tier(&s);
    let all_in_ram = resident >= rows;
    println!(
        "engram-store {} (pid {}, {}, RAM tier {}): read and checked all rows in {:.1}s; {resident} \
         of {rows} rows in the RAM tier",
        bin.display(),
        server.pid(),
        server.url(),
        format_size(ram_cache),
        started.elapsed().as_secs_f64()
    );
    if !all_in_ram {
        println!(
            "WARNING: the table does not fit engram-store's RAM tier: this is not the all-in-RAM \
             comparison (raise --ram-cache)"
        );
    }
    let engram_memory = ServerMemory {
        system: System::EngramStore,
        rss_empty: engram_empty,
        rss_loaded: s.process_rss_bytes,
        used_loaded: None,
        rows,
    };

    // Redis: load every row with MSETs, read them all back.
    let redis = RedisPeer::new(&args.redis, rb, args.mget_chunk)?;
    redis.ensure_empty().await?;
    let version = redis.version().await?;
    let redis_empty = redis.memory().await?;
    let started = Instant::now();
    redis
        .load(rows, check, args.load_chunk, args.concurrency)
        .await?;
    let loaded_in = started.elapsed();
    let redis_loaded = redis.memory().await?;
    let mut redis_conns = Vec::new();
    for _ in 0..args.concurrency {
        redis_conns.push(redis.connect().await?);
    }
    let redis_conns = scan(redis_conns, rows, SCAN_CHUNK, check)
        .await
        .context("redis: first read of every row")?;
    println!(
        "redis {version} at {}: loaded in {:.1}s ({} keys per MSET), read and checked all rows",
        args.redis,
        loaded_in.as_secs_f64(),
        args.load_chunk
    );
    let redis_memory = ServerMemory {
        system: System::Redis,
        rss_empty: redis_empty.rss,
        rss_loaded: redis_loaded.rss,
        used_loaded: Some(redis_loaded.used),
        rows,
    };

    // The measured runs.
    let mut engram_conns = engram_conns;
    let mut redis_conns = redis_conns;
    let mut outcomes = Vec::new();
    for batch in args.batches() {
        let mut e = new_outcome(System::EngramStore, batch, args.concurrency, rows);
        let mut r = new_outcome(System::Redis, batch, args.concurrency, rows);
        for run in 0..args.runs {
            let spec = DriveSpec {
                dist: args.dist.clone(),
                rows,
                batch,
                duration: args.duration,
                seed: 0x5eed ^ ((batch as u64) << 8) ^ run as u64,
                check,
                check_every: args.check_every,
            };
            let engram_first = run % 2 == 0;
            for turn in 0..2 {
                if (turn == 0) == engram_first {
                    engram_conns = warm(engram_conns, &spec, args.warmup).await?;
                    engram.stats(true).await?;
                    let cpu = CpuMark::now(cpu::process_cpu_seconds(Some(server.pid()))?)?;
                    let (c, m) = drive(engram_conns, &spec)
                        .await
                        .with_context(|| format!("engram-store at batch {batch}"))?;
                    cpu.add_to(&mut e, cpu::process_cpu_seconds(Some(server.pid()))?)?;
                    engram_conns = c;
                    let (_, hit) = ram_tier(&engram.stats(false).await?);
                    e.ram_hit_rate = Some(e.ram_hit_rate.map_or(hit, |h: f64| h.min(hit)));
                    record(&mut e, run, &m);
                } else {
                    redis_conns = warm(redis_conns, &spec, args.warmup).await?;
                    let cpu = CpuMark::now(redis.cpu_seconds().await?)?;
                    let (c, m) = drive(redis_conns, &spec)
                        .await
                        .with_context(|| format!("redis at batch {batch}"))?;
                    cpu.add_to(&mut r, redis.cpu_seconds().await?)?;
                    redis_conns = c;
                    record(&mut r, run, &m);
                }
            }
        }
        e.rss_bytes = engram.stats(false).await?.process_rss_bytes;
        r.rss_bytes = redis.memory().await?.rss;
        outcomes.push(r);
        outcomes.push(e);
    }

    // Rows still right after all that; the limits again (the best of the two counts).
    if let Some(c) = engram_conns.first_mut() {
        check_sample(c, rows, args.verify_sample, 99, check)
            .await
            .context("engram-store: sample after measuring")?;
    }
    if let Some(c) = redis_conns.first_mut() {
        check_sample(c, rows, args.verify_sample, 99, check)
            .await
            .context("redis: sample after measuring")?;
    }
    drop(engram_conns);
    drop(server);
    tcp = tcp.max(tcp_limit(args.limit_duration).await?);
    let iops = if all_in_ram {
        None
    } else {
        iops_limit(&dataset, args.iops_queue_depth, args.limit_duration).await?
    };
    let limits = MachineLimits {
        tcp_bytes_per_s: tcp,
        iops,
    };

    let memory = [redis_memory, engram_memory];
    let findings = report::Findings {
        outcomes: &outcomes,
        memory: &memory,
        limits: &limits,
        row_bytes: rb,
    };
    print!("{}", report::render(&findings));
    println!(
        "load average before: {load_before}; after: {}",
        machine::load_average()
    );
    if let Some(path) = &args.csv {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        );
        csv::write(&mut file, &csv::records(&outcomes, &limits, rb))
            .with_context(|| format!("write {}", path.display()))?;
        std::io::Write::flush(&mut file)?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plot_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let what = format!(
            "{rows} rows x {rb} B, concurrency {}, {:?} ids",
            args.concurrency, args.dist
        );
        let rows_svg = dir.join("peers-rows.svg");
        plot::draw_rows(
            &rows_svg,
            &outcomes,
            &limits,
            rb,
            &format!("rows/s vs batch size: engram-store and Redis, all in RAM ({what})"),
        )?;
        let latency_svg = dir.join("peers-latency.svg");
        plot::draw_latency(
            &latency_svg,
            &outcomes,
            &format!("request latency distribution per batch size ({what})"),
        )?;
        println!("wrote {} and {}", rows_svg.display(), latency_svg.display());
    }
    Ok(())
}

fn new_outcome(system: System, batch: usize, concurrency: usize, rows: u64) -> PeerOutcome {
    PeerOutcome {
        system,
        batch,
        concurrency,
        runs: Vec::new(),
        latency: LatencyHistogram::new(),
        rss_bytes: 0,
        stored_rows: rows,
        ram_hit_rate: None,
        rows_total: 0,
        server_cpu_s: 0.0,
        client_cpu_s: 0.0,
    }
}

/// CPU seconds of a server and of this process when a run started.
struct CpuMark {
    server: f64,
    client: f64,
}

impl CpuMark {
    fn now(server: f64) -> Result<Self> {
        Ok(Self {
            server,
            client: cpu::process_cpu_seconds(None)?,
        })
    }

    /// Charges the CPU used since the mark to `o`, given the server's CPU seconds now.
    fn add_to(&self, o: &mut PeerOutcome, server_now: f64) -> Result<()> {
        o.server_cpu_s += server_now - self.server;
        o.client_cpu_s += cpu::process_cpu_seconds(None)? - self.client;
        Ok(())
    }
}

/// Unmeasured load for `warmup` with the run's id streams.
async fn warm<C: Connection>(conns: Vec<C>, spec: &DriveSpec, warmup: Duration) -> Result<Vec<C>> {
    if warmup.is_zero() {
        return Ok(conns);
    }
    let spec = DriveSpec {
        duration: warmup,
        seed: spec.seed ^ 0xffff_0000,
        ..spec.clone()
    };
    Ok(drive(conns, &spec).await.context("warm-up")?.0)
}

/// Adds a run to `o` and prints it.
fn record(o: &mut PeerOutcome, run: usize, m: &Measured) {
    let s = m.latency.snapshot();
    println!(
        "  batch {:>6} run {run} {:<13} {:>12.0} rows/s {:>7.3} GB/s  p50 {:>8.0} us  p99 {:>8.0} \
         us  p999 {:>8.0} us  ({} requests, {} rows checked)",
        o.batch,
        o.system.name(),
        m.rows_per_s(),
        m.bytes_per_s() / 1e9,
        s.p50_us,
        s.p99_us,
        s.p999_us,
        m.requests,
        m.checked_rows
    );
    o.runs.push((m.rows_per_s(), m.bytes_per_s()));
    o.rows_total += m.rows;
    o.latency.merge(&m.latency);
}

async fn tcp_limit(d: Duration) -> Result<f64> {
    let secs = d.as_secs_f64().max(0.1);
    let tcp = tokio::task::spawn_blocking(move || crate::limits::loopback_tcp_bytes_per_s(secs))
        .await
        .context("loopback TCP measurement panicked")??;
    println!("limit: loopback TCP, one stream: {:.2} GB/s", tcp / 1e9);
    Ok(tcp)
}

async fn iops_limit(dataset: &Dataset, qd: usize, d: Duration) -> Result<Option<RawIops>> {
    let Some(file) = dataset.first_data_file() else {
        return Ok(None);
    };
    let secs = d.as_secs_f64().max(0.1);
    let per_s = tokio::task::spawn_blocking(move || {
        crate::limits::uring_random_read_iops(&file, qd, RAW_READ_BYTES, secs)
    })
    .await
    .context("raw IOPS measurement panicked")??;
    Ok(Some(RawIops {
        per_s,
        queue_depth: qd,
        read_bytes: RAW_READ_BYTES,
    }))
}
