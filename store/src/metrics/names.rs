//! Every metric engram-store exports: its name (prefix `engram_store_`, unit in the name,
//! counters ending in `_total`), its help text, and the bucket bounds of its histograms. The one
//! list the README's Operations section, the Grafana dashboard and the tests read from.

/// Requests answered, by `rpc` and gRPC status `code` (counter; also requests refused by the
/// token check, as UNAUTHENTICATED or PERMISSION_DENIED).
pub const REQUESTS: &str = "engram_store_requests_total";
/// Whole-request time by `rpc`, from the request's arrival to its last response byte
/// (a stream's whole life for LookupStream) (histogram, seconds).
pub const REQUEST_DURATION: &str = "engram_store_request_duration_seconds";
/// Requests being answered now, by `rpc` (gauge).
pub const REQUESTS_IN_FLIGHT: &str = "engram_store_requests_in_flight";
/// Rows returned to clients (counter).
pub const SERVED_ROWS: &str = "engram_store_served_rows_total";
/// Row bytes returned to clients or written into their regions (counter).
pub const SERVED_BYTES: &str = "engram_store_served_bytes_total";
/// Rows asked of a tier, by `table`, `tier` and `result` (`hit`: served by it; `miss`: left to
/// the tier below, or for `nvme` a failed read) (counter). Every `tier="gpu"` series of this
/// and the tier metrics below also has a `device` label (the CUDA device of that VRAM tier,
/// one per `--gpu-device`).
pub const TIER_ROWS: &str = "engram_store_tier_rows_total";
/// Row bytes served by a tier, by `table` and `tier` (counter).
pub const TIER_SERVED_BYTES: &str = "engram_store_tier_served_bytes_total";
/// Rows held now by a cache tier (`gpu`, `ram`), by `table` and `tier` (gauge).
pub const TIER_RESIDENT_ROWS: &str = "engram_store_tier_resident_rows";
/// Bytes held now by a cache tier, rows plus their metadata, by `table` and `tier` (gauge).
pub const TIER_RESIDENT_BYTES: &str = "engram_store_tier_resident_bytes";
/// A table's share of a cache tier's budget, by `table` and `tier` (gauge, bytes).
pub const TIER_CAPACITY_BYTES: &str = "engram_store_tier_capacity_bytes";
/// The server's budget of a cache tier (`--ram-cache`, `--gpu-budget`), by `tier` (and
/// `device` for each GPU served: `--gpu-budget` is per device) (gauge, bytes).
pub const TIER_BUDGET_BYTES: &str = "engram_store_tier_budget_bytes";
/// Rows offered to a tier by prefetches, by `table` and `tier` (counter).
pub const PREFETCH_ROWS: &str = "engram_store_prefetch_rows_total";
/// Lookup hits on prefetched rows, by `table` and `tier` (counter).
pub const PREFETCH_HITS: &str = "engram_store_prefetch_hits_total";
/// Rows the VRAM tier's refresh under way is bringing in (0: none running), by `table`, `tier`
/// and `device` (gauge).
pub const GPU_ROWS_ENTERING: &str = "engram_store_gpu_rows_entering";
/// Disk reads completed, by `table` (counter).
pub const DISK_READS: &str = "engram_store_disk_reads_total";
/// Bytes read from disk, by `table` (counter).
pub const DISK_READ_BYTES: &str = "engram_store_disk_read_bytes_total";
/// Lookups that joined a disk read already in flight instead of reading, by `table` (counter).
pub const DISK_JOINED_READS: &str = "engram_store_disk_joined_reads_total";
/// Disk reads that failed (I/O errors), by `table` (counter).
pub const DISK_READ_ERRORS: &str = "engram_store_disk_read_errors_total";
/// Disk reads in flight now, by `table` (gauge).
pub const DISK_READS_IN_FLIGHT: &str = "engram_store_disk_reads_in_flight";
/// Time a lookup's rows took to come from disk: one batch of reads, checksums checked
/// (histogram, seconds).
pub const DISK_READ_DURATION: &str = "engram_store_disk_read_duration_seconds";
/// Blocks that failed their checksum, by `table` (counter).
pub const CHECKSUM_FAILURES: &str = "engram_store_checksum_failures_total";
/// Memory held for checksums, kept for verification (gauge, bytes).
pub const CHECKSUM_MEMORY_BYTES: &str = "engram_store_checksum_memory_bytes";
/// Client memory regions registered now (LookupInto targets) (gauge).
pub const REGIONS_OPEN: &str = "engram_store_regions_open";
/// Sidecar channels open now (gauge).
pub const CHANNELS_OPEN: &str = "engram_store_channels_open";
/// The version served of each table, by `table` (gauge).
pub const TABLE_VERSION: &str = "engram_store_table_version";
/// Rows of each table served, by `table` (gauge).
pub const TABLE_ROWS: &str = "engram_store_table_rows";
/// Tables served (gauge).
pub const TABLES: &str = "engram_store_tables";
/// Versions of each table open: the one served and older ones kept for clients that pin them,
/// by `table` (gauge).
pub const TABLE_VERSIONS_OPEN: &str = "engram_store_table_versions_open";
/// Rows of requests admitted and not yet answered (gauge).
pub const ROWS_IN_FLIGHT: &str = "engram_store_rows_in_flight";
/// The bound on [`ROWS_IN_FLIGHT`] (`--max-rows-in-flight`); beyond it requests are refused
/// with RESOURCE_EXHAUSTED (gauge).
pub const ROWS_IN_FLIGHT_LIMIT: &str = "engram_store_rows_in_flight_limit";
/// Resident set size of the process (gauge, bytes).
pub const PROCESS_RSS_BYTES: &str = "engram_store_process_resident_memory_bytes";
/// Seconds since the engine started (gauge).
pub const UPTIME: &str = "engram_store_uptime_seconds";
/// Always 1, with the server's `version` and `io_engine` as labels (gauge).
pub const BUILD_INFO: &str = "engram_store_build_info";

/// Help text of every metric, as `# HELP` says it.
pub const HELP: &[(&str, &str)] = &[
    (REQUESTS, "Requests answered, by RPC and gRPC status code."),
    (
        REQUEST_DURATION,
        "Time from a request's arrival to its last response byte, by RPC.",
    ),
    (REQUESTS_IN_FLIGHT, "Requests being answered now, by RPC."),
    (SERVED_ROWS, "Rows returned to clients."),
    (
        SERVED_BYTES,
        "Row bytes returned to clients or written into their regions.",
    ),
    (
        TIER_ROWS,
        "Rows asked of a tier: hit (served by it) or miss (left to the tier below; nvme: failed).",
    ),
    (TIER_SERVED_BYTES, "Row bytes served by a tier."),
    (TIER_RESIDENT_ROWS, "Rows held now by a cache tier."),
    (
        TIER_RESIDENT_BYTES,
        "Bytes held now by a cache tier (rows and their metadata).",
    ),
    (
        TIER_CAPACITY_BYTES,
        "A table's share of a cache tier's budget.",
    ),
    (
        TIER_BUDGET_BYTES,
        "The server's byte budget of a cache tier.",
    ),
    (PREFETCH_ROWS, "Rows offered to a tier by prefetches."),
    (PREFETCH_HITS, "Lookup hits on prefetched rows."),
    (
        GPU_ROWS_ENTERING,
        "Rows the VRAM tier's refresh under way is bringing in (0: none running).",
    ),
    (DISK_READS, "Disk reads completed."),
    (DISK_READ_BYTES, "Bytes read from disk."),
    (
        DISK_JOINED_READS,
        "Lookups that joined a disk read already in flight.",
    ),
    (DISK_READ_ERRORS, "Disk reads that failed."),
    (DISK_READS_IN_FLIGHT, "Disk reads in flight now."),
    (
        DISK_READ_DURATION,
        "Time a lookup's rows took to come from disk (a batch of reads, checksums checked).",
    ),
    (CHECKSUM_FAILURES, "Blocks that failed their checksum."),
    (CHECKSUM_MEMORY_BYTES, "Memory held for block checksums."),
    (REGIONS_OPEN, "Client memory regions registered now."),
    (CHANNELS_OPEN, "Sidecar channels open now."),
    (TABLE_VERSION, "The version served of each table."),
    (TABLE_ROWS, "Rows of each table served."),
    (TABLES, "Tables served."),
    (
        TABLE_VERSIONS_OPEN,
        "Versions of each table open: the one served and older ones clients may pin.",
    ),
    (
        ROWS_IN_FLIGHT,
        "Rows of requests admitted and not yet answered.",
    ),
    (
        ROWS_IN_FLIGHT_LIMIT,
        "The bound on rows in flight; beyond it requests are refused (RESOURCE_EXHAUSTED).",
    ),
    (PROCESS_RSS_BYTES, "Resident set size of the process."),
    (UPTIME, "Seconds since the engine started."),
    (
        BUILD_INFO,
        "Always 1; the server's version and I/O engine as labels.",
    ),
];

/// Bucket bounds of [`REQUEST_DURATION`], seconds: 50 us to 10 s.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Bucket bounds of [`DISK_READ_DURATION`], ns: 2^k and 1.5 x 2^k from 4 us to 6.4 s, edges of
/// the tier's own log-linear histogram, so every bucket count is exact. Exported as `le` =
/// (bound + 1) ns in seconds (a read of exactly 2^k ns is counted one bucket up).
pub fn disk_read_bounds_ns() -> Vec<u64> {
    (12..33u32)
        .flat_map(|k| [(1u64 << k) - 1, (3u64 << (k - 1)) - 1])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::HashSet::new();
        for (name, help) in HELP {
            assert!(name.starts_with("engram_store_"), "{name}");
            assert!(seen.insert(*name), "{name} twice");
            assert!(!help.is_empty());
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{name}"
            );
        }
        assert!(REQUESTS.ends_with("_total") && DISK_READS.ends_with("_total"));
        assert!(REQUEST_DURATION.ends_with("_seconds") && PROCESS_RSS_BYTES.ends_with("_bytes"));
        assert!(REQUEST_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let disk = disk_read_bounds_ns();
        assert!(disk.windows(2).all(|w| w[0] < w[1]));
        assert!(
            disk.iter()
                .all(|&b| engram_store_cache::LatencyHistogram::is_exact_bound(b))
        );
    }
}
