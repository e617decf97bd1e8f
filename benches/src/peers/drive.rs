//! Driving a system through its connections, the same way for both systems:
//!
//! - [`drive`]: closed-loop load. One task per connection draws batches of ids from its own
//!   [`IdSampler`] stream (seeded by the caller, so both systems get the same request streams),
//!   fetches them, records the latency, checks the length of every response and the first
//!   columns of every row of one response in `check_every`, until the time is up.
//! - [`scan`]: every row of the table once, in order, each checked in full (warms engram-store's
//!   RAM tier and proves both systems hold the right rows before anything is measured).
//! - [`check_sample`]: random rows checked in full (after measuring).
//!
//! Any error or wrong row ends the call with an error: a benchmark of wrong answers is not run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use engram_store_cache::LatencyHistogram;
use engram_store_driver::{IdDistribution, IdSampler};
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use super::peer::Connection;
use super::verify::RowCheck;

/// One closed-loop run.
#[derive(Debug, Clone)]
pub struct DriveSpec {
    /// Where ids come from.
    pub dist: IdDistribution,
    /// Rows in the table.
    pub rows: u64,
    /// Ids per request.
    pub batch: usize,
    /// How long.
    pub duration: Duration,
    /// Seed of the id streams (task `i` draws stream `i` of this seed).
    pub seed: u64,
    /// Expected content.
    pub check: RowCheck,
    /// Check the first columns of every row of one response in this many.
    pub check_every: u64,
}

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    /// Rows received.
    pub rows: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Requests completed.
    pub requests: u64,
    /// Rows whose first columns were checked.
    pub checked_rows: u64,
    /// From the start until the last task finished its last request.
    pub elapsed: Duration,
    /// Latency of every request.
    pub latency: LatencyHistogram,
}

impl Measured {
    /// Rows per second.
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Payload bytes per second.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, Default)]
struct Counts {
    rows: u64,
    bytes: u64,
    requests: u64,
    checked: u64,
    wrong: u64,
}

/// Runs closed-loop load over `conns` (one task each) and gives them back with the measurement.
pub async fn drive<C: Connection>(conns: Vec<C>, spec: &DriveSpec) -> Result<(Vec<C>, Measured)> {
    let latency = Arc::new(LatencyHistogram::new());
    let stop = Arc::new(AtomicBool::new(false));
    let rb = spec.check.row_bytes();
    let start = Instant::now();
    let mut tasks: Vec<JoinHandle<Result<(C, Counts)>>> = Vec::new();
    for (i, mut conn) in conns.into_iter().enumerate() {
        let mut sampler = IdSampler::new(&spec.dist, spec.rows, spec.seed, i as u64)
            .map_err(anyhow::Error::msg)?;
        let (latency, stop) = (latency.clone(), stop.clone());
        let (batch, check, check_every) = (spec.batch, spec.check, spec.check_every);
        tasks.push(tokio::spawn(async move {
            let mut c = Counts::default();
            let mut ids = Vec::with_capacity(batch);
            while !stop.load(Ordering::Relaxed) {
                sampler.fill(&mut ids, batch);
                let t = Instant::now();
                let result = conn.fetch(&ids).await;
                latency.record(t.elapsed());
                let rows = match result {
                    Ok(rows) => rows,
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        return Err(e.context(format!("request {} of client task {i}", c.requests)));
                    }
                };
                if rows.len() != ids.len() * rb {
                    stop.store(true, Ordering::Relaxed);
                    bail!(
                        "asked for {} rows of {rb} bytes, got {} bytes",
                        ids.len(),
                        rows.len()
                    );
                }
                if c.requests % check_every == 0 {
                    c.wrong += check.prefix(&ids, &rows);
                    c.checked += ids.len() as u64;
                }
                c.requests += 1;
                c.rows += ids.len() as u64;
                c.bytes += rows.len() as u64;
            }
            Ok((conn, c))
        }));
    }
    tokio::time::sleep(spec.duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut conns = Vec::with_capacity(tasks.len());
    let mut total = Counts::default();
    let mut first_error = None;
    for t in tasks {
        match t.await.context("client task panicked")? {
            Ok((conn, c)) => {
                conns.push(conn);
                total.rows += c.rows;
                total.bytes += c.bytes;
                total.requests += c.requests;
                total.checked += c.checked;
                total.wrong += c.wrong;
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    ensure!(
        total.wrong == 0,
        "{} of {} checked rows were wrong",
        total.wrong,
        total.checked
    );
    let latency = Arc::into_inner(latency).context("latency histogram still shared")?;
    Ok((
        conns,
        Measured {
            rows: total.rows,
            bytes: total.bytes,
            requests: total.requests,
            checked_rows: total.checked,
            elapsed,
            latency,
        },
    ))
}

/// Reads rows `0..rows` once in chunks of `chunk` ids over `conns` (one task each) and checks
/// every row in full; gives the connections back.
pub async fn scan<C: Connection>(
    conns: Vec<C>,
    rows: u64,
    chunk: usize,
    check: RowCheck,
) -> Result<Vec<C>> {
    let next = Arc::new(AtomicU64::new(0));
    let chunk = chunk.max(1) as u64;
    let tasks: Vec<JoinHandle<Result<C>>> = conns
        .into_iter()
        .map(|mut conn| {
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(chunk, Ordering::Relaxed);
                    if first >= rows {
                        return Ok(conn);
                    }
                    let ids: Vec<u64> = (first..(first + chunk).min(rows)).collect();
                    let got = conn
                        .fetch(&ids)
                        .await
                        .with_context(|| format!("read rows {first}..{}", first + chunk))?;
                    let wrong = check.full(&ids, &got);
                    ensure!(
                        wrong == 0,
                        "{wrong} of rows {first}..{} are wrong",
                        first + ids.len() as u64
                    );
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.context("scan task panicked")??);
    }
    Ok(out)
}

/// Reads `n` random rows (seeded by `seed`) through `conn`, 1000 at a time, and checks them in
/// full.
pub async fn check_sample<C: Connection>(
    conn: &mut C,
    rows: u64,
    n: usize,
    seed: u64,
    check: RowCheck,
) -> Result<()> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let ids: Vec<u64> = (0..n).map(|_| rng.random_range(0..rows)).collect();
    for chunk in ids.chunks(1000) {
        let got = conn.fetch(chunk).await?;
        let wrong = check.full(chunk, &got);
        ensure!(
            wrong == 0,
            "{wrong} of {} sampled rows are wrong",
            chunk.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use engram_store::table::{DType, fill_row};

    use super::*;

    /// A connection to an in-memory table of synthetic rows; `corrupt` flips a byte of one row.
    struct Model {
        check: RowCheck,
        seed: u64,
        corrupt: Option<u64>,
    }

    impl Connection for Model {
        async fn fetch(&mut self, ids: &[u64]) -> Result<Bytes> {
            // A real connection waits for the network; this one must yield by itself.
            tokio::task::yield_now().await;
            let rb = self.check.row_bytes();
            let mut out = vec![0u8; ids.len() * rb];
            for (&id, dst) in ids.iter().zip(out.chunks_exact_mut(rb)) {
                fill_row(self.seed, DType::Bf16, rb / 2, id, dst);
                if self.corrupt == Some(id) {
                    dst[0] ^= 1;
                }
            }
            Ok(Bytes::from(out))
        }
    }

    fn spec(check: RowCheck) -> DriveSpec {
        DriveSpec {
            dist: IdDistribution::Uniform,
            rows: 50,
            batch: 16,
            duration: Duration::from_millis(50),
            seed: 3,
            check,
            check_every: 1,
        }
    }

    #[tokio::test]
    async fn measures_right_rows_and_fails_on_wrong_ones() -> Result<()> {
        let check = RowCheck::new(9, DType::Bf16, 8);
        let good = || Model {
            check,
            seed: 9,
            corrupt: None,
        };
        let (conns, m) = drive(vec![good(), good()], &spec(check)).await?;
        assert_eq!(conns.len(), 2);
        assert!(m.requests > 0 && m.rows == m.requests * 16);
        assert_eq!(m.bytes, m.rows * 16);
        assert_eq!(m.checked_rows, m.rows);
        assert_eq!(m.latency.snapshot().count, m.requests);
        let conns = scan(conns, 50, 7, check).await?;
        let mut one = conns.into_iter().next().context("a connection")?;
        check_sample(&mut one, 50, 100, 1, check).await?;

        let bad = || Model {
            check,
            seed: 9,
            corrupt: Some(17),
        };
        assert!(drive(vec![bad()], &spec(check)).await.is_err());
        assert!(scan(vec![bad()], 50, 7, check).await.is_err());
        let other_seed = Model {
            check,
            seed: 10,
            corrupt: None,
        };
        assert!(scan(vec![other_seed], 50, 50, check).await.is_err());
        Ok(())
    }
}
