//! The bystander: an ordinary client doing small lookups the whole time an abuse scenario runs,
//! whose latency and failures say whether the server kept serving everyone else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use engram_store_cache::{LatencyHistogram, LatencySnapshot};
use engram_store_client::Client;

/// What the bystander saw.
#[derive(Debug, Clone, Default)]
pub struct BystanderReport {
    /// Lookups answered.
    pub ok: u64,
    /// Lookups that failed.
    pub failed: u64,
    /// First failure, if any.
    pub first_error: Option<String>,
    /// Latency of the answered ones.
    pub latency: LatencySnapshot,
}

/// A bystander running in the background until [`Bystander::stop`].
#[derive(Debug)]
pub struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<BystanderReport>,
}

impl Bystander {
    /// Starts looking up 16 rows of `table` (of `rows` rows) every `every` through `client`.
    pub fn start(client: Client, table: String, rows: u64, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let latency = LatencyHistogram::new();
            let mut report = BystanderReport::default();
            let mut k = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let ids: Vec<u64> = (0..16)
                    .map(|i| (k * 7919 + i * 104_729) % rows.max(1))
                    .collect();
                k += 1;
                let start = Instant::now();
                match client.lookup(&table, &ids).await {
                    Ok(_) => {
                        latency.record(start.elapsed());
                        report.ok += 1;
                    }
                    Err(e) => {
                        report.failed += 1;
                        report.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                tokio::time::sleep(every).await;
            }
            report.latency = latency.snapshot();
            report
        });
        Self { stop, task }
    }

    /// Stops and reports.
    pub async fn stop(self) -> BystanderReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}
