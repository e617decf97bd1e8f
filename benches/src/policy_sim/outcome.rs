//! One simulated (policy, cache size) pair and the figures the reports derive from it.

/// What one policy did at one cache size over the whole trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Trace name.
    pub trace: String,
    /// Policy label.
    pub policy: String,
    /// True for the RAM tier's default policy.
    pub is_default: bool,
    /// Cache rows / distinct rows of the trace.
    pub cache_fraction: f64,
    /// Cache size in rows.
    pub cache_rows: usize,
    /// Accesses that hit.
    pub hits: u64,
    /// Accesses simulated.
    pub accesses: u64,
    /// Live heap bytes the policy held at the end, measured by the counting allocator
    /// (including the policy value itself).
    pub measured_bytes: i64,
    /// Bytes the policy accounts for itself, if it can.
    pub accounted_bytes: Option<usize>,
    /// Wall time of the access loop.
    pub seconds: f64,
}

impl Outcome {
    /// Hits per access.
    pub fn hit_rate(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            self.hits as f64 / self.accesses as f64
        }
    }

    /// Hit rate weighted by row bytes; with fixed-size rows it equals [`Outcome::hit_rate`].
    pub fn byte_hit_rate(&self) -> f64 {
        self.hit_rate()
    }

    /// Measured metadata bytes per cache row.
    pub fn overhead_bytes_per_row(&self) -> f64 {
        self.measured_bytes as f64 / self.cache_rows.max(1) as f64
    }

    /// Accesses per second of the access loop.
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.accesses as f64 / self.seconds
        } else {
            0.0
        }
    }
}
