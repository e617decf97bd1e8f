//! The comparison as text: the two systems side by side per batch size, each server's memory per
//! stored row against the raw row bytes, the machine's limits with the ratios to them, and the
//! targets of the comparison with whether this run met them.

use std::fmt::Write;

use super::outcome::{MachineLimits, PeerOutcome, ServerMemory};
use super::peer::System;

/// Everything the report shows.
#[derive(Debug)]
pub struct Findings<'a> {
    /// Per system and batch size.
    pub outcomes: &'a [PeerOutcome],
    /// Each server's memory with the table in.
    pub memory: &'a [ServerMemory],
    /// The machine's limits.
    pub limits: &'a MachineLimits,
    /// Bytes per row.
    pub row_bytes: usize,
}

impl Findings<'_> {
    fn get(&self, system: System, batch: usize) -> Option<&PeerOutcome> {
        self.outcomes
            .iter()
            .find(|o| o.system == system && o.batch == batch)
    }

    fn batches(&self) -> Vec<usize> {
        let mut b: Vec<usize> = self.outcomes.iter().map(|o| o.batch).collect();
        b.sort_unstable();
        b.dedup();
        b
    }
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The side-by-side table, memory, limits and targets.
pub fn render(f: &Findings<'_>) -> String {
    let mut s = String::new();
    let rb = f.row_bytes as f64;
    let _ = writeln!(
        s,
        "\n{:>6} | {:>30} {:>7} | {:>30} {:>7} | {:>7} {:>6}",
        "", "redis", "", "engram-store", "", "engram/", "redis"
    );
    let _ = writeln!(
        s,
        "{:>6} | {:>8} {:>6} {:>6} {:>6} {:>7} {:>7} | {:>8} {:>6} {:>6} {:>6} {:>7} {:>7} | {:>7} {:>6}",
        "batch",
        "rows/s",
        "GB/s",
        "p50us",
        "p99us",
        "p999us",
        "B/row",
        "rows/s",
        "GB/s",
        "p50us",
        "p99us",
        "p999us",
        "B/row",
        "rows/s",
        "p99"
    );
    for batch in f.batches() {
        let mut line = format!("{batch:>6} |");
        for system in [System::Redis, System::EngramStore] {
            match f.get(system, batch) {
                Some(o) => {
                    let _ = write!(
                        line,
                        " {:>8} {:>6.3} {:>6} {:>6} {:>7} {:>7.0} |",
                        rate(o.rows_per_s()),
                        o.bytes_per_s() / 1e9,
                        us(o.quantile_us(0.5)),
                        us(o.quantile_us(0.99)),
                        us(o.quantile_us(0.999)),
                        o.rss_bytes_per_row()
                    );
                }
                None => {
                    let _ = write!(line, " {:>47} |", "-");
                }
            }
        }
        if let (Some(r), Some(e)) = (
            f.get(System::Redis, batch),
            f.get(System::EngramStore, batch),
        ) {
            let _ = write!(
                line,
                " {:>6.2}x {:>5.2}x",
                e.rows_per_s() / r.rows_per_s().max(1e-9),
                e.quantile_us(0.99) / r.quantile_us(0.99).max(1e-9)
            );
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "(rows/s, GB/s: median of the runs; latency: all runs; B/row: server RSS after the runs at \
         that batch / rows stored)"
    );
    for o in f.outcomes.iter().filter(|o| o.runs.len() > 1) {
        let runs: Vec<String> = o.runs.iter().map(|r| rate(r.0)).collect();
        let _ = writeln!(
            s,
            "  runs {} batch {}: {} rows/s",
            o.system,
            o.batch,
            runs.join(", ")
        );
    }
    let _ = writeln!(
        s,
        "\nCPU per row (ns, user + system, all runs; the rate on a quiet machine follows these):"
    );
    let _ = writeln!(
        s,
        "{:>6} | {:>12} {:>12} | {:>12} {:>12} | {:>18}",
        "batch", "redis server", "client", "engram server", "client", "server CPU redis/"
    );
    for batch in f.batches() {
        let cell = |system| {
            f.get(system, batch)
                .map_or(("-".to_owned(), "-".to_owned()), |o| {
                    (
                        format!("{:.0}", o.server_ns_per_row()),
                        format!("{:.0}", o.client_ns_per_row()),
                    )
                })
        };
        let (rs, rc) = cell(System::Redis);
        let (es, ec) = cell(System::EngramStore);
        let ratio = match (
            f.get(System::Redis, batch),
            f.get(System::EngramStore, batch),
        ) {
            (Some(r), Some(e)) => format!(
                "{:.2}x",
                r.server_ns_per_row() / e.server_ns_per_row().max(1e-9)
            ),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            s,
            "{batch:>6} | {rs:>12} {rc:>12} | {es:>12} {ec:>12} | {ratio:>18}"
        );
    }
    if let Some(worst) = f
        .outcomes
        .iter()
        .filter_map(|o| o.ram_hit_rate)
        .min_by(f64::total_cmp)
    {
        let _ = writeln!(
            s,
            "engram-store RAM-tier hit rate during the runs: lowest {worst:.4}"
        );
    }

    let _ = writeln!(
        s,
        "\nmemory per stored row with the table in (raw row: {} B):",
        f.row_bytes
    );
    for m in f.memory {
        let used = m.used_loaded.map_or(String::new(), |u| {
            let per = u as f64 / m.rows.max(1) as f64;
            format!("; used_memory {per:.1} B/row ({:.2}x raw)", per / rb)
        });
        let _ = writeln!(
            s,
            "  {:<13} RSS {:.1} B/row ({:.2}x raw); added by the rows {:.1} B/row ({:.2}x raw){used}",
            m.system.name(),
            m.rss_per_row(),
            m.rss_per_row() / rb,
            m.added_per_row(),
            m.added_per_row() / rb,
        );
    }

    let l = f.limits;
    let _ = writeln!(
        s,
        "\nlimits measured in this run: loopback TCP, one stream: {:.2} GB/s (= {} rows/s of {} B)",
        l.tcp_bytes_per_s / 1e9,
        rate(l.tcp_bytes_per_s / rb.max(1.0)),
        f.row_bytes
    );
    if let Some(i) = l.iops {
        let _ = writeln!(
            s,
            "  raw io_uring O_DIRECT random {} B reads, qd {}: {:.0} IOPS",
            i.read_bytes, i.queue_depth, i.per_s
        );
    }
    for system in [System::Redis, System::EngramStore] {
        if let Some(best) = f
            .outcomes
            .iter()
            .filter(|o| o.system == system)
            .max_by(|a, b| a.bytes_per_s().total_cmp(&b.bytes_per_s()))
        {
            let _ = writeln!(
                s,
                "  {:<13} best payload {:.3} GB/s (batch {}) = {:.2} of loopback TCP",
                system.name(),
                best.bytes_per_s() / 1e9,
                best.batch,
                best.bytes_per_s() / l.tcp_bytes_per_s.max(1.0)
            );
        }
    }

    let _ = writeln!(s, "\ntargets (table fully in RAM for both):");
    for line in targets(f) {
        let _ = writeln!(s, "  {line}");
    }
    s
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// One line per target of the comparison.
pub fn targets(f: &Findings<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (batch, want) in [(4096, 3.0), (16, 1.0)] {
        match (
            f.get(System::Redis, batch),
            f.get(System::EngramStore, batch),
        ) {
            (Some(r), Some(e)) => {
                let x = e.rows_per_s() / r.rows_per_s().max(1e-9);
                out.push(format!(
                    "rows/s at batch {batch} >= {want}x redis: {x:.2}x, {}",
                    verdict(x >= want)
                ));
            }
            _ => out.push(format!(
                "rows/s at batch {batch} >= {want}x redis: not measured"
            )),
        }
    }
    let mut worse = Vec::new();
    let mut compared = 0;
    for batch in f.batches() {
        if let (Some(r), Some(e)) = (
            f.get(System::Redis, batch),
            f.get(System::EngramStore, batch),
        ) {
            compared += 1;
            let x = e.quantile_us(0.99) / r.quantile_us(0.99).max(1e-9);
            if x > 1.0 {
                worse.push(format!("batch {batch}: {x:.2}x"));
            }
        }
    }
    out.push(if compared == 0 {
        "p99 <= redis's: not measured".to_owned()
    } else if worse.is_empty() {
        format!("p99 <= redis's: at all {compared} batch sizes, met")
    } else {
        format!("p99 <= redis's: worse at {}, NOT met", worse.join(", "))
    });
    match f.memory.iter().find(|m| m.system == System::EngramStore) {
        Some(m) => {
            let x = m.rss_per_row() / f.row_bytes.max(1) as f64;
            out.push(format!(
                "engram-store RSS per stored row <= 1.1x raw row bytes: {x:.2}x ({:.1} B/row), {}",
                m.rss_per_row(),
                verdict(x <= 1.1)
            ));
        }
        None => out.push("engram-store RSS per stored row: not measured".to_owned()),
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engram_store_cache::LatencyHistogram;

    use super::*;

    fn outcome(system: System, batch: usize, rate: f64, p99_us: u64) -> PeerOutcome {
        let latency = LatencyHistogram::new();
        latency.record(Duration::from_micros(p99_us));
        PeerOutcome {
            system,
            batch,
            concurrency: 8,
            runs: vec![(rate, rate * 160.0)],
            latency,
            rss_bytes: 200_000,
            stored_rows: 1000,
            ram_hit_rate: None,
            rows_total: 1000,
            server_cpu_s: 0.0,
            client_cpu_s: 0.0,
        }
    }

    #[test]
    fn judges_each_target() {
        let outcomes = [
            outcome(System::Redis, 16, 100.0, 100),
            outcome(System::EngramStore, 16, 120.0, 90),
            outcome(System::Redis, 4096, 1000.0, 1000),
            outcome(System::EngramStore, 4096, 2000.0, 1500),
        ];
        let memory = [ServerMemory {
            system: System::EngramStore,
            rss_empty: 0,
            rss_loaded: 170_000,
            used_loaded: None,
            rows: 1000,
        }];
        let limits = MachineLimits {
            tcp_bytes_per_s: 1e9,
            iops: None,
        };
        let f = Findings {
            outcomes: &outcomes,
            memory: &memory,
            limits: &limits,
            row_bytes: 160,
        };
        let t = targets(&f);
        assert_eq!(t[0], "rows/s at batch 4096 >= 3x redis: 2.00x, NOT met");
        assert_eq!(t[1], "rows/s at batch 16 >= 1x redis: 1.20x, met");
        assert!(
            t[2].starts_with("p99 <= redis's: worse at batch 4096"),
            "{}",
            t[2]
        );
        assert!(t[3].ends_with("1.06x (170.0 B/row), met"), "{}", t[3]);
        let text = render(&f);
        assert!(text.contains("targets"), "{text}");
    }
}
