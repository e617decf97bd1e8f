//! `engram-bench overload`: what a server with a bound on rows in flight does at several times
//! the load it can sustain. Against a running server, in one run:
//!
//! 1. **unloaded**: one request at a time (closed loop): the latency a request gets alone;
//! 2. **sustainable**: closed loop at the concurrency the server admits at once (its
//!    `max_rows_in_flight` over the batch): the request rate it sustains, the limit the rest is
//!    measured against;
//! 3. **overload**: open loop at `--load-factor` (default 4) times that rate, requests sent on
//!    schedule whatever the answers do, over several connections: the admitted requests'
//!    latency, the refused ones' (RESOURCE_EXHAUSTED) latency, any other error, and the server's
//!    RSS sampled through `Stats` all along.
//!
//! Pass criteria it prints: admitted p99 at most 2x the unloaded p99; every refusal quick (its
//! p99 below the unloaded p50, no refusal waiting in a queue); RSS under the stated bound: the
//! RSS after warm-up plus the server's answer budget (what answers in flight may hold) plus
//! 32 MiB for HTTP/2 buffers; no error other than RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use engram_store::table::{DType, synth_row_filler};
use engram_store_cache::{LatencyHistogram, LatencySnapshot};
use engram_store_client::Client;
use engram_store_driver::{IdDistribution, IdSampler, LoadSpec, RowCheck, run_load};
use tonic::Code;

use crate::lookup::parse_seconds;

/// `overload` flags.
#[derive(Debug, Args)]
pub struct OverloadArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Table name.
    #[arg(long)]
    pub table: String,
    /// Ids per request.
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// zipf:S, uniform or trace:FILE (LE u64 row ids).
    #[arg(long, default_value = "zipf:0.8")]
    pub dist: IdDistribution,
    /// Seconds of each phase, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_seconds)]
    pub duration: Duration,
    /// Seconds of warm-up load first (fills the RAM tier).
    #[arg(long, default_value = "5s", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Offered load of the overload phase, in multiples of the sustainable rate.
    #[arg(long, default_value_t = 4.0)]
    pub load_factor: f64,
    /// Connections the overload phase sends on.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Concurrency of the sustainable phase [default: the server's max_rows_in_flight / batch].
    #[arg(long)]
    pub sustainable_concurrency: Option<usize>,
    /// Check every row against the synthetic content of this seed (tables made by `synth`).
    #[arg(long)]
    pub verify_seed: Option<u64>,
    /// Before measuring, prefetch every row of the table into the RAM tier (the hot path).
    #[arg(long)]
    pub prefetch_all: bool,
}

/// What the overload phase saw.
#[derive(Debug)]
struct Overload {
    offered_per_s: f64,
    admitted: LatencySnapshot,
    refused: LatencySnapshot,
    other_errors: u64,
    first_other: Option<String>,
    wrong_rows: u64,
    rss_max: u64,
    elapsed: Duration,
}

/// Runs the benchmark and prints its report.
pub async fn run(args: &OverloadArgs) -> anyhow::Result<()> {
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let connect = || {
        Client::builder(addr.clone())
            .retries(0)
            .max_batch_ids(args.batch.max(1))
            .connect()
    };
    let client = connect().await?;
    let info = client.describe_table(&args.table).await?;
    let dtype = DType::ALL
        .into_iter()
        .find(|d| d.to_proto() as i32 == info.dtype)
        .ok_or_else(|| anyhow::anyhow!("unknown dtype {}", info.dtype))?;
    let check: Option<RowCheck> = args.verify_seed.map(|seed| {
        let check: RowCheck = Arc::new(synth_row_filler(seed, dtype, info.row_dim as usize));
        check
    });
    let stats = client.stats(false).await?;
    let bound_rows = stats.max_rows_in_flight.max(1);
    let admitted_at_once = (bound_rows as usize / args.batch.max(1)).max(1);
    let concurrency = args.sustainable_concurrency.unwrap_or(admitted_at_once);
    println!(
        "engram-bench overload: table {} ({} rows x {} B), batch {}, dist {:?}; server: {} rows in \
         flight at most ({} requests of this batch), answer budget {:.0} MiB",
        args.table,
        info.rows,
        info.row_bytes,
        args.batch,
        args.dist,
        bound_rows,
        admitted_at_once,
        stats.answer_budget_bytes as f64 / 1048576.0
    );
    let spec = |concurrency: usize, duration: Duration, seed: u64| LoadSpec {
        table: args.table.clone(),
        rows: info.rows,
        dist: args.dist.clone(),
        batch: args.batch,
        concurrency,
        duration,
        check: check.clone(),
        seed,
    };
    if args.prefetch_all {
        crate::lookup::prefetch_all(&client, &args.table, info.rows).await?;
    }
    if !args.warmup.is_zero() {
        run_load(&client, &spec(concurrency, args.warmup, 1), None).await?;
    }
    let rss_idle = client.stats(false).await?.process_rss_bytes;

    let unloaded = run_load(&client, &spec(1, args.duration, 2), None).await?;
    anyhow::ensure!(
        unloaded.errors == 0 && unloaded.mismatches == 0,
        "the unloaded phase failed: {} errors ({:?}), {} wrong rows",
        unloaded.errors,
        unloaded.first_error,
        unloaded.mismatches
    );
    let sustained = run_load(&client, &spec(concurrency, args.duration, 3), None).await?;
    anyhow::ensure!(
        sustained.mismatches == 0,
        "{} wrong rows",
        sustained.mismatches
    );
    let sustainable_per_s = sustained.requests as f64 / sustained.elapsed.as_secs_f64();
    println!("phase        conc   req/s     p50_us   p99_us   max_us   refused  errors");
    let line =
        |name: &str, conc: String, rate: f64, l: &LatencySnapshot, refused: u64, errors: u64| {
            println!(
                "{name:<12} {conc:<6} {rate:<9.0} {:<8.0} {:<8.0} {:<8.0} {refused:<8} {errors}",
                l.p50_us, l.p99_us, l.max_us
            );
        };
    line(
        "unloaded",
        "1".into(),
        unloaded.requests as f64 / unloaded.elapsed.as_secs_f64(),
        &unloaded.latency,
        0,
        unloaded.errors,
    );
    line(
        "sustainable",
        concurrency.to_string(),
        sustainable_per_s,
        &sustained.latency,
        0,
        sustained.errors,
    );

    let rate = sustainable_per_s * args.load_factor;
    let mut clients = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        clients.push(connect().await?);
    }
    let o = overload(args, &clients, &client, info.rows, rate, check.as_ref()).await?;
    line(
        "overload",
        format!("{:.1}x", args.load_factor),
        o.admitted.count as f64 / o.elapsed.as_secs_f64(),
        &o.admitted,
        o.refused.count,
        o.other_errors,
    );
    println!(
        "overload: offered {:.0} req/s ({:.1}x the sustainable {:.0}); admitted {:.0} req/s, \
         refused {:.0} req/s",
        o.offered_per_s,
        o.offered_per_s / sustainable_per_s,
        sustainable_per_s,
        o.admitted.count as f64 / o.elapsed.as_secs_f64(),
        o.refused.count as f64 / o.elapsed.as_secs_f64()
    );
    println!(
        "refused: p50 {:.0} us, p99 {:.0} us, max {:.0} us",
        o.refused.p50_us, o.refused.p99_us, o.refused.max_us
    );
    if let Some(e) = &o.first_other {
        println!("first other error: {e}");
    }
    let rss_bound = rss_idle + stats.answer_budget_bytes + (32 << 20);
    println!(
        "server RSS: {:.1} MiB after warm-up, at most {:.1} MiB under overload; stated bound \
         {:.1} MiB (after warm-up + answer budget {:.0} MiB + 32 MiB HTTP/2 buffers)",
        rss_idle as f64 / 1048576.0,
        o.rss_max as f64 / 1048576.0,
        rss_bound as f64 / 1048576.0,
        stats.answer_budget_bytes as f64 / 1048576.0
    );
    let ratio = o.admitted.p99_us / unloaded.latency.p99_us.max(1.0);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "criteria: admitted p99 / unloaded p99 = {ratio:.2} (<= 2: {}); refusal p99 {:.0} us < \
         unloaded p50 {:.0} us: {}; RSS under bound: {}; other errors {}; wrong rows {}",
        verdict(ratio <= 2.0),
        o.refused.p99_us,
        unloaded.latency.p50_us,
        verdict(o.refused.p99_us < unloaded.latency.p50_us),
        verdict(o.rss_max <= rss_bound),
        o.other_errors,
        o.wrong_rows
    );
    anyhow::ensure!(o.wrong_rows == 0, "{} wrong rows", o.wrong_rows);
    Ok(())
}

/// Sends requests at `rate` per second for the duration, each on the next of `clients`, not
/// waiting for answers; samples the server's RSS through `stats_client`.
async fn overload(
    args: &OverloadArgs,
    clients: &[Client],
    stats_client: &Client,
    rows: u64,
    rate: f64,
    check: Option<&RowCheck>,
) -> anyhow::Result<Overload> {
    let admitted = Arc::new(LatencyHistogram::new());
    let refused = Arc::new(LatencyHistogram::new());
    let other_errors = Arc::new(AtomicU64::new(0));
    let wrong_rows = Arc::new(AtomicU64::new(0));
    let first_other = Arc::new(std::sync::OnceLock::<String>::new());
    let mut sampler = IdSampler::new(&args.dist, rows, 4, 0).map_err(anyhow::Error::msg)?;
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (client, rss_max) = (stats_client.clone(), rss_max.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(s) = client.stats(false).await {
                    rss_max.fetch_max(s.process_rss_bytes, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < args.duration {
        ticks.tick().await;
        let mut ids = Vec::with_capacity(args.batch);
        sampler.fill(&mut ids, args.batch);
        let client = clients[sent as usize % clients.len()].clone();
        let (table, check) = (args.table.clone(), check.cloned());
        let (admitted, refused, other_errors, wrong_rows, first_other) = (
            admitted.clone(),
            refused.clone(),
            other_errors.clone(),
            wrong_rows.clone(),
            first_other.clone(),
        );
        tasks.spawn(async move {
            let t = Instant::now();
            match client.lookup(&table, &ids).await {
                Ok(r) => {
                    admitted.record(t.elapsed());
                    if let Some(check) = check {
                        let mut expect = Vec::new();
                        let bad = r
                            .iter()
                            .zip(&ids)
                            .filter(|(row, id)| {
                                expect.clear();
                                check(**id, &mut expect);
                                *row != expect.as_slice()
                            })
                            .count();
                        wrong_rows.fetch_add(bad as u64, Ordering::Relaxed);
                    }
                }
                Err(e) if e.code() == Code::ResourceExhausted => refused.record(t.elapsed()),
                Err(e) => {
                    other_errors.fetch_add(1, Ordering::Relaxed);
                    let _ = first_other.set(e.to_string());
                }
            }
        });
        sent += 1;
        // Reap finished requests as we go, so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    let offered_per_s = sent as f64 / start.elapsed().as_secs_f64();
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    sampling.abort();
    Ok(Overload {
        offered_per_s,
        admitted: admitted.snapshot(),
        refused: refused.snapshot(),
        other_errors: other_errors.load(Ordering::Relaxed),
        first_other: first_other.get().cloned(),
        wrong_rows: wrong_rows.load(Ordering::Relaxed),
        rss_max: rss_max.load(Ordering::Relaxed),
        elapsed,
    })
}
