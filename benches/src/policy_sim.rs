//! `engram-bench policy`: runs cache policies over one row-id trace at several cache sizes and
//! reports hit rate, measured metadata bytes per row and speed, as CSV, an SVG plot and a table.
//!
//! Inputs ([`trace`]): a real token trace hashed with the Engram hashing (`--tokens`), a raw
//! row-id trace (`--row-trace`), or synthetic Zipf (`--zipf`). Cache sizes ([`sizes`]) are
//! fractions of the distinct rows the trace touches, or row counts. Policies ([`spec`]) include
//! Belady's OPT, the offline upper bound, and moka's W-TinyLFU, the library baseline.
//!
//! Each (policy, size) pair runs on a thread of its own; the policy's footprint is the live heap
//! that thread allocated and still holds at the end, read from the counting allocator ([`crate::alloc_meter`]), and
//! for policies that account for themselves the simulator checks the two agree.

pub mod csv;
pub mod outcome;
pub mod plot;
pub mod sizes;
pub mod spec;
pub mod table;
pub mod trace;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use engram_store_cache::policy::next_uses;

use crate::alloc_meter::thread_live_bytes;
use outcome::Outcome;
use sizes::CacheSize;
use spec::PolicySpec;
use trace::Trace;

/// Arguments of `engram-bench policy`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// Token trace (`NAME.tokens.u32`, little-endian u32; documents from `NAME.docs.u64` beside
    /// it), hashed into one layer's row ids. Several, comma-separated or repeated, run one after
    /// the other into one CSV (its `trace` column tells them apart), one plot and table each.
    #[arg(long, value_name = "FILE", group = "input", value_delimiter = ',', num_args = 1..)]
    pub tokens: Vec<PathBuf>,
    /// Table layout JSON for `--tokens` [default: the built-in Engram-27B layout].
    #[arg(long, value_name = "LAYOUT.json")]
    pub layout: Option<PathBuf>,
    /// Raw -> compressed token map for `--tokens`.
    #[arg(
        long,
        value_name = "MAP.npy",
        default_value = "testdata/engram/dsv3-compress.npy"
    )]
    pub compress: PathBuf,
    /// Layer whose rows `--tokens` traces [default: the layout's first layer].
    #[arg(long, value_name = "ID")]
    pub layer: Option<u32>,
    /// Keep only the first N heads of each n-gram order of `--tokens` (quick tuning sweeps; the
    /// heads of an n-gram are read together, so hit rates barely change) [default: all].
    #[arg(long, value_name = "N")]
    pub heads: Option<usize>,
    /// Raw row-id trace (little-endian u64 per access).
    #[arg(long, value_name = "FILE", group = "input")]
    pub row_trace: Option<PathBuf>,
    /// Synthetic Zipf trace with this exponent (needs `--rows` and `--requests`).
    #[arg(long, value_name = "S", group = "input")]
    pub zipf: Option<f64>,
    /// Table rows: the Zipf universe, or the bound every `--row-trace` id must be below.
    #[arg(long, value_name = "N")]
    pub rows: Option<u64>,
    /// Zipf requests.
    #[arg(long, value_name = "M", default_value_t = 10_000_000)]
    pub requests: usize,
    /// Zipf seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Cache sizes: percentages of the distinct rows the trace touches, or row counts.
    #[arg(long, default_value = "0.5%,1%,2%,5%,10%,20%")]
    pub cache: String,
    /// Policies, comma-separated: names (`all` for every one); `wtinylfu:w=..:c=..` tunes the default.
    #[arg(long, default_value = "all")]
    pub policies: String,
    /// Worker threads (one (policy, size) pair each at a time) [default: available cores].
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Write the CSV here.
    #[arg(long, value_name = "OUT.csv")]
    pub csv: Option<PathBuf>,
    /// Write the SVG plot here (with several traces, one per trace: `OUT-TRACE.svg`).
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,
    /// Cache sizes at which moka runs, when it is selected (it is 10-100x slower than the slot
    /// policies) [default: every size of `--cache`].
    #[arg(long, value_name = "SIZES")]
    pub moka_cache: Option<String>,
    /// Write a Markdown summary here: per trace and size, the default against the best other
    /// online policy, OPT and moka.
    #[arg(long, value_name = "OUT.md")]
    pub summary: Option<PathBuf>,
}

/// Runs `engram-bench policy`.
pub fn run(args: &PolicyArgs) -> Result<()> {
    let sizes = sizes::parse_sizes(&args.cache)?;
    let moka_sizes = match &args.moka_cache {
        Some(list) => Some(sizes::parse_sizes(list)?),
        None => None,
    };
    let specs = spec::parse_policies(&args.policies)?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let inputs = inputs(args)?;
    let mut all = Vec::new();
    for input in &inputs {
        let started = Instant::now();
        let trace = input.load(args)?;
        eprintln!(
            "trace {}: {} accesses, {} distinct rows (loaded in {:.1}s)",
            trace.name,
            trace.rows.len(),
            trace.distinct,
            started.elapsed().as_secs_f64()
        );
        let outcomes = simulate_with(&trace, &sizes, moka_sizes.as_deref(), &specs, jobs)?;
        if let Some(path) = &args.plot {
            let path = if inputs.len() > 1 {
                per_trace_path(path, &trace.name)
            } else {
                path.clone()
            };
            plot::draw(&path, &outcomes)?;
        }
        print!("{}", table::render(&outcomes));
        all.extend(outcomes);
    }
    if let Some(path) = &args.csv {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?,
        );
        csv::write(&mut file, &all).with_context(|| format!("write {}", path.display()))?;
    }
    if let Some(path) = &args.summary {
        std::fs::write(path, table::summary(&all))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// One trace to simulate, as given on the command line.
enum Input<'a> {
    Tokens(&'a Path),
    Rows(&'a Path),
    Zipf(f64, u64),
}

fn inputs(args: &PolicyArgs) -> Result<Vec<Input<'_>>> {
    Ok(if !args.tokens.is_empty() {
        args.tokens.iter().map(|t| Input::Tokens(t)).collect()
    } else if let Some(path) = &args.row_trace {
        vec![Input::Rows(path)]
    } else if let Some(s) = args.zipf {
        let Some(rows) = args.rows else {
            bail!("--zipf needs --rows");
        };
        vec![Input::Zipf(s, rows)]
    } else {
        bail!("give an input: --tokens, --row-trace or --zipf")
    })
}

impl Input<'_> {
    fn load(&self, args: &PolicyArgs) -> Result<Trace> {
        match *self {
            Input::Tokens(tokens) => {
                let hashing = trace::Hashing {
                    layout: args.layout.as_deref(),
                    compress: &args.compress,
                    layer: args.layer,
                    heads_per_order: args.heads,
                };
                trace::from_tokens(tokens, &hashing)
            }
            Input::Rows(path) => trace::from_row_file(path, args.rows),
            Input::Zipf(s, rows) => trace::zipf(s, rows, args.requests, args.seed),
        }
    }
}

/// `OUT.svg` -> `OUT-TRACE.svg`.
fn per_trace_path(path: &Path, trace: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("policy");
    let ext = path.extension().and_then(|s| s.to_str()).unwrap_or("svg");
    path.with_file_name(format!("{stem}-{trace}.{ext}"))
}

/// Runs every (policy, size) pair over `trace` on `jobs` threads; outcomes in (size, policy)
/// order.
pub fn simulate(
    trace: &Trace,
    sizes: &[CacheSize],
    specs: &[PolicySpec],
    jobs: usize,
) -> Result<Vec<Outcome>> {
    simulate_with(trace, sizes, None, specs, jobs)
}

/// [`simulate`], with moka only at `moka_sizes` when given.
pub fn simulate_with(
    trace: &Trace,
    sizes: &[CacheSize],
    moka_sizes: Option<&[CacheSize]>,
    specs: &[PolicySpec],
    jobs: usize,
) -> Result<Vec<Outcome>> {
    let next = if specs.iter().any(PolicySpec::is_opt) {
        next_uses(&trace.rows)
    } else {
        Arc::from(Vec::new())
    };
    let work: Vec<(usize, &PolicySpec)> = sizes
        .iter()
        .flat_map(|s| specs.iter().map(move |p| (s, p)))
        .filter(|(s, p)| !p.is_moka() || moka_sizes.is_none_or(|m| m.contains(s)))
        .map(|(s, p)| (s.rows(trace.distinct), p))
        .collect();
    let results: Mutex<Vec<Option<Result<Outcome>>>> =
        Mutex::new(work.iter().map(|_| None).collect());
    let cursor = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, work.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = cursor.fetch_add(1, Ordering::Relaxed);
                    let Some(&(rows, spec)) = work.get(i) else {
                        break;
                    };
                    // A fresh thread per simulation: its allocation count starts at zero and no
                    // earlier simulation's deferred frees land on it.
                    let outcome = std::thread::scope(|s| {
                        s.spawn(|| simulate_one(trace, rows, spec, &next))
                            .join()
                            .unwrap_or_else(|_| bail!("simulation of {} panicked", spec.label))
                    });
                    if let Ok(o) = &outcome {
                        eprintln!(
                            "  {:<26} {:>9} rows: hit rate {:6.2}%  {:6.2} B/row  {:6.2} Mops/s",
                            o.policy,
                            o.cache_rows,
                            o.hit_rate() * 100.0,
                            o.overhead_bytes_per_row(),
                            o.ops_per_sec() / 1e6
                        );
                    }
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(outcome);
                    }
                }
            });
        }
    });
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a simulation worker panicked"))?;
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| bail!("a simulation did not finish")))
        .collect()
}

/// Runs one policy at one size over the whole trace, on the calling thread.
fn simulate_one(
    trace: &Trace,
    rows: usize,
    spec: &PolicySpec,
    next: &Arc<[u64]>,
) -> Result<Outcome> {
    let heap_before = thread_live_bytes();
    let mut policy = spec.build(rows, next)?;
    let start = Instant::now();
    let mut hits = 0u64;
    for &row in &trace.rows {
        hits += u64::from(policy.access(row));
    }
    let seconds = start.elapsed().as_secs_f64();
    let measured_bytes = thread_live_bytes() - heap_before;
    let accounted_bytes = policy.accounted_bytes();
    if let Some(a) = accounted_bytes
        && a as i64 != measured_bytes
    {
        eprintln!(
            "warning: {} at {rows} rows accounts {a} bytes, the allocator measured {measured_bytes}",
            spec.label
        );
    }
    drop(policy);
    Ok(Outcome {
        trace: trace.name.clone(),
        policy: spec.label.clone(),
        is_default: spec.is_default(),
        cache_fraction: rows as f64 / trace.distinct.max(1) as f64,
        cache_rows: rows,
        hits,
        accesses: trace.rows.len() as u64,
        measured_bytes,
        accounted_bytes,
        seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_matches_the_allocator_and_opt_bounds_all() -> Result<()> {
        let trace = trace::zipf(0.9, 20_000, 200_000, 3)?;
        let sizes = sizes::parse_sizes("1%,10%")?;
        let specs = spec::parse_policies("all,s3sketch:w=0.1,s3mini:ms=3:mr=16")?;
        let outcomes = simulate(&trace, &sizes, &specs, 2)?;
        assert_eq!(outcomes.len(), sizes.len() * specs.len());
        for o in &outcomes {
            if let Some(a) = o.accounted_bytes {
                assert_eq!(
                    a as i64, o.measured_bytes,
                    "{} at {}",
                    o.policy, o.cache_rows
                );
            }
            assert!(o.measured_bytes > 0, "{}", o.policy);
            let opt = outcomes
                .iter()
                .find(|x| x.policy == "opt" && x.cache_rows == o.cache_rows)
                .map(Outcome::hit_rate)
                .unwrap_or(0.0);
            assert!(o.hit_rate() <= opt, "{} beats opt", o.policy);
            assert!(
                o.hit_rate() > 0.05,
                "{} hit rate {}",
                o.policy,
                o.hit_rate()
            );
        }
        let default = outcomes.iter().filter(|o| o.is_default).count();
        assert_eq!(default, sizes.len());
        let report = table::render(&outcomes);
        assert!(table::summary(&outcomes).contains("gap closed"));
        assert!(report.contains("gap closed"), "{report}");
        let dir = tempfile::tempdir()?;
        let svg = dir.path().join("p.svg");
        plot::draw(&svg, &outcomes)?;
        assert!(std::fs::read_to_string(&svg)?.contains("<svg"));
        Ok(())
    }
}
