//! `engram-bench ngrams`: what server-side hashing costs. LookupNgrams (the server compresses
//! the tokens, hashes them into row ids, dedupes the batch and assembles the rows) against plain
//! Lookup of the very same row ids (compressed and hashed here, ahead of the timed part), over
//! the same batches of a real token trace, with the same concurrency and the same server. Plain
//! Lookup is the limit the n-gram path is measured against: the report gives rows/s and latency
//! of both, per run and as medians, and their ratio.
//!
//! Batches: every document of the trace is cut into `--seq-len`-token sequences (the tail shorter
//! than that is dropped), each carrying the `max_ngram_size - 1` tokens before it in its document
//! as context, so no n-gram crosses a document and every request has the same shape; `--seqs`
//! consecutive sequences make one request. Before timing, the first requests are checked byte
//! for byte: LookupNgrams must return what Lookup of the local row ids returns.
//!
//! A tensor-parallel rank's requests (`--ranks R --rank r`) ask for that rank's hash columns only
//! (vLLM's `engram_head_shard`), and the local ids are those columns'. With a table larger than
//! the server's RAM tier, `--iops-file` (the table's data file) measures the disk's raw io_uring
//! random-read IOPS in the same run (before and after the timed runs), and the report gives,
//! per path, MB/s of rows delivered and the server's disk reads per second (from its Stats,
//! per segment) beside that limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use engram_store::engine::DedupedIds;
use engram_store::group::{GroupFiles, layer_table_name};
use engram_store_client::{Client, proto as pb, token_sequence};
use engram_store_hashing::{CompressionMap, HashInput, LayerHasher, head_shard};

use crate::policy_sim::trace::read_token_trace;

/// `ngrams` flags.
#[derive(Debug, Clone, Args)]
pub struct NgramsArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub addr: String,
    /// Data directory the server serves; the group's layout and compression map are read from
    /// it to hash locally.
    #[arg(long)]
    pub data: PathBuf,
    /// Engram group.
    #[arg(long)]
    pub group: String,
    /// Layer of the group [default: its first].
    #[arg(long)]
    pub layer: Option<u32>,
    /// Token trace: NAME.tokens.u32, with NAME.docs.u64 beside it.
    #[arg(long)]
    pub tokens: PathBuf,
    /// Sequences per request.
    #[arg(long, default_value_t = 8)]
    pub seqs: usize,
    /// Tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Requests per measured pass; 0: every request the trace makes, once.
    #[arg(long, default_value_t = 0)]
    pub requests: usize,
    /// Measured runs; each times both paths over the same requests.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Requests per segment: a run alternates the paths every segment, over the same requests.
    #[arg(long, default_value_t = 20)]
    pub segment: usize,
    /// The server's process id (a server on this machine): its CPU time per row is measured
    /// for each path, which a shared machine's load disturbs far less than throughput.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Untimed passes of both paths first (they fill the server's RAM tier alike).
    #[arg(long, default_value_t = 1)]
    pub warmup_passes: usize,
    /// Requests checked byte for byte (LookupNgrams against Lookup) before timing.
    #[arg(long, default_value_t = 4)]
    pub verify: usize,
    /// Requests over which LookupNgrams' extra work (hash, dedupe, copies) is timed here.
    #[arg(long, default_value_t = 50)]
    pub attribute: usize,
    /// Tensor-parallel ranks: requests ask for one rank's hash columns only (see --rank).
    #[arg(long, default_value_t = 1)]
    pub ranks: usize,
    /// The rank whose columns are asked for (0..ranks).
    #[arg(long, default_value_t = 0)]
    pub rank: usize,
    /// A file to measure the disk's raw io_uring O_DIRECT random-read IOPS on, before and after
    /// the timed runs (the layer table's data file): the limit the server's disk reads are
    /// compared with.
    #[arg(long)]
    pub iops_file: Option<PathBuf>,
    /// Reads in flight for --iops-file (the server's default queue depth).
    #[arg(long, default_value_t = 128)]
    pub iops_queue_depth: usize,
    /// Seconds of each IOPS measurement.
    #[arg(long, default_value_t = 5.0)]
    pub iops_seconds: f64,
}

/// One request in both forms.
#[derive(Debug)]
struct Batch {
    /// The LookupNgrams request (raw token ids and contexts).
    ngrams: pb::LookupNgramsRequest,
    /// The row ids it reads, computed here: `[sequence][position][order, head]`.
    ids: Vec<u64>,
}

/// The two paths measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Ngrams,
    Lookup,
}

/// One timed pass of one path.
#[derive(Debug, Clone, Copy)]
pub struct PassResult {
    /// Rows delivered per second (wall clock of the whole pass).
    pub rows_per_s: f64,
    /// Median request latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile request latency, microseconds.
    pub p99_us: f64,
    /// Server CPU time per row, nanoseconds (0 without `--server-pid`).
    pub server_cpu_ns_per_row: f64,
    /// Row bytes delivered per second, MB/s (10^6).
    pub mb_per_s: f64,
    /// The server's disk reads per second while this path ran (all its tables).
    pub disk_reads_per_s: f64,
    /// Rows the server's RAM tier served over rows it looked up there.
    pub ram_hit_rate: f64,
}

/// One run: both paths over the same requests.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// LookupNgrams.
    pub ngrams: PassResult,
    /// Lookup of the same row ids.
    pub lookup: PassResult,
}

impl RunResult {
    /// LookupNgrams rows/s over Lookup rows/s.
    pub fn ratio(&self) -> f64 {
        self.ngrams.rows_per_s / self.lookup.rows_per_s
    }

    /// Server CPU per row of LookupNgrams over that of Lookup (NaN without `--server-pid`).
    pub fn cpu_ratio(&self) -> f64 {
        self.ngrams.server_cpu_ns_per_row / self.lookup.server_cpu_ns_per_row
    }
}

/// What the benchmark measured.
#[derive(Debug, Clone)]
pub struct NgramsReport {
    /// Rows per request.
    pub rows_per_request: usize,
    /// Requests per pass.
    pub requests: usize,
    /// Every run.
    pub runs: Vec<RunResult>,
    /// LookupNgrams' extra work per request, timed locally.
    pub attribution: Attribution,
}

impl NgramsReport {
    /// Median LookupNgrams rows/s.
    pub fn ngrams_rows_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.ngrams.rows_per_s).collect())
    }

    /// Median Lookup rows/s.
    pub fn lookup_rows_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.lookup.rows_per_s).collect())
    }

    /// The median of `f` over the runs, for one path.
    pub fn median_of(&self, f: impl Fn(&RunResult) -> f64) -> f64 {
        median(self.runs.iter().map(f).collect())
    }

    /// Median of the per-run ratios.
    pub fn ratio(&self) -> f64 {
        median(self.runs.iter().map(RunResult::ratio).collect())
    }

    /// Median of the per-run server CPU ratios.
    pub fn cpu_ratio(&self) -> f64 {
        median(self.runs.iter().map(RunResult::cpu_ratio).collect())
    }
}

/// The median (the mean of the middle two of an even count; 0 for none).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The `q` quantile of sorted latencies, microseconds.
fn quantile_us(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// How requests are made from the trace.
#[derive(Debug, Clone)]
struct Shape<'a> {
    group: &'a str,
    map: &'a CompressionMap,
    hasher: &'a LayerHasher,
    /// Tokens of context a sequence carries (`max_ngram_size - 1`).
    context_len: usize,
    seqs: usize,
    seq_len: usize,
    /// The hash columns asked for (all, or one tensor-parallel rank's).
    columns: std::ops::Range<usize>,
}

/// Cuts the trace into requests; see the module doc.
fn make_batches(raw: &[u32], docs: &[u64], shape: &Shape<'_>) -> Result<Vec<Batch>> {
    let Shape {
        group,
        map,
        hasher,
        context_len,
        seqs,
        seq_len,
        ref columns,
    } = *shape;
    let all_columns = columns.len() == hasher.heads_total();
    ensure!(
        seqs > 0 && seq_len > 0,
        "--seqs and --seq-len must be positive"
    );
    let mut batches = Vec::new();
    let mut current: Option<Batch> = None;
    let (mut tokens_c, mut context_c, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for (d, w) in docs.windows(2).enumerate() {
        let (start, end) = (w[0] as usize, w[1] as usize);
        let mut at = start;
        while at + seq_len <= end {
            let tokens = &raw[at..at + seq_len];
            let context = &raw[at.saturating_sub(context_len).max(start)..at];
            map.compress_into(tokens, &mut tokens_c)
                .with_context(|| format!("compress document {d} at token {at}"))?;
            map.compress_into(context, &mut context_c)
                .with_context(|| format!("compress the context of document {d} at token {at}"))?;
            let input = HashInput::new(&tokens_c).context(&context_c, &[]);
            hasher
                .rows_into(&input, columns.clone(), &mut rows)
                .with_context(|| format!("hash document {d} at token {at}"))?;
            let batch = current.get_or_insert_with(|| Batch {
                ngrams: pb::LookupNgramsRequest {
                    group: group.to_owned(),
                    layer_id: hasher.layer_id(),
                    sequences: Vec::with_capacity(seqs),
                    compressed: false,
                    version: None,
                    columns: (!all_columns).then_some(pb::ColumnRange {
                        start: columns.start as u32,
                        end: columns.end as u32,
                    }),
                },
                ids: Vec::with_capacity(seqs * rows.len()),
            });
            batch.ngrams.sequences.push(token_sequence(tokens, context));
            batch.ids.extend_from_slice(&rows);
            if batch.ngrams.sequences.len() == seqs {
                batches.extend(current.take());
            }
            at += seq_len;
        }
    }
    Ok(batches)
}

/// What one path did in one segment.
#[derive(Debug, Default)]
struct Tally {
    rows: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    /// Server CPU time, when its process is known.
    server_cpu: Duration,
    /// Bytes of rows delivered.
    bytes: usize,
    /// The server's disk reads.
    disk_reads: u64,
    /// The server's RAM tier: rows found, rows looked up.
    ram_hits: u64,
    ram_lookups: u64,
}

impl Tally {
    fn result(mut self) -> PassResult {
        self.latencies.sort_unstable();
        PassResult {
            rows_per_s: self.rows as f64 / self.wall.as_secs_f64().max(1e-9),
            p50_us: quantile_us(&self.latencies, 0.50),
            p99_us: quantile_us(&self.latencies, 0.99),
            server_cpu_ns_per_row: self.server_cpu.as_secs_f64() * 1e9 / self.rows.max(1) as f64,
            mb_per_s: self.bytes as f64 / 1e6 / self.wall.as_secs_f64().max(1e-9),
            disk_reads_per_s: self.disk_reads as f64 / self.wall.as_secs_f64().max(1e-9),
            ram_hit_rate: self.ram_hits as f64 / self.ram_lookups.max(1) as f64,
        }
    }
}

/// CPU time (user + system) of process `pid` so far, from /proc/PID/stat.
fn process_cpu(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are plain.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("parse {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {} of {path}", i + 3))
    };
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = u64::try_from(hz).ok().filter(|&h| h > 0).unwrap_or(100);
    Ok(Duration::from_secs_f64(
        (ticks(11)? + ticks(12)?) as f64 / hz as f64,
    ))
}

/// The server's counters a segment is charged with: disk reads, RAM-tier hits and lookups.
async fn tier_counters(client: &Client) -> Result<(u64, u64, u64)> {
    let s = client.stats(false).await.context("Stats")?;
    let tier = |name: &str| s.tiers.iter().find(|t| t.tier == name);
    let reads = tier("nvme").map_or(0, |t| t.reads);
    let (hits, misses) = tier("ram").map_or((0, 0), |t| (t.hits, t.misses));
    Ok((reads, hits, hits + misses))
}

/// The disk's raw io_uring O_DIRECT random 4 KiB read IOPS on `file`, printed.
async fn raw_iops(file: &std::path::Path, args: &NgramsArgs) -> Result<f64> {
    let (path, qd, seconds) = (file.to_path_buf(), args.iops_queue_depth, args.iops_seconds);
    let iops = tokio::task::spawn_blocking(move || {
        crate::limits::uring_random_read_iops(&path, qd, 4096, seconds)
    })
    .await
    .context("IOPS measurement")??;
    println!(
        "raw io_uring O_DIRECT random 4096 B reads, qd {qd}, {seconds} s on {}: {iops:.0} IOPS",
        file.display()
    );
    Ok(iops)
}

/// What the timed requests go to and how.
#[derive(Debug, Clone)]
struct Target {
    client: Client,
    table: Arc<str>,
    batches: Arc<Vec<Batch>>,
    concurrency: usize,
    server_pid: Option<u32>,
}

/// Runs requests `range` (indices into the batches, cycling) of one path, `concurrency` in
/// flight, adding what it measured to `tally`.
async fn segment(
    target: &Target,
    path: Route,
    range: std::ops::Range<usize>,
    tally: &mut Tally,
) -> Result<()> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let end = range.end;
    let server_pid = target.server_pid;
    let cpu_before = server_pid.map(process_cpu).transpose()?;
    let counters_before = tier_counters(&target.client).await?;
    let start = Instant::now();
    let mut workers = Vec::with_capacity(target.concurrency);
    for _ in 0..target.concurrency.max(1) {
        let (client, table, batches, next) = (
            target.client.clone(),
            target.table.clone(),
            target.batches.clone(),
            next.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut rows, mut bytes) = (0usize, 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return Ok::<_, anyhow::Error>((latencies, rows, bytes));
                }
                let b = &batches[i % batches.len()];
                let t0 = Instant::now();
                let got = match path {
                    Route::Ngrams => client
                        .lookup_ngrams_request(b.ngrams.clone())
                        .await
                        .with_context(|| format!("LookupNgrams of request {i}"))?,
                    Route::Lookup => client
                        .lookup(&table, &b.ids)
                        .await
                        .with_context(|| format!("Lookup of request {i}"))?,
                };
                latencies.push(t0.elapsed());
                ensure!(
                    got.len() == b.ids.len(),
                    "request {i}: {} rows, expected {}",
                    got.len(),
                    b.ids.len()
                );
                rows += got.len();
                bytes += got.bytes().len();
            }
        }));
    }
    for w in workers {
        let (l, r, b) = w.await.context("benchmark worker")??;
        tally.latencies.extend(l);
        tally.rows += r;
        tally.bytes += b;
    }
    tally.wall += start.elapsed();
    let counters_after = tier_counters(&target.client).await?;
    tally.disk_reads += counters_after.0.saturating_sub(counters_before.0);
    tally.ram_hits += counters_after.1.saturating_sub(counters_before.1);
    tally.ram_lookups += counters_after.2.saturating_sub(counters_before.2);
    if let (Some(pid), Some(before)) = (server_pid, cpu_before) {
        tally.server_cpu += process_cpu(pid)?.saturating_sub(before);
    }
    Ok(())
}

/// One run: segments of `segment_len` requests, each done by both paths back to back (which
/// goes first alternates), so that both see the same load on a shared machine.
async fn run_once(
    target: &Target,
    requests: usize,
    segment_len: usize,
    first: usize,
) -> Result<RunResult> {
    let (mut ngrams, mut lookup) = (Tally::default(), Tally::default());
    let step = segment_len.max(1);
    for (k, at) in (0..requests).step_by(step).enumerate() {
        let range = at..(at + step).min(requests);
        let order = if (k + first).is_multiple_of(2) {
            [Route::Ngrams, Route::Lookup]
        } else {
            [Route::Lookup, Route::Ngrams]
        };
        for path in order {
            let tally = match path {
                Route::Ngrams => &mut ngrams,
                Route::Lookup => &mut lookup,
            };
            segment(target, path, range.clone(), tally).await?;
        }
    }
    Ok(RunResult {
        ngrams: ngrams.result(),
        lookup: lookup.result(),
    })
}

/// The 1-minute load average, for the report (others may share the machine).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The per-request work LookupNgrams adds to a Lookup of the same ids, timed here on one core
/// with the server's own code paths: compress and hash the tokens, dedupe the ids, copy each
/// duplicate row from its first position.
#[derive(Debug, Clone, Copy, Default)]
pub struct Attribution {
    /// Requests timed.
    pub requests: usize,
    /// Compressing and hashing a request's tokens, microseconds.
    pub hash_us: f64,
    /// Deduping a request's row ids, microseconds.
    pub dedupe_us: f64,
    /// Copying the duplicate rows of a request, microseconds.
    pub copy_us: f64,
    /// Distinct ids over ids, averaged over requests.
    pub distinct_in_request: f64,
}

/// Times the work of [`Attribution`] over the first `n` requests.
fn attribute(
    batches: &[Batch],
    shape: &Shape<'_>,
    row_bytes: usize,
    n: usize,
) -> Result<Attribution> {
    let n = n.min(batches.len());
    let mut a = Attribution {
        requests: n,
        ..Attribution::default()
    };
    if n == 0 {
        return Ok(a);
    }
    let (mut tokens, mut context, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    let mut out = vec![0u8; batches[0].ids.len() * row_bytes];
    for b in &batches[..n] {
        let t = Instant::now();
        let mut ids = Vec::with_capacity(b.ids.len());
        for s in &b.ngrams.sequences {
            shape.map.compress_into(&s.tokens, &mut tokens)?;
            shape.map.compress_into(&s.context, &mut context)?;
            let input = HashInput::new(&tokens).context(&context, &[]);
            shape
                .hasher
                .rows_into(&input, shape.columns.clone(), &mut rows)?;
            ids.extend_from_slice(&rows);
        }
        a.hash_us += t.elapsed().as_secs_f64() * 1e6;
        ensure!(ids == b.ids, "local hashing is not deterministic");
        let t = Instant::now();
        let deduped = DedupedIds::new(&ids);
        a.dedupe_us += t.elapsed().as_secs_f64() * 1e6;
        out.resize(ids.len() * row_bytes, 0);
        let t = Instant::now();
        for (position, &k) in deduped.index().iter().enumerate() {
            let from = deduped.first()[k];
            if from != position {
                out.copy_within(
                    from * row_bytes..(from + 1) * row_bytes,
                    position * row_bytes,
                );
            }
        }
        a.copy_us += t.elapsed().as_secs_f64() * 1e6;
        a.distinct_in_request += deduped.distinct().len() as f64 / ids.len().max(1) as f64;
    }
    let k = n as f64;
    a.hash_us /= k;
    a.dedupe_us /= k;
    a.copy_us /= k;
    a.distinct_in_request /= k;
    Ok(a)
}

/// What [`prepare`] makes.
#[derive(Debug)]
struct Prepared {
    table: Arc<str>,
    batches: Arc<Vec<Batch>>,
    /// Distinct row ids over row ids, over the whole trace.
    distinct: f64,
    attribution: Attribution,
}

/// Loads the group and the trace, makes the requests, checks the first ones and times what
/// LookupNgrams adds per request.
async fn prepare(args: &NgramsArgs, client: &Client) -> Result<Prepared> {
    let group = GroupFiles::load(&args.data, &args.group)
        .with_context(|| format!("load group {:?} from {}", args.group, args.data.display()))?;
    let layer = match args.layer {
        Some(l) => l,
        None => match group.layout.layers().first() {
            Some(l) => l.layer_id(),
            None => bail!("group {:?} has no layers", args.group),
        },
    };
    let hasher = LayerHasher::new(&group.layout, layer)
        .with_context(|| format!("hasher of layer {layer}"))?;
    let columns = head_shard(hasher.heads_total(), args.ranks, args.rank)
        .with_context(|| format!("rank {} of {}", args.rank, args.ranks))?;
    let (raw, docs) = read_token_trace(&args.tokens)?;
    let shape = Shape {
        group: &args.group,
        map: &group.map,
        hasher: &hasher,
        context_len: group.layout.max_ngram_size() - 1,
        seqs: args.seqs,
        seq_len: args.seq_len,
        columns,
    };
    let batches = make_batches(&raw, &docs, &shape)?;
    ensure!(
        !batches.is_empty(),
        "{} has no {} sequences of {} tokens",
        args.tokens.display(),
        args.seqs,
        args.seq_len
    );
    let table: Arc<str> = layer_table_name(&args.group, layer).into();
    let distinct = {
        let mut all: Vec<u64> = batches.iter().flat_map(|b| b.ids.iter().copied()).collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        all.len() as f64 / total as f64
    };
    let mut row_bytes = 0;
    for (i, b) in batches.iter().take(args.verify).enumerate() {
        let by_ngrams = client.lookup_ngrams_request(b.ngrams.clone()).await?;
        let by_ids = client.lookup(&table, &b.ids).await?;
        ensure!(
            by_ngrams.bytes() == by_ids.bytes(),
            "request {i}: LookupNgrams and Lookup of the local row ids differ"
        );
        row_bytes = by_ids.row_bytes();
    }
    let row_bytes = if row_bytes == 0 {
        client.describe_table(&table).await?.row_bytes as usize
    } else {
        row_bytes
    };
    let attribution = attribute(&batches, &shape, row_bytes, args.attribute)?;
    Ok(Prepared {
        table,
        batches: Arc::new(batches),
        distinct,
        attribution,
    })
}

/// Runs the benchmark, printing its report as it goes.
pub async fn run(args: &NgramsArgs) -> Result<NgramsReport> {
    let addr = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let client = Client::connect(addr.clone())
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let Prepared {
        table,
        batches,
        distinct,
        attribution,
    } = prepare(args, &client).await?;
    let rows_per_request = batches[0].ids.len();
    let requests = if args.requests == 0 {
        batches.len()
    } else {
        args.requests
    };
    let info = client.describe_table(&table).await?;
    println!(
        "engram-bench ngrams: group {} table {} ({} rows x {} B); {} requests of {} x {} tokens \
         = {} rows ({:.1} MiB), concurrency {}; distinct rows {:.1}% of the trace's row reads; \
         {} requests checked byte for byte",
        args.group,
        table,
        info.rows,
        info.row_bytes,
        requests,
        args.seqs,
        args.seq_len,
        rows_per_request,
        (rows_per_request * info.row_bytes as usize) as f64 / 1048576.0,
        args.concurrency,
        distinct * 100.0,
        args.verify.min(batches.len())
    );
    println!(
        "LookupNgrams' extra work per request, timed here on one core over {} requests: \
         compress+hash {:.0} us, dedupe {:.0} us, duplicate copies {:.0} us; distinct ids \
         {:.1}% of a request's",
        attribution.requests,
        attribution.hash_us,
        attribution.dedupe_us,
        attribution.copy_us,
        attribution.distinct_in_request * 100.0
    );
    let iops_before = match &args.iops_file {
        Some(file) => Some(raw_iops(file, args).await?),
        None => None,
    };
    println!("load average (1 min) at start: {}", load_average());
    let target = Target {
        client: client.clone(),
        table: table.clone(),
        batches: batches.clone(),
        concurrency: args.concurrency,
        server_pid: args.server_pid,
    };
    for _ in 0..args.warmup_passes {
        for path in [Route::Ngrams, Route::Lookup] {
            segment(&target, path, 0..requests, &mut Tally::default()).await?;
        }
    }
    println!(
        "run  ngrams_rows/s  p50_us   p99_us   lookup_rows/s  p50_us   p99_us   ratio   \
         cpu_ns/row ngrams lookup  cpu_ratio  ram_hit"
    );
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        client.stats(true).await?;
        let r = run_once(&target, requests, args.segment, run).await?;
        let s = client.stats(false).await?;
        let ram_hit = s
            .tiers
            .iter()
            .find(|t| t.tier == "ram")
            .map_or(0.0, |t| t.hit_rate);
        let (n, l) = (r.ngrams, r.lookup);
        println!(
            "{:<4} {:<13.0} {:<8.0} {:<8.0} {:<14.0} {:<8.0} {:<8.0} {:<7.3} {:<17.0} {:<6.0} \
             {:<10.3} {:.4}",
            run,
            n.rows_per_s,
            n.p50_us,
            n.p99_us,
            l.rows_per_s,
            l.p50_us,
            l.p99_us,
            r.ratio(),
            n.server_cpu_ns_per_row,
            l.server_cpu_ns_per_row,
            r.cpu_ratio(),
            ram_hit
        );
        for (name, p) in [("ngrams", n), ("lookup", l)] {
            println!(
                "       {name}: {:.1} MB/s of rows, {:.0} disk reads/s{}, RAM hit {:.4}",
                p.mb_per_s,
                p.disk_reads_per_s,
                iops_before.map_or(String::new(), |iops| format!(
                    " ({:.1}% of the raw IOPS)",
                    p.disk_reads_per_s / iops * 100.0
                )),
                p.ram_hit_rate
            );
        }
        runs.push(r);
    }
    let iops_after = match &args.iops_file {
        Some(file) => Some(raw_iops(file, args).await?),
        None => None,
    };
    let report = NgramsReport {
        rows_per_request,
        requests,
        runs,
        attribution,
    };
    println!("load average (1 min) at end: {}", load_average());
    for (name, pick) in [
        (
            "LookupNgrams",
            (|r: &RunResult| r.ngrams) as fn(&RunResult) -> PassResult,
        ),
        ("Lookup", |r: &RunResult| r.lookup),
    ] {
        println!(
            "median {name}: {:.0} rows/s, {:.1} MB/s, {:.0} disk reads/s, RAM hit {:.4}",
            report.median_of(|r| pick(r).rows_per_s),
            report.median_of(|r| pick(r).mb_per_s),
            report.median_of(|r| pick(r).disk_reads_per_s),
            report.median_of(|r| pick(r).ram_hit_rate),
        );
    }
    if let (Some(before), Some(after)) = (iops_before, iops_after) {
        let reads = report.median_of(|r| r.ngrams.disk_reads_per_s);
        println!(
            "raw io_uring random 4096 B reads at qd {} on {}: {:.0} IOPS before the runs, {:.0} \
             after; LookupNgrams' median disk reads/s are {:.1}% of their mean",
            args.iops_queue_depth,
            args.iops_file
                .as_deref()
                .map_or(String::new(), |f| f.display().to_string()),
            before,
            after,
            reads / ((before + after) / 2.0) * 100.0
        );
    }
    println!(
        "median: LookupNgrams {:.0} rows/s, Lookup of the same ids (the limit) {:.0} rows/s, \
         ratio {:.3}: server-side hashing and assembly cost {:.1}% of throughput (target <= 10%)",
        report.ngrams_rows_per_s(),
        report.lookup_rows_per_s(),
        report.ratio(),
        (1.0 - report.ratio()) * 100.0
    );
    if args.server_pid.is_some() {
        println!(
            "median server CPU per row: LookupNgrams / Lookup = {:.3} ({:+.1}%)",
            report.cpu_ratio(),
            (report.cpu_ratio() - 1.0) * 100.0
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use engram_store_hashing::Layout;

    use super::*;

    #[test]
    fn batches_are_whole_sequences_with_their_document_context() -> Result<()> {
        let layout = Layout::demo();
        let hasher = LayerHasher::new(&layout, layout.layers()[0].layer_id())?;
        let map = CompressionMap::from_ids((0..100u32).map(|r| r * 7 % 90).collect());
        // Two documents of 10 and 7 tokens; sequences of 3, two per request.
        let raw: Vec<u32> = (0..17u32).map(|t| t * 13 % 100).collect();
        let docs = [0u64, 10, 17];
        let shape = Shape {
            group: "g",
            map: &map,
            hasher: &hasher,
            context_len: 2,
            seqs: 2,
            seq_len: 3,
            columns: 0..hasher.heads_total(),
        };
        let batches = make_batches(&raw, &docs, &shape)?;
        // Document 0 gives 3 sequences (0..3, 3..6, 6..9), document 1 two (10..13, 13..16):
        // 5 sequences make 2 whole requests, the fifth is dropped.
        assert_eq!(batches.len(), 2);
        let s = &batches[0].ngrams.sequences;
        assert_eq!(s[0].tokens, raw[0..3]);
        assert!(s[0].context.is_empty());
        assert_eq!(s[1].tokens, raw[3..6]);
        assert_eq!(s[1].context, raw[1..3]);
        // The second request: 6..9 of document 0, then 10..13 with no context (new document).
        let s = &batches[1].ngrams.sequences;
        assert_eq!(s[0].context, raw[4..6]);
        assert_eq!(s[1].tokens, raw[10..13]);
        assert!(s[1].context.is_empty());
        // The ids are the hasher's for each sequence after its context.
        let compress = |r: &[u32]| -> Result<Vec<u32>> {
            let mut out = Vec::new();
            map.compress_into(r, &mut out)?;
            Ok(out)
        };
        let mut want = Vec::new();
        let mut one = Vec::new();
        hasher.row_ids_into(&compress(&raw[6..9])?, &compress(&raw[4..6])?, &mut one)?;
        want.extend_from_slice(&one);
        hasher.row_ids_into(&compress(&raw[10..13])?, &[], &mut one)?;
        want.extend_from_slice(&one);
        assert_eq!(batches[1].ids, want);
        assert_eq!(batches[1].ids.len(), 2 * 3 * hasher.heads_total());
        Ok(())
    }

    #[test]
    fn a_ranks_batches_ask_for_its_columns() -> Result<()> {
        let layout = Layout::demo();
        let hasher = LayerHasher::new(&layout, layout.layers()[0].layer_id())?;
        let map = CompressionMap::from_ids((0..100u32).map(|r| r * 7 % 90).collect());
        let raw: Vec<u32> = (0..12u32).map(|t| t * 13 % 100).collect();
        let all = Shape {
            group: "g",
            map: &map,
            hasher: &hasher,
            context_len: 2,
            seqs: 2,
            seq_len: 3,
            columns: 0..hasher.heads_total(),
        };
        let full = make_batches(&raw, &[0, 12], &all)?;
        assert_eq!(full[0].ngrams.columns, None);
        let cols = head_shard(hasher.heads_total(), 4, 3)?;
        let rank = Shape {
            columns: cols.clone(),
            ..all
        };
        let mine = make_batches(&raw, &[0, 12], &rank)?;
        assert_eq!(mine.len(), full.len());
        let range = mine[1].ngrams.columns.expect("a column range");
        assert_eq!((range.start, range.end), (12, 16));
        // Each position's ids are its row of the full ids, restricted to the rank's columns.
        let want: Vec<u64> = full[1]
            .ids
            .chunks(hasher.heads_total())
            .flat_map(|row| row[cols.clone()].to_vec())
            .collect();
        assert_eq!(mine[1].ids, want);
        Ok(())
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let l: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(quantile_us(&l, 0.5), 51.0);
        assert_eq!(quantile_us(&l, 0.99), 99.0);
        assert_eq!(quantile_us(&[], 0.5), 0.0);
    }
}
