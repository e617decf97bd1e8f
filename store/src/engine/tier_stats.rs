//! Counters and latency histograms of the tiers of one served table (the RAM cache keeps its
//! own hit/miss counts; these add what the cache cannot see).

use std::sync::atomic::{AtomicU64, Ordering};

use engram_store_cache::LatencyHistogram;

/// NVMe-tier counters of a table.
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Read operations (units) completed.
    pub reads: AtomicU64,
    /// Bytes read from disk.
    pub bytes_read: AtomicU64,
    /// Rows served from disk reads (a row that waited on another lookup's read counts too).
    pub rows: AtomicU64,
    /// Row bytes served from disk reads.
    pub row_bytes: AtomicU64,
    /// Blocks that failed their checksum.
    pub checksum_errors: AtomicU64,
    /// Reads that failed.
    pub io_errors: AtomicU64,
    /// Lookups that joined a read already in flight instead of reading.
    pub joined_reads: AtomicU64,
    /// Latency of the disk phase of a lookup.
    pub latency: LatencyHistogram,
}

/// RAM-tier additions to the cache's own counters.
#[derive(Debug, Default)]
pub struct RamStats {
    /// Row bytes served from RAM.
    pub row_bytes: AtomicU64,
    /// Latency of the RAM phase of a lookup.
    pub latency: LatencyHistogram,
    /// Rows offered by prefetches.
    pub prefetch_rows: AtomicU64,
}

/// Adds `n` to a relaxed counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl DiskStats {
    /// Zeroes every counter.
    pub fn reset(&self) {
        for c in [
            &self.reads,
            &self.bytes_read,
            &self.rows,
            &self.row_bytes,
            &self.checksum_errors,
            &self.io_errors,
            &self.joined_reads,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        self.latency.reset();
    }
}

impl RamStats {
    /// Zeroes every counter.
    pub fn reset(&self) {
        self.row_bytes.store(0, Ordering::Relaxed);
        self.prefetch_rows.store(0, Ordering::Relaxed);
        self.latency.reset();
    }
}
