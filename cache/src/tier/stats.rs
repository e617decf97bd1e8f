//! What each tier reports about itself: one struct for every tier (fields a tier has no use for
//! stay zero), summed over tables by the engine.

use crate::{LatencyHistogram, LatencySnapshot};

/// Which tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TierKind {
    /// GPU memory.
    Gpu,
    /// Host memory under a budget.
    Ram,
    /// The table's data files.
    Nvme,
    /// An in-memory map (tests).
    Memory,
}

impl TierKind {
    /// `"gpu"`, `"ram"`, `"nvme"` or `"memory"`.
    pub fn name(self) -> &'static str {
        match self {
            TierKind::Gpu => "gpu",
            TierKind::Ram => "ram",
            TierKind::Nvme => "nvme",
            TierKind::Memory => "memory",
        }
    }
}

/// Counters, residency and budget of one tier (of one table, or summed over tables).
#[derive(Debug, Clone, Default)]
pub struct TierStats {
    /// Rows served from this tier.
    pub hits: u64,
    /// Rows asked of it that it did not serve (for the NVMe tier: rows whose read failed).
    pub misses: u64,
    /// Row bytes served from this tier.
    pub bytes: u64,
    /// Rows held now (cache tiers).
    pub resident_rows: u64,
    /// Bytes held now: rows plus metadata (cache tiers); bytes read (NVMe).
    pub resident_bytes: u64,
    /// Byte budget (0: none).
    pub capacity_bytes: u64,
    /// Rows offered by prefetches.
    pub prefetch_rows: u64,
    /// Lookup hits on prefetched rows (each at its first hit).
    pub prefetch_hits: u64,
    /// Policies run (several, comma-separated, once summed over tables that differ).
    pub policy: String,
    /// Blocks that failed their checksum.
    pub checksum_errors: u64,
    /// Reads that failed.
    pub io_errors: u64,
    /// Read operations completed (NVMe); refreshes applied (GPU).
    pub reads: u64,
    /// Lookups that joined a read already in flight instead of reading (NVMe).
    pub joined_reads: u64,
    /// Reads in flight now (NVMe).
    pub reads_in_flight: u64,
    /// Rows the refresh under way is bringing in (GPU; 0: none running).
    pub rows_entering: u64,
    /// Memory held besides rows, e.g. checksums kept for verification (NVMe), bytes.
    pub fixed_bytes: u64,
    /// Latency of this tier's part of a lookup.
    pub latency: LatencySnapshot,
    /// The histogram behind `latency`, for summing.
    pub latency_histogram: Option<std::sync::Arc<LatencyHistogram>>,
    /// The CUDA device of a GPU tier (a server may have one per device); `None` for host tiers.
    /// Sums add only stats of the same device and keep it.
    pub device: Option<u32>,
}

impl TierStats {
    /// Stats with the latency of `histogram`, kept so that sums over tables merge histograms
    /// rather than percentiles.
    pub fn with_latency(mut self, histogram: &LatencyHistogram) -> Self {
        let copy = LatencyHistogram::new();
        copy.merge(histogram);
        self.latency = copy.snapshot();
        self.latency_histogram = Some(std::sync::Arc::new(copy));
        self
    }

    /// Hit rate: hits over hits plus misses (0 when nothing was asked).
    pub fn hit_rate(&self) -> f64 {
        let asked = self.hits + self.misses;
        if asked == 0 {
            0.0
        } else {
            self.hits as f64 / asked as f64
        }
    }

    /// Adds `other` (the same tier, on the same device, of another table) into `self`; a sum
    /// started from the default takes `other`'s device.
    pub fn add(&mut self, other: &TierStats) {
        self.device = self.device.or(other.device);
        self.hits += other.hits;
        self.misses += other.misses;
        self.bytes += other.bytes;
        self.resident_rows += other.resident_rows;
        self.resident_bytes += other.resident_bytes;
        self.capacity_bytes += other.capacity_bytes;
        self.prefetch_rows += other.prefetch_rows;
        self.prefetch_hits += other.prefetch_hits;
        for p in other.policy.split(',').filter(|p| !p.is_empty()) {
            if !self.policy.split(',').any(|q| q == p) {
                if !self.policy.is_empty() {
                    self.policy.push(',');
                }
                self.policy.push_str(p);
            }
        }
        self.checksum_errors += other.checksum_errors;
        self.io_errors += other.io_errors;
        self.reads += other.reads;
        self.joined_reads += other.joined_reads;
        self.reads_in_flight += other.reads_in_flight;
        self.rows_entering += other.rows_entering;
        self.fixed_bytes += other.fixed_bytes;
        if let Some(theirs) = &other.latency_histogram {
            let merged = LatencyHistogram::new();
            if let Some(ours) = &self.latency_histogram {
                merged.merge(ours);
            }
            merged.merge(theirs);
            self.latency = merged.snapshot();
            self.latency_histogram = Some(std::sync::Arc::new(merged));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_merge_policies_and_histograms() {
        let h = LatencyHistogram::new();
        h.record(std::time::Duration::from_micros(10));
        let a = TierStats {
            hits: 3,
            rows_entering: 5,
            policy: "direct".into(),
            ..Default::default()
        }
        .with_latency(&h);
        let mut sum = TierStats::default();
        sum.add(&a);
        sum.add(&TierStats {
            hits: 1,
            misses: 4,
            policy: "s3sketch".into(),
            ..a.clone()
        });
        assert_eq!(sum.hits, 4);
        // Refreshes under way on two tables' tiers: their rows together.
        assert_eq!(sum.rows_entering, 10);
        assert_eq!(sum.policy, "direct,s3sketch");
        assert_eq!(sum.latency.count, 2);
        assert!((sum.hit_rate() - 0.5).abs() < 1e-9);
    }
}
