//! The short stdout report: hit rate per policy and cache size, each policy's measured bytes per
//! row and speed, and the default policy against its limits (the best online policy, and how much
//! of the gap from moka's W-TinyLFU to OPT it closes), all from the same run.

use std::fmt::Write;

use super::outcome::Outcome;

/// Renders the report for one trace's outcomes.
pub fn render(outcomes: &[Outcome]) -> String {
    let mut sizes: Vec<(usize, f64)> = outcomes
        .iter()
        .map(|o| (o.cache_rows, o.cache_fraction))
        .collect();
    sizes.sort_by_key(|s| s.0);
    sizes.dedup_by_key(|s| s.0);
    let mut policies: Vec<&str> = Vec::new();
    for o in outcomes {
        if !policies.contains(&o.policy.as_str()) {
            policies.push(&o.policy);
        }
    }
    let find = |p: &str, rows: usize| {
        outcomes
            .iter()
            .find(|o| o.policy == p && o.cache_rows == rows)
    };

    let mut s = String::new();
    if let Some(o) = outcomes.first() {
        let _ = writeln!(s, "trace {}: {} accesses", o.trace, o.accesses);
    }
    let _ = write!(s, "{:<28}", "hit rate % / cache");
    for &(rows, frac) in &sizes {
        let _ = write!(s, " {:>9}", format!("{:.2}%", frac * 100.0));
        let _ = rows;
    }
    let _ = writeln!(s, " {:>8} {:>8}", "B/row", "Mops/s");
    for &p in &policies {
        let mark = if outcomes.iter().any(|o| o.policy == p && o.is_default) {
            " *"
        } else {
            ""
        };
        let _ = write!(s, "{:<28}", format!("{p}{mark}"));
        for &(rows, _) in &sizes {
            match find(p, rows) {
                Some(o) => {
                    let _ = write!(s, " {:>9.2}", o.hit_rate() * 100.0);
                }
                None => {
                    let _ = write!(s, " {:>9}", "-");
                }
            }
        }
        // Overhead and speed at the largest size this policy ran.
        if let Some(o) = sizes.iter().rev().find_map(|&(rows, _)| find(p, rows)) {
            let _ = write!(
                s,
                " {:>8.2} {:>8.2}",
                o.overhead_bytes_per_row(),
                o.ops_per_sec() / 1e6
            );
        }
        let _ = writeln!(s);
    }

    let default = outcomes
        .iter()
        .find(|o| o.is_default)
        .map(|o| o.policy.as_str());
    if let Some(d) = default {
        let _ = writeln!(
            s,
            "* default policy. Limits: best online policy (within 0.5 points), gap moka -> opt closed (target >= 50% at 5%):"
        );
        for &(rows, frac) in &sizes {
            let Some(def) = find(d, rows) else { continue };
            let best = outcomes
                .iter()
                .filter(|o| o.cache_rows == rows && o.policy != "opt" && o.policy != d)
                .max_by(|a, b| a.hit_rate().total_cmp(&b.hit_rate()));
            let _ = write!(
                s,
                "  {:>6.2}%  {d} {:.2}",
                frac * 100.0,
                def.hit_rate() * 100.0
            );
            if let Some(b) = best {
                let _ = write!(
                    s,
                    "  best other {} {:.2} ({:+.2})",
                    b.policy,
                    b.hit_rate() * 100.0,
                    (def.hit_rate() - b.hit_rate()) * 100.0
                );
            }
            if let (Some(m), Some(opt)) = (find("moka", rows), find("opt", rows)) {
                let gap = opt.hit_rate() - m.hit_rate();
                if gap > 0.0 {
                    let closed = (def.hit_rate() - m.hit_rate()) / gap;
                    let _ = write!(
                        s,
                        "  opt {:.2} moka {:.2} gap closed {:.0}%",
                        opt.hit_rate() * 100.0,
                        m.hit_rate() * 100.0,
                        closed * 100.0
                    );
                }
            }
            let _ = writeln!(s);
        }
    }
    s
}

/// A Markdown summary over every trace in `outcomes`: per trace and size, the default's hit rate,
/// the best other online policy of the zoo (tuned variants, whose labels hold a `:`, are
/// experiments and do not count), the default's distance to it and to OPT, and the share of the
/// gap from moka to OPT it closes.
pub fn summary(outcomes: &[Outcome]) -> String {
    let mut traces: Vec<&str> = Vec::new();
    for o in outcomes {
        if !traces.contains(&o.trace.as_str()) {
            traces.push(&o.trace);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| trace | size | default | best other online | default - best | OPT | default - OPT | moka | gap closed |"
    );
    let _ = writeln!(s, "|---|---:|---:|---|---:|---:|---:|---:|---:|");
    for trace in traces {
        let of_trace: Vec<&Outcome> = outcomes.iter().filter(|o| o.trace == trace).collect();
        let mut sizes: Vec<(usize, f64)> = of_trace
            .iter()
            .map(|o| (o.cache_rows, o.cache_fraction))
            .collect();
        sizes.sort_by_key(|s| s.0);
        sizes.dedup_by_key(|s| s.0);
        for (rows, frac) in sizes {
            let at: Vec<&&Outcome> = of_trace.iter().filter(|o| o.cache_rows == rows).collect();
            let Some(def) = at.iter().find(|o| o.is_default) else {
                continue;
            };
            let pct = |o: &Outcome| o.hit_rate() * 100.0;
            let best = at
                .iter()
                .filter(|o| !o.is_default && o.policy != "opt" && !o.policy.contains(':'))
                .max_by(|a, b| a.hit_rate().total_cmp(&b.hit_rate()));
            let opt = at.iter().find(|o| o.policy == "opt");
            let moka = at.iter().find(|o| o.policy == "moka");
            let cell = |v: Option<f64>, signed: bool| match (v, signed) {
                (Some(v), true) => format!("{v:+.2}"),
                (Some(v), false) => format!("{v:.2}"),
                (None, _) => "-".to_owned(),
            };
            let closed = match (moka, opt) {
                (Some(m), Some(o)) if o.hit_rate() > m.hit_rate() => format!(
                    "{:.0}%",
                    (def.hit_rate() - m.hit_rate()) / (o.hit_rate() - m.hit_rate()) * 100.0
                ),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                s,
                "| {trace} | {:.1}% | {:.2} | {} | {} | {} | {} | {} | {closed} |",
                frac * 100.0,
                pct(def),
                best.map_or("-".to_owned(), |b| format!("{} {:.2}", b.policy, pct(b))),
                cell(best.map(|b| pct(def) - pct(b)), true),
                cell(opt.map(|o| pct(o)), false),
                cell(opt.map(|o| pct(def) - pct(o)), true),
                cell(moka.map(|m| pct(m)), false),
            );
        }
    }
    s
}
