//! A lock-free latency histogram: log-linear buckets (8 per power of two, so percentiles are
//! within 12.5%) of atomic counters, recorded from any thread without locks. Besides
//! percentiles it exports cumulative counts at caller-chosen bounds (Prometheus histogram
//! buckets), exact at bounds that are bucket edges ([`LatencyHistogram::is_exact_bound`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const SUB_BITS: u32 = 3;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = 64 * SUB;

/// Latencies in nanoseconds.
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
}

/// Percentiles read from a [`LatencyHistogram`], in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySnapshot {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let log = 63 - ns.leading_zeros();
    let sub = (ns >> (log - SUB_BITS)) as usize & (SUB - 1);
    ((log - SUB_BITS + 1) as usize) * SUB + sub
}

/// Upper bound of bucket `b`, in ns.
fn bucket_high(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let log = (b / SUB) as u32 + SUB_BITS - 1;
    let sub = (b % SUB) as u128;
    // The top buckets (which no u64 reaches) would overflow: they end at u64::MAX.
    let high = ((SUB as u128 + sub + 1) << (log - SUB_BITS)) - 1;
    u64::try_from(high).unwrap_or(u64::MAX)
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
        }
    }

    /// Records one sample.
    pub fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(ns).min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// Adds every sample of `other` into `self`.
    pub fn merge(&self, other: &LatencyHistogram) {
        for (a, b) in self.buckets.iter().zip(other.buckets.iter()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.count
            .fetch_add(other.count.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sum_ns
            .fetch_add(other.sum_ns.load(Ordering::Relaxed), Ordering::Relaxed);
        self.max_ns
            .fetch_max(other.max_ns.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Forgets every sample.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_ns.store(0, Ordering::Relaxed);
        self.max_ns.store(0, Ordering::Relaxed);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of every sample, in ns.
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns.load(Ordering::Relaxed)
    }

    /// True when `bound_ns` is the top of a bucket, so that [`Self::cumulative_counts`] counts
    /// the samples at most `bound_ns` exactly (otherwise a bucket straddling the bound is
    /// counted at the next bound, an error of at most an eighth of the bound).
    pub fn is_exact_bound(bound_ns: u64) -> bool {
        bound_ns < u64::MAX && bucket_high(bucket_of(bound_ns)) == bound_ns
    }

    /// For each bound (ns, ascending), the samples in buckets whose top is at most that bound:
    /// a Prometheus histogram's cumulative bucket counts (the `+Inf` bucket is [`Self::count`]).
    pub fn cumulative_counts(&self, bounds_ns: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bounds_ns.len());
        let mut seen = 0u64;
        let mut b = 0usize;
        for &bound in bounds_ns {
            while b < BUCKETS && bucket_high(b) <= bound {
                seen += self.buckets[b].load(Ordering::Relaxed);
                b += 1;
            }
            out.push(seen);
        }
        out
    }

    /// Value (ns) at quantile `q` in `[0, 1]`: the upper bound of the bucket holding it.
    pub fn quantile_ns(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_high(b).min(self.max_ns.load(Ordering::Relaxed));
            }
        }
        self.max_ns.load(Ordering::Relaxed)
    }

    /// Count and percentiles.
    pub fn snapshot(&self) -> LatencySnapshot {
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySnapshot {
            count: self.count.load(Ordering::Relaxed),
            p50_us: us(self.quantile_ns(0.5)),
            p90_us: us(self.quantile_ns(0.9)),
            p99_us: us(self.quantile_ns(0.99)),
            p999_us: us(self.quantile_ns(0.999)),
            max_us: us(self.max_ns.load(Ordering::Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for ns in (0..100_000u64).chain([1 << 40, u64::MAX / 2]) {
            let b = bucket_of(ns);
            assert!(b >= last || ns == 1 << 40);
            assert!(
                bucket_high(b) >= ns,
                "ns {ns} bucket {b} high {}",
                bucket_high(b)
            );
            last = b;
        }
    }

    #[test]
    fn percentiles_within_an_eighth() {
        let h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert!((s.p50_us - 500.0).abs() / 500.0 < 0.13, "{s:?}");
        assert!((s.p99_us - 990.0).abs() / 990.0 < 0.13, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 1e-9);
    }

    #[test]
    fn cumulative_counts_are_exact_at_bucket_edges() {
        let h = LatencyHistogram::new();
        let samples: Vec<u64> = (0..5000u64).map(|i| i * i * 37 % 3_000_000).collect();
        for &ns in &samples {
            h.record(Duration::from_nanos(ns));
        }
        // Powers of two and one and a half times them, minus one: tops of buckets.
        let bounds: Vec<u64> = (10..22u32)
            .flat_map(|k| [(1u64 << k) - 1, (3u64 << (k - 1)) - 1])
            .collect();
        let mut sorted = bounds.clone();
        sorted.sort_unstable();
        assert_eq!(bounds, sorted);
        for &b in &bounds {
            assert!(LatencyHistogram::is_exact_bound(b), "{b}");
        }
        assert!(!LatencyHistogram::is_exact_bound(1000));
        let counts = h.cumulative_counts(&bounds);
        for (b, c) in bounds.iter().zip(&counts) {
            let want = samples.iter().filter(|&&s| s <= *b).count() as u64;
            assert_eq!(*c, want, "bound {b}");
        }
        assert_eq!(h.count(), 5000);
        assert_eq!(h.sum_ns(), samples.iter().sum::<u64>());
        let merged = LatencyHistogram::new();
        merged.merge(&h);
        merged.merge(&h);
        assert_eq!(merged.sum_ns(), 2 * h.sum_ns());
        assert_eq!(merged.cumulative_counts(&bounds)[5], 2 * counts[5]);
        assert_eq!(h.cumulative_counts(&[u64::MAX]), vec![5000]);
    }
}
