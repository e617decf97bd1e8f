//! What the engine reports about itself: each tier's stats summed over tables, request
//! counters and latency, and the process's memory. Built by one call, [`Engine::stats`].
//!
//! [`Engine::stats`]: super::Engine::stats

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engram_store_cache::{LatencyHistogram, LatencySnapshot, TierKind, TierStats};

/// A snapshot of the engine.
#[derive(Debug, Clone)]
pub struct EngineStats {
    /// Per tier (fastest first), summed over tables; one GPU entry per device, told apart by
    /// `TierStats::device`.
    pub tiers: Vec<(TierKind, TierStats)>,
    /// Whole-request latency.
    pub request_latency: LatencySnapshot,
    /// Requests answered (ok or not).
    pub requests: u64,
    /// Rows returned.
    pub rows: u64,
    /// Row bytes returned.
    pub bytes: u64,
    /// Requests that failed.
    pub errors: u64,
    /// `"io_uring"` or `"pread"`.
    pub io_engine: &'static str,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Resident set size of the process, bytes (0 where unknown).
    pub process_rss_bytes: u64,
    /// Memory held besides cached rows (checksums kept for verification), bytes.
    pub fixed_overhead_bytes: u64,
    /// Regions registered now.
    pub regions: u64,
    /// Sidecar channels open now.
    pub channels: u64,
    /// Rows of prefetches queued or running now.
    pub prefetch_queued_rows: u64,
    /// Rows of prefetches dropped because the queue was full.
    pub prefetch_dropped_rows: u64,
    /// Prefetch requests dropped because the queue was full.
    pub prefetch_dropped_requests: u64,
    /// Bytes of answers built and not yet sent.
    pub answer_bytes_in_flight: u64,
    /// The budget of those bytes.
    pub answer_budget_bytes: u64,
    /// Rows of requests admitted and not yet answered.
    pub rows_in_flight: u64,
    /// Their bound.
    pub max_rows_in_flight: u64,
    /// Requests refused because the bound was reached.
    pub refused_requests: u64,
    /// Tables and groups not served: (name, why).
    pub unavailable: Vec<(String, String)>,
}

/// Engine-wide request counters.
#[derive(Debug)]
pub(crate) struct RequestCounters {
    requests: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
    started: Instant,
}

impl Default for RequestCounters {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
            started: Instant::now(),
        }
    }
}

/// What a request delivered, for the counters: `Some((rows, bytes))`, or `None` if it failed.
pub type Delivered = Option<(u64, u64)>;

impl RequestCounters {
    pub(crate) fn record(&self, took: Duration, delivered: Delivered) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match delivered {
            Some((rows, bytes)) => {
                self.rows.fetch_add(rows, Ordering::Relaxed);
                self.bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency.record(took);
    }

    /// Fills the request fields of `stats` and zeroes the counters if `reset`.
    pub(crate) fn snapshot_into(&self, stats: &mut EngineStats, reset: bool) {
        stats.request_latency = self.latency.snapshot();
        stats.requests = self.requests.load(Ordering::Relaxed);
        stats.rows = self.rows.load(Ordering::Relaxed);
        stats.bytes = self.bytes.load(Ordering::Relaxed);
        stats.errors = self.errors.load(Ordering::Relaxed);
        stats.uptime_s = self.started.elapsed().as_secs();
        if reset {
            self.latency.reset();
            for c in [&self.requests, &self.rows, &self.bytes, &self.errors] {
                c.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Sums per-table tier stats by tier kind and device (one GPU entry per device served), fastest
/// tier first, GPU tiers by device.
pub(crate) fn sum_by_kind(
    per_table: impl Iterator<Item = Vec<(TierKind, TierStats)>>,
) -> Vec<(TierKind, TierStats)> {
    let mut sums: Vec<(TierKind, TierStats)> = Vec::new();
    for tiers in per_table {
        for (kind, stats) in tiers {
            match sums
                .iter_mut()
                .find(|(k, s)| *k == kind && s.device == stats.device)
            {
                Some((_, sum)) => sum.add(&stats),
                None => {
                    let mut sum = TierStats::default();
                    sum.add(&stats);
                    sums.push((kind, sum));
                }
            }
        }
    }
    sums.sort_by_key(|(k, s)| (*k, s.device));
    sums
}

/// Resident set size of this process from /proc/self/statm (0 where unavailable).
pub fn process_rss_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_keep_one_gpu_entry_per_device() {
        let gpu = |device, rows| TierStats {
            resident_rows: rows,
            device: Some(device),
            ..Default::default()
        };
        let ram = |rows| TierStats {
            resident_rows: rows,
            ..Default::default()
        };
        let per_table = vec![
            vec![
                (TierKind::Gpu, gpu(1, 10)),
                (TierKind::Gpu, gpu(0, 1)),
                (TierKind::Ram, ram(100)),
            ],
            vec![
                (TierKind::Gpu, gpu(0, 2)),
                (TierKind::Gpu, gpu(1, 20)),
                (TierKind::Ram, ram(200)),
            ],
        ];
        let sums: Vec<(TierKind, Option<u32>, u64)> = sum_by_kind(per_table.into_iter())
            .into_iter()
            .map(|(k, s)| (k, s.device, s.resident_rows))
            .collect();
        assert_eq!(
            sums,
            vec![
                (TierKind::Gpu, Some(0), 3),
                (TierKind::Gpu, Some(1), 30),
                (TierKind::Ram, None, 300),
            ]
        );
    }
}
