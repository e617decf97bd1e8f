//! What a scrape reads from the engine: its stats and every table's tiers, set as gauges and
//! folded into counters ([`super::fold`]), then the registry rendered in Prometheus text with
//! the disk read histogram appended (its buckets are the NVMe tier's own histogram, summed over
//! tables, read at bounds that are edges of its buckets, so every count is exact).

use std::fmt::Write as _;

use std::sync::Arc;

use engram_store_cache::{LatencyHistogram, TierKind, TierStats};
use metrics::{Key, Label, Recorder};

use super::{StoreMetrics, names};
use crate::engine::Engine;

impl StoreMetrics {
    /// Reads `engine` and renders every metric in Prometheus text format.
    pub fn render(&self, engine: &Engine) -> String {
        let disk = self.refresh(engine);
        let mut text = self.handle.render();
        render_disk_histogram(&mut text, disk.as_deref());
        text
    }

    fn folded(&self, name: &'static str, labels: Vec<Label>, now: u64) {
        let key = Key::from_parts(name, labels);
        let delta = self.folds.delta(&key, now);
        self.recorder
            .register_counter(&key, &super::METADATA)
            .increment(delta);
    }

    /// [`Self::folded`] for a count one table version keeps: folded per version (each
    /// version's count starts at zero and only grows), added to the table's counter, so the
    /// counter grows by exactly what every version served, across swaps.
    fn folded_version(&self, name: &'static str, labels: Vec<Label>, version: u64, now: u64) {
        let mut fold_labels = labels.clone();
        fold_labels.push(Label::new("version", version.to_string()));
        let delta = self.folds.delta(&Key::from_parts(name, fold_labels), now);
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &super::METADATA)
            .increment(delta);
    }

    fn set(&self, name: &'static str, labels: Vec<Label>, value: f64) {
        self.gauge(name, labels).set(value);
    }

    /// Sets every engine-derived series; returns the disk read histogram.
    fn refresh(&self, engine: &Engine) -> Option<std::sync::Arc<LatencyHistogram>> {
        let stats = engine.stats(false);
        self.folded(names::SERVED_ROWS, vec![], stats.rows);
        self.folded(names::SERVED_BYTES, vec![], stats.bytes);
        self.set(
            names::PROCESS_RSS_BYTES,
            vec![],
            stats.process_rss_bytes as f64,
        );
        self.set(names::UPTIME, vec![], stats.uptime_s as f64);
        self.set(
            names::CHECKSUM_MEMORY_BYTES,
            vec![],
            stats.fixed_overhead_bytes as f64,
        );
        self.set(names::REGIONS_OPEN, vec![], engine.region_count() as f64);
        self.set(names::CHANNELS_OPEN, vec![], engine.channel_count() as f64);
        let catalog = engine.catalog();
        self.set(names::TABLES, vec![], catalog.tables().count() as f64);
        self.set(names::ROWS_IN_FLIGHT, vec![], stats.rows_in_flight as f64);
        self.set(
            names::ROWS_IN_FLIGHT_LIMIT,
            vec![],
            stats.max_rows_in_flight as f64,
        );
        self.set(
            names::BUILD_INFO,
            vec![
                Label::from_static_parts("version", env!("CARGO_PKG_VERSION")),
                Label::from_static_parts("io_engine", stats.io_engine),
            ],
            1.0,
        );
        let config = engine.config();
        self.set(
            names::TIER_BUDGET_BYTES,
            vec![Label::from_static_parts("tier", TierKind::Ram.name())],
            config.ram_cache_bytes as f64,
        );
        if config.gpu_budget_bytes > 0 {
            for device in config.gpu_devices.as_slice() {
                self.set(
                    names::TIER_BUDGET_BYTES,
                    vec![
                        Label::from_static_parts("tier", TierKind::Gpu.name()),
                        Label::new("device", device.to_string()),
                    ],
                    config.gpu_budget_bytes as f64,
                );
            }
        } else {
            self.set(
                names::TIER_BUDGET_BYTES,
                vec![Label::from_static_parts("tier", TierKind::Gpu.name())],
                0.0,
            );
        }
        for (table, versions) in catalog.table_versions() {
            let m = versions.current.manifest();
            let name = || Label::new("table", table.clone());
            self.set(names::TABLE_VERSION, vec![name()], m.version as f64);
            self.set(names::TABLE_ROWS, vec![name()], m.rows as f64);
            self.set(
                names::TABLE_VERSIONS_OPEN,
                vec![name()],
                versions.all().count() as f64,
            );
            for t in versions.all() {
                let current = Arc::ptr_eq(t, &versions.current);
                for (kind, s) in t.tier_stats() {
                    self.table_tier(table, t.version(), current, kind, &s);
                }
            }
        }
        stats
            .tiers
            .iter()
            .find(|(k, _)| *k == TierKind::Nvme)
            .and_then(|(_, s)| s.latency_histogram.clone())
    }

    /// The series of one tier of one version of a table: its counts added to the table's
    /// counters; its gauges set when it is the version served.
    fn table_tier(&self, table: &str, version: u64, current: bool, kind: TierKind, s: &TierStats) {
        let table = || Label::new("table", table.to_string());
        // table, tier and, for a VRAM tier, its device.
        let tier_labels = || {
            let mut labels = vec![table(), Label::from_static_parts("tier", kind.name())];
            labels.extend(s.device.map(|d| Label::new("device", d.to_string())));
            labels
        };
        let with = |mut labels: Vec<Label>, extra: Label| {
            labels.push(extra);
            labels
        };
        let result = |r: &'static str| Label::from_static_parts("result", r);
        self.folded_version(
            names::TIER_ROWS,
            with(tier_labels(), result("hit")),
            version,
            s.hits,
        );
        self.folded_version(
            names::TIER_ROWS,
            with(tier_labels(), result("miss")),
            version,
            s.misses,
        );
        self.folded_version(names::TIER_SERVED_BYTES, tier_labels(), version, s.bytes);
        if kind == TierKind::Nvme {
            self.folded_version(names::DISK_READS, vec![table()], version, s.reads);
            // The NVMe tier's "resident" bytes are the bytes it has read.
            self.folded_version(
                names::DISK_READ_BYTES,
                vec![table()],
                version,
                s.resident_bytes,
            );
            self.folded_version(
                names::DISK_JOINED_READS,
                vec![table()],
                version,
                s.joined_reads,
            );
            self.folded_version(names::DISK_READ_ERRORS, vec![table()], version, s.io_errors);
            self.folded_version(
                names::CHECKSUM_FAILURES,
                vec![table()],
                version,
                s.checksum_errors,
            );
            if current {
                self.set(
                    names::DISK_READS_IN_FLIGHT,
                    vec![table()],
                    s.reads_in_flight as f64,
                );
            }
        } else if current {
            self.set(
                names::TIER_RESIDENT_ROWS,
                tier_labels(),
                s.resident_rows as f64,
            );
            self.set(
                names::TIER_RESIDENT_BYTES,
                tier_labels(),
                s.resident_bytes as f64,
            );
            self.set(
                names::TIER_CAPACITY_BYTES,
                tier_labels(),
                s.capacity_bytes as f64,
            );
            if kind == TierKind::Gpu {
                self.set(
                    names::GPU_ROWS_ENTERING,
                    tier_labels(),
                    s.rows_entering as f64,
                );
            }
            self.folded_version(
                names::PREFETCH_ROWS,
                tier_labels(),
                version,
                s.prefetch_rows,
            );
            self.folded_version(
                names::PREFETCH_HITS,
                tier_labels(),
                version,
                s.prefetch_hits,
            );
        }
    }
}

/// Appends [`names::DISK_READ_DURATION`] from the NVMe tier's histogram (all zero without one).
fn render_disk_histogram(text: &mut String, histogram: Option<&LatencyHistogram>) {
    let name = names::DISK_READ_DURATION;
    let help = names::HELP
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, h)| *h);
    let mut bounds = names::disk_read_bounds_ns();
    bounds.push(u64::MAX);
    let counts = histogram.map_or_else(|| vec![0; bounds.len()], |h| h.cumulative_counts(&bounds));
    let total = counts.last().copied().unwrap_or(0);
    let sum_s = histogram.map_or(0.0, |h| h.sum_ns() as f64 / 1e9);
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    // Writing into a String does not fail.
    let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in bounds.iter().zip(&counts).take(bounds.len() - 1) {
        let le = (bound + 1) as f64 / 1e9;
        let _ = writeln!(text, "{name}_bucket{{le=\"{le}\"}} {count}");
    }
    let _ = writeln!(text, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(text, "{name}_sum {sum_s}");
    let _ = writeln!(text, "{name}_count {total}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_histogram_is_cumulative_and_complete() {
        let h = LatencyHistogram::new();
        for us in [3u64, 10, 10, 100, 5_000, 20_000_000] {
            h.record(std::time::Duration::from_micros(us));
        }
        let mut text = String::new();
        render_disk_histogram(&mut text, Some(&h));
        let bucket = |le: &str| -> u64 {
            let prefix = format!("{}_bucket{{le=\"{le}\"}} ", names::DISK_READ_DURATION);
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no bucket {le} in\n{text}"))
        };
        assert_eq!(bucket("0.000004096"), 1); // 3 us
        assert_eq!(bucket("0.000012288"), 3); // and twice 10 us
        assert_eq!(bucket("0.000131072"), 4); // and 100 us
        assert_eq!(bucket("0.006291456"), 5); // and 5 ms
        assert_eq!(bucket("+Inf"), 6); // and 20 s, beyond the last bound
        assert!(text.contains("_count 6\n"));
        assert!(text.contains(&format!("{}_sum 20.005123\n", names::DISK_READ_DURATION)));
    }
}
