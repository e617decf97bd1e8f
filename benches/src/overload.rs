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
//! The load generator shares the machine with the server, so it is kept cheap: a pool of
//! requests is built before measuring (ids drawn from `--dist`, sent as packed `ids_le` bytes,
//! shared, not re-encoded), every phase sends them the same way, and each answer is checked on a
//! sample of its rows (`--verify-seed`). Latency is from the call to its answer.
//!
//! Pass criteria it prints: admitted p99 at most 2x the unloaded p99; every refusal quick (its
//! p99 below the unloaded p50: no refusal waits in a queue); RSS under the stated bound: the
//! RSS after warm-up plus the server's answer budget (what answers in flight may hold) plus
//! 32 MiB for HTTP/2 buffers; no error other than RESOURCE_EXHAUSTED.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use engram_store::table::{DType, synth_row_filler};
use engram_store_cache::{LatencyHistogram, LatencySnapshot};
use engram_store_client::{Client, proto as pb};
use engram_store_driver::{IdDistribution, IdSampler, RowCheck};
use tonic::Code;

use crate::lookup::parse_seconds;

/// Rows of each answer checked against the synthetic content.
const CHECKED_ROWS: usize = 8;

/// Requests in the pool the phases send from.
const POOL: usize = 256;

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
    /// Seconds of warm-up load first (closed loop at the sustainable concurrency).
    #[arg(long, default_value = "3s", value_parser = parse_seconds)]
    pub warmup: Duration,
    /// Offered load of the overload phase, in multiples of the sustainable rate.
    #[arg(long, default_value_t = 4.0)]
    pub load_factor: f64,
    /// Connections each phase sends on.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Concurrency of the sustainable phase [default: the server's max_rows_in_flight / batch].
    #[arg(long)]
    pub sustainable_concurrency: Option<usize>,
    /// Check a sample of every answer's rows against the synthetic content of this seed
    /// (tables made by `synth`).
    #[arg(long)]
    pub verify_seed: Option<u64>,
    /// Before measuring, prefetch every row of the table into the RAM tier (the hot path).
    #[arg(long)]
    pub prefetch_all: bool,
}

/// One request of the pool: its message (ids packed) and its ids, for checking.
struct Prepared {
    message: pb::LookupRequest,
    ids: Vec<u64>,
}

/// What one phase saw.
#[derive(Debug)]
struct Phase {
    sent: u64,
    admitted: LatencySnapshot,
    refused: LatencySnapshot,
    other_errors: u64,
    first_other: Option<String>,
    wrong_rows: u64,
    rss_max: u64,
    elapsed: Duration,
}

impl Phase {
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counters a phase's requests record into.
#[derive(Default)]
struct Tally {
    admitted: LatencyHistogram,
    refused: LatencyHistogram,
    other_errors: AtomicU64,
    wrong_rows: AtomicU64,
    first_other: std::sync::OnceLock<String>,
}

impl Tally {
    /// Sends `p` on `stub` and records what came back.
    async fn send(
        &self,
        mut stub: engram_store_client::Stub,
        p: &Prepared,
        check: Option<&RowCheck>,
    ) {
        let t = Instant::now();
        let result = stub.lookup(p.message.clone()).await;
        let took = t.elapsed();
        match result {
            Ok(r) => {
                self.admitted.record(took);
                let r = r.into_inner();
                let rb = r.row_bytes as usize;
                if r.rows.len() != p.ids.len() * rb {
                    self.wrong_rows
                        .fetch_add(p.ids.len() as u64, Ordering::Relaxed);
                    return;
                }
                if let Some(check) = check {
                    let mut expect = Vec::new();
                    for (i, &id) in p.ids.iter().enumerate().take(CHECKED_ROWS) {
                        expect.clear();
                        check(id, &mut expect);
                        if r.rows[i * rb..(i + 1) * rb] != expect[..] {
                            self.wrong_rows.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Err(s) if s.code() == Code::ResourceExhausted => self.refused.record(took),
            Err(s) => {
                self.other_errors.fetch_add(1, Ordering::Relaxed);
                let _ = self
                    .first_other
                    .set(format!("{:?}: {}", s.code(), s.message()));
            }
        }
    }

    fn phase(&self, sent: u64, rss_max: u64, elapsed: Duration) -> Phase {
        Phase {
            sent,
            admitted: self.admitted.snapshot(),
            refused: self.refused.snapshot(),
            other_errors: self.other_errors.load(Ordering::Relaxed),
            first_other: self.first_other.get().cloned(),
            wrong_rows: self.wrong_rows.load(Ordering::Relaxed),
            rss_max,
            elapsed,
        }
    }
}

/// The connections and requests every phase uses.
struct Load {
    clients: Vec<Client>,
    stats: Client,
    pool: Arc<Vec<Prepared>>,
    check: Option<RowCheck>,
}

impl Load {
    /// Samples the server's RSS every 100 ms until the returned flag is set; the task returns
    /// the largest seen.
    fn sample_rss(&self) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, flag) = (self.stats.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut max = 0;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = client.stats(false).await {
                    max = max.max(s.process_rss_bytes);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        });
        (stop, task)
    }

    /// `concurrency` requests in flight at all times, for `duration`.
    async fn closed(&self, concurrency: usize, duration: Duration) -> anyhow::Result<Phase> {
        let tally = Arc::new(Tally::default());
        let sent = Arc::new(AtomicU64::new(0));
        let (rss_stop, rss) = self.sample_rss();
        let start = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..concurrency.max(1) {
            let stub = self.clients[k % self.clients.len()].raw();
            let (tally, sent, pool, check) = (
                tally.clone(),
                sent.clone(),
                self.pool.clone(),
                self.check.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = k * 7;
                while start.elapsed() < duration {
                    let p = &pool[i % pool.len()];
                    i += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                    tally.send(stub.clone(), p, check.as_ref()).await;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        let elapsed = start.elapsed();
        rss_stop.store(true, Ordering::Relaxed);
        Ok(tally.phase(sent.load(Ordering::Relaxed), rss.await?, elapsed))
    }

    /// Requests sent at `rate` per second for `duration`, round robin over the connections,
    /// whatever the answers do.
    async fn open(&self, rate: f64, duration: Duration) -> anyhow::Result<Phase> {
        let tally = Arc::new(Tally::default());
        let (rss_stop, rss) = self.sample_rss();
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let stubs: Vec<_> = self.clients.iter().map(Client::raw).collect();
        let start = Instant::now();
        let mut sent = 0u64;
        let mut tasks = tokio::task::JoinSet::new();
        while start.elapsed() < duration {
            ticks.tick().await;
            let stub = stubs[sent as usize % stubs.len()].clone();
            let (tally, pool, check) = (tally.clone(), self.pool.clone(), self.check.clone());
            let i = sent as usize;
            tasks.spawn(async move {
                tally
                    .send(stub, &pool[i % pool.len()], check.as_ref())
                    .await;
            });
            sent += 1;
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        let elapsed = start.elapsed();
        rss_stop.store(true, Ordering::Relaxed);
        Ok(tally.phase(sent, rss.await?, elapsed))
    }
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
    let stats_client = connect().await?;
    let info = stats_client.describe_table(&args.table).await?;
    let dtype = DType::ALL
        .into_iter()
        .find(|d| d.to_proto() as i32 == info.dtype)
        .ok_or_else(|| anyhow::anyhow!("unknown dtype {}", info.dtype))?;
    let check: Option<RowCheck> = args.verify_seed.map(|seed| {
        let check: RowCheck = Arc::new(synth_row_filler(seed, dtype, info.row_dim as usize));
        check
    });
    let stats = stats_client.stats(false).await?;
    let bound_rows = stats.max_rows_in_flight.max(1);
    let admitted_at_once = (bound_rows as usize / args.batch.max(1)).max(1);
    let concurrency = args.sustainable_concurrency.unwrap_or(admitted_at_once);
    println!(
        "engram-bench overload: table {} ({} rows x {} B), batch {}, dist {:?}; server: {} rows \
         in flight at most ({} requests of this batch), answer budget {:.0} MiB",
        args.table,
        info.rows,
        info.row_bytes,
        args.batch,
        args.dist,
        bound_rows,
        admitted_at_once,
        stats.answer_budget_bytes as f64 / 1048576.0
    );
    let mut sampler = IdSampler::new(&args.dist, info.rows, 11, 0).map_err(anyhow::Error::msg)?;
    let pool = (0..POOL)
        .map(|_| {
            let mut ids = Vec::with_capacity(args.batch);
            sampler.fill(&mut ids, args.batch);
            let packed: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
            Prepared {
                message: pb::LookupRequest {
                    table: args.table.clone(),
                    ids_le: packed.into(),
                    ..Default::default()
                },
                ids,
            }
        })
        .collect();
    let mut clients = Vec::with_capacity(args.connections.max(1));
    for _ in 0..args.connections.max(1) {
        clients.push(connect().await?);
    }
    let load = Load {
        clients,
        stats: stats_client.clone(),
        pool: Arc::new(pool),
        check,
    };
    if args.prefetch_all {
        crate::lookup::prefetch_all(&stats_client, &args.table, info.rows).await?;
    }
    if !args.warmup.is_zero() {
        load.closed(concurrency, args.warmup).await?;
    }
    let rss_idle = stats_client.stats(false).await?.process_rss_bytes;

    let unloaded = load.closed(1, args.duration).await?;
    let sustained = load.closed(concurrency, args.duration).await?;
    let sustainable_per_s = sustained.per_s(sustained.admitted.count);
    let overloaded = load
        .open(sustainable_per_s * args.load_factor, args.duration)
        .await?;

    println!(
        "phase        conc    offered/s  admitted/s  p50_us   p99_us   max_us   refused/s  \
         refused_p99_us  other_errors"
    );
    for (name, conc, p) in [
        ("unloaded", "1".to_string(), &unloaded),
        ("sustainable", concurrency.to_string(), &sustained),
        ("overload", "open".to_string(), &overloaded),
    ] {
        println!(
            "{name:<12} {conc:<7} {:<10.0} {:<11.0} {:<8.0} {:<8.0} {:<8.0} {:<10.0} {:<15.0} {}",
            p.per_s(p.sent),
            p.per_s(p.admitted.count),
            p.admitted.p50_us,
            p.admitted.p99_us,
            p.admitted.max_us,
            p.per_s(p.refused.count),
            p.refused.p99_us,
            p.other_errors
        );
        if let Some(e) = &p.first_other {
            println!("  first other error: {e}");
        }
    }
    let o = &overloaded;
    println!(
        "overload: offered {:.0} req/s = {:.1}x the sustainable {:.0} req/s; refused: p50 {:.0} \
         us, p99 {:.0} us, max {:.0} us",
        o.per_s(o.sent),
        o.per_s(o.sent) / sustainable_per_s.max(1e-9),
        sustainable_per_s,
        o.refused.p50_us,
        o.refused.p99_us,
        o.refused.max_us
    );
    let rss_bound = rss_idle + stats.answer_budget_bytes + (32 << 20);
    println!(
        "server RSS: {:.1} MiB after warm-up, at most {:.1} MiB under overload; stated bound \
         {:.1} MiB (after warm-up + answer budget {:.0} MiB + 32 MiB HTTP/2 buffers)",
        rss_idle as f64 / 1048576.0,
        o.rss_max as f64 / 1048576.0,
        rss_bound as f64 / 1048576.0,
        stats.answer_budget_bytes as f64 / 1048576.0
    );
    let ratio = o.admitted.p99_us / unloaded.admitted.p99_us.max(1.0);
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let wrong = unloaded.wrong_rows + sustained.wrong_rows + o.wrong_rows;
    println!(
        "criteria: admitted p99 / unloaded p99 = {ratio:.2} (<= 2: {}); refusal p99 {:.0} us < \
         unloaded p50 {:.0} us: {}; RSS under bound: {}; other errors {}; wrong rows {wrong} \
         (of {CHECKED_ROWS} checked per answer)",
        verdict(ratio <= 2.0),
        o.refused.p99_us,
        unloaded.admitted.p50_us,
        verdict(o.refused.p99_us < unloaded.admitted.p50_us),
        verdict(o.rss_max <= rss_bound),
        unloaded.other_errors + sustained.other_errors + o.other_errors,
    );
    anyhow::ensure!(wrong == 0, "{wrong} wrong rows");
    Ok(())
}
