//! The comparison's CSV, columns fixed by [`HEADER`]: one line per system and batch size, then
//! one per limit of the machine.
//!
//! - `redis`, `engram-store`: `rows_per_s` and `gb_per_s` (payload, 10^9 bytes) are the medians
//!   of the runs; the latencies come from the histogram of all runs; `rss_bytes_per_row` is the
//!   server's RSS right after the runs at that batch size, divided by the rows stored.
//! - `limit` with `batch` 0: loopback TCP, one stream (`concurrency` 1); `gb_per_s` is its
//!   bandwidth and `rows_per_s` that bandwidth in rows of the table.
//! - `limit` with `batch` 1: raw io_uring random reads of one block each, `concurrency` reads in
//!   flight (only when the table does not fit the RAM tier); `rows_per_s` is the reads per
//!   second, one row each, and `gb_per_s` those rows' payload.
//!
//! Latency and memory fields of limit lines are empty.

use std::io::Write;

use anyhow::Result;

use super::outcome::{MachineLimits, PeerOutcome};
use super::peer::System;

/// The CSV header, exactly.
pub const HEADER: &str =
    "system,batch,concurrency,rows_per_s,gb_per_s,p50_us,p99_us,p999_us,rss_bytes_per_row";

/// One line of the CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `redis`, `engram-store` or `limit`.
    pub system: System,
    /// Ids per request (limits: 0 loopback TCP, 1 raw reads).
    pub batch: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Rows per second.
    pub rows_per_s: f64,
    /// Payload GB per second (10^9 bytes).
    pub gb_per_s: f64,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<f64>,
    /// Server RSS per stored row, bytes.
    pub rss_bytes_per_row: Option<f64>,
}

/// The lines for `outcomes` and `limits`, for rows of `row_bytes` bytes.
pub fn records(outcomes: &[PeerOutcome], limits: &MachineLimits, row_bytes: usize) -> Vec<Record> {
    let mut out: Vec<Record> = outcomes
        .iter()
        .map(|o| Record {
            system: o.system,
            batch: o.batch,
            concurrency: o.concurrency,
            rows_per_s: o.rows_per_s(),
            gb_per_s: o.bytes_per_s() / 1e9,
            p50_us: Some(o.quantile_us(0.5)),
            p99_us: Some(o.quantile_us(0.99)),
            p999_us: Some(o.quantile_us(0.999)),
            rss_bytes_per_row: Some(o.rss_bytes_per_row()),
        })
        .collect();
    let limit = |batch, concurrency, rows_per_s, gb_per_s| Record {
        system: System::Limit,
        batch,
        concurrency,
        rows_per_s,
        gb_per_s,
        p50_us: None,
        p99_us: None,
        p999_us: None,
        rss_bytes_per_row: None,
    };
    out.push(limit(
        0,
        1,
        limits.tcp_bytes_per_s / row_bytes.max(1) as f64,
        limits.tcp_bytes_per_s / 1e9,
    ));
    if let Some(iops) = limits.iops {
        out.push(limit(
            1,
            iops.queue_depth,
            iops.per_s,
            iops.per_s * row_bytes as f64 / 1e9,
        ));
    }
    out
}

/// Writes the header and `records`.
pub fn write(out: &mut impl Write, records: &[Record]) -> Result<()> {
    writeln!(out, "{HEADER}")?;
    let opt = |v: Option<f64>, digits: usize| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    for r in records {
        writeln!(
            out,
            "{},{},{},{:.0},{:.4},{},{},{},{}",
            r.system,
            r.batch,
            r.concurrency,
            r.rows_per_s,
            r.gb_per_s,
            opt(r.p50_us, 1),
            opt(r.p99_us, 1),
            opt(r.p999_us, 1),
            opt(r.rss_bytes_per_row, 1),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engram_store_cache::LatencyHistogram;

    use super::super::outcome::RawIops;
    use super::*;

    #[test]
    fn header_is_exactly_the_contract() {
        assert_eq!(
            HEADER,
            "system,batch,concurrency,rows_per_s,gb_per_s,p50_us,p99_us,p999_us,rss_bytes_per_row"
        );
    }

    #[test]
    fn writes_one_line_per_system_and_batch_then_the_limits() -> Result<()> {
        let latency = LatencyHistogram::new();
        for _ in 0..1000 {
            latency.record(Duration::from_micros(100));
        }
        let outcome = PeerOutcome {
            system: System::EngramStore,
            batch: 4096,
            concurrency: 8,
            runs: vec![(3e6, 4.8e8), (1e6, 1.6e8), (2e6, 3.2e8)],
            latency,
            rss_bytes: 176_000_000,
            stored_rows: 1_000_000,
            ram_hit_rate: Some(1.0),
            rows_total: 1000,
            server_cpu_s: 0.0,
            client_cpu_s: 0.0,
        };
        let limits = MachineLimits {
            tcp_bytes_per_s: 3.2e9,
            iops: Some(RawIops {
                per_s: 250_000.0,
                queue_depth: 64,
                read_bytes: 4096,
            }),
        };
        let mut buf = Vec::new();
        write(&mut buf, &records(&[outcome], &limits, 160))?;
        let text = String::from_utf8(buf)?;
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                HEADER,
                "engram-store,4096,8,2000000,0.3200,100.0,100.0,100.0,176.0",
                "limit,0,1,20000000,3.2000,,,,",
                "limit,1,64,250000,0.0400,,,,",
            ]
        );
        for line in &lines {
            assert_eq!(line.split(',').count(), 9, "{line}");
        }
        Ok(())
    }
}
