//! A closed-loop load generator over the Rust client: `concurrency` tasks each send a batch,
//! await its rows, optionally check every row (against what the caller says row `id` must be),
//! and repeat until the duration is up. Used by `engram-store demo` and `engram-bench lookup`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engram_store_cache::{LatencyHistogram, LatencySnapshot};
use engram_store_client::Client;
use indicatif::ProgressBar;

use crate::workload::{IdDistribution, IdSampler};

/// How to check returned rows: writes the bytes row `id` must hold into the buffer (sized to a
/// row by the caller).
pub type RowCheck = Arc<dyn Fn(u64, &mut Vec<u8>) + Send + Sync>;

/// What to run.
#[derive(Clone)]
pub struct LoadSpec {
    /// Table name.
    pub table: String,
    /// Rows in the table.
    pub rows: u64,
    /// Id distribution.
    pub dist: IdDistribution,
    /// Ids per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// How long.
    pub duration: Duration,
    /// Row checking, if any.
    pub check: Option<RowCheck>,
    /// Seed of the id streams.
    pub seed: u64,
}

impl std::fmt::Debug for LoadSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadSpec")
            .field("table", &self.table)
            .field("rows", &self.rows)
            .field("dist", &self.dist)
            .field("batch", &self.batch)
            .field("concurrency", &self.concurrency)
            .field("duration", &self.duration)
            .field("checked", &self.check.is_some())
            .field("seed", &self.seed)
            .finish()
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Rows received.
    pub rows: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Requests completed.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Rows that differed from the expected content.
    pub mismatches: u64,
    /// Rows checked.
    pub checked: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Request latency.
    pub latency: LatencySnapshot,
    /// First error seen, if any.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Rows per second.
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    /// Payload bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs the load; `progress` (if any) is advanced in milliseconds of the duration.
pub async fn run_load(
    client: &Client,
    spec: &LoadSpec,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<LoadReport> {
    let latency = Arc::new(LatencyHistogram::new());
    let rows = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mismatches = Arc::new(AtomicU64::new(0));
    let checked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let first_error = Arc::new(parking_lot::Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.concurrency.max(1) {
        let mut sampler = IdSampler::new(&spec.dist, spec.rows, spec.seed, c as u64)
            .map_err(anyhow::Error::msg)?;
        let (client, spec) = (client.clone(), spec.clone());
        let (latency, rows, bytes, requests, errors, mismatches, checked, stop, first_error) = (
            latency.clone(),
            rows.clone(),
            bytes.clone(),
            requests.clone(),
            errors.clone(),
            mismatches.clone(),
            checked.clone(),
            stop.clone(),
            first_error.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(spec.batch);
            let mut expect = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sampler.fill(&mut ids, spec.batch);
                let t = Instant::now();
                let result = client.lookup(&spec.table, &ids).await;
                latency.record(t.elapsed());
                requests.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok(r) => {
                        rows.fetch_add(r.len() as u64, Ordering::Relaxed);
                        bytes.fetch_add(r.bytes().len() as u64, Ordering::Relaxed);
                        if let Some(check) = &spec.check {
                            let mut bad = 0;
                            for (row, &id) in r.iter().zip(&ids) {
                                expect.clear();
                                check(id, &mut expect);
                                if row != expect.as_slice() {
                                    bad += 1;
                                }
                            }
                            mismatches.fetch_add(bad, Ordering::Relaxed);
                            checked.fetch_add(r.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }));
    }
    while start.elapsed() < spec.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(p) = progress {
            p.set_position(start.elapsed().as_millis().min(spec.duration.as_millis()) as u64);
            p.set_message(format!(
                "{:.2} M rows/s",
                rows.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64() / 1e6
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await?;
    }
    let elapsed = start.elapsed();
    let first_error = first_error.lock().clone();
    Ok(LoadReport {
        rows: rows.load(Ordering::Relaxed),
        bytes: bytes.load(Ordering::Relaxed),
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        mismatches: mismatches.load(Ordering::Relaxed),
        checked: checked.load(Ordering::Relaxed),
        elapsed,
        latency: latency.snapshot(),
        first_error,
    })
}
