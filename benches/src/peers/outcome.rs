//! What the comparison found: per system and batch size, the rate of each run, the latency of
//! all runs together and the server's memory afterwards; the memory of each server once the
//! table was in; and the machine's limits measured in the same run.

use engram_store_cache::LatencyHistogram;

use super::peer::System;

/// One system at one batch size.
#[derive(Debug)]
pub struct PeerOutcome {
    /// Which system.
    pub system: System,
    /// Ids per request.
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// (rows/s, payload bytes/s) of each run.
    pub runs: Vec<(f64, f64)>,
    /// Latency of every request of every run.
    pub latency: LatencyHistogram,
    /// Server RSS right after the runs at this batch size.
    pub rss_bytes: u64,
    /// Rows the server stores.
    pub stored_rows: u64,
    /// engram-store: the lowest RAM-tier hit rate of the runs (1 when the table is all in RAM).
    pub ram_hit_rate: Option<f64>,
    /// Rows received in all runs.
    pub rows_total: u64,
    /// CPU seconds the server used during the runs.
    pub server_cpu_s: f64,
    /// CPU seconds this benchmark (the client) used during the runs.
    pub client_cpu_s: f64,
}

impl PeerOutcome {
    /// Median rows/s of the runs.
    pub fn rows_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.0).collect())
    }

    /// Median payload bytes/s of the runs.
    pub fn bytes_per_s(&self) -> f64 {
        median(self.runs.iter().map(|r| r.1).collect())
    }

    /// Latency at quantile `q`, microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.quantile_ns(q) as f64 / 1000.0
    }

    /// Server CPU per row received, nanoseconds.
    pub fn server_ns_per_row(&self) -> f64 {
        self.server_cpu_s * 1e9 / self.rows_total.max(1) as f64
    }

    /// Client CPU per row received, nanoseconds.
    pub fn client_ns_per_row(&self) -> f64 {
        self.client_cpu_s * 1e9 / self.rows_total.max(1) as f64
    }

    /// Server RSS after the runs, per stored row.
    pub fn rss_bytes_per_row(&self) -> f64 {
        self.rss_bytes as f64 / self.stored_rows.max(1) as f64
    }
}

/// Median (upper median for an even count; 0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A server's memory before and after the table went in.
#[derive(Debug, Clone, Copy)]
pub struct ServerMemory {
    /// Which system.
    pub system: System,
    /// RSS before any row was stored.
    pub rss_empty: u64,
    /// RSS with every row stored (Redis: loaded; engram-store: RAM tier warmed).
    pub rss_loaded: u64,
    /// Redis's `used_memory` with every row stored.
    pub used_loaded: Option<u64>,
    /// Rows stored.
    pub rows: u64,
}

impl ServerMemory {
    /// RSS per stored row.
    pub fn rss_per_row(&self) -> f64 {
        self.rss_loaded as f64 / self.rows.max(1) as f64
    }

    /// RSS added by the rows, per row.
    pub fn added_per_row(&self) -> f64 {
        self.rss_loaded.saturating_sub(self.rss_empty) as f64 / self.rows.max(1) as f64
    }
}

/// The machine's limits, measured in the same run.
#[derive(Debug, Clone, Copy)]
pub struct MachineLimits {
    /// Loopback TCP, one stream, bytes/s (the best of the measurements of the run).
    pub tcp_bytes_per_s: f64,
    /// Raw io_uring random reads (only when the table does not fit engram-store's RAM tier).
    pub iops: Option<RawIops>,
}

/// A raw io_uring random-read measurement.
#[derive(Debug, Clone, Copy)]
pub struct RawIops {
    /// Reads per second.
    pub per_s: f64,
    /// Reads in flight.
    pub queue_depth: usize,
    /// Bytes per read.
    pub read_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_per_row_costs() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        let m = ServerMemory {
            system: System::Redis,
            rss_empty: 1000,
            rss_loaded: 2000,
            used_loaded: None,
            rows: 10,
        };
        assert_eq!(m.rss_per_row(), 200.0);
        assert_eq!(m.added_per_row(), 100.0);
    }
}
