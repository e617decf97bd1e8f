//! The comparison's two SVG plots:
//!
//! - `peers-rows.svg`: rows/s against batch size, log-log, one line per system, the loopback TCP
//!   limit (in rows/s of the table) dashed, and the raw io_uring IOPS limit when it was measured.
//! - `peers-latency.svg`: the latency distribution of each system, one panel per batch size, read
//!   from the latency histograms of the runs: x is latency (log), y the quantile in "nines"
//!   (0 = p0, 1 = p90, 2 = p99, 3 = p99.9), so the tail gets as much room as the median.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::outcome::{MachineLimits, PeerOutcome};
use super::peer::System;

/// Highest quantile drawn, in nines (p99.99).
const MAX_NINES: f64 = 4.0;

fn color(system: System) -> RGBColor {
    match system {
        System::Redis => RGBColor(214, 39, 40),
        System::EngramStore => RGBColor(31, 119, 180),
        System::Limit => RGBColor(110, 110, 110),
    }
}

fn err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> anyhow::Error + '_ {
    move |e| anyhow!("plot {}: {e}", path.display())
}

/// The systems present in `outcomes`, in order of appearance.
fn systems(outcomes: &[PeerOutcome]) -> Vec<System> {
    let mut out = Vec::new();
    for o in outcomes {
        if !out.contains(&o.system) {
            out.push(o.system);
        }
    }
    out
}

/// Draws rows/s against batch size to `path`.
pub fn draw_rows(
    path: &Path,
    outcomes: &[PeerOutcome],
    limits: &MachineLimits,
    row_bytes: usize,
    title: &str,
) -> Result<()> {
    let err = err(path);
    let tcp_rows = limits.tcp_bytes_per_s / row_bytes.max(1) as f64;
    let batches = outcomes.iter().map(|o| o.batch as f64);
    let x_min = batches.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let x_max = batches.fold(1.0f64, f64::max).max(x_min * 2.0);
    let rates = outcomes
        .iter()
        .map(|o| o.rows_per_s())
        .chain([tcp_rows])
        .chain(limits.iops.map(|i| i.per_s));
    let y_min = rates.clone().fold(f64::INFINITY, f64::min).max(1.0);
    let y_max = rates.fold(1.0f64, f64::max).max(y_min * 2.0);

    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5).log_scale(),
            (y_min / 2.0..y_max * 2.0).log_scale(),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("ids per request (batch)")
        .y_desc("rows/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0e}"))
        .draw()
        .map_err(|e| err(&e))?;
    for system in systems(outcomes) {
        let mut points: Vec<(f64, f64)> = outcomes
            .iter()
            .filter(|o| o.system == system)
            .map(|o| (o.batch as f64, o.rows_per_s()))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let style = color(system).stroke_width(3);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(system.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|&p| Circle::new(p, 4, color(system).filled())),
            )
            .map_err(|e| err(&e))?;
    }
    let mut limit_line = |y: f64, label: String, dash: u32| -> Result<()> {
        let style = color(System::Limit).stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(
                [(x_min / 1.5, y), (x_max * 1.5, y)],
                dash,
                6,
                style,
            ))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        Ok(())
    };
    limit_line(
        tcp_rows,
        format!(
            "limit: loopback TCP, one stream ({:.2} GB/s as rows)",
            limits.tcp_bytes_per_s / 1e9
        ),
        12,
    )?;
    if let Some(iops) = limits.iops {
        limit_line(
            iops.per_s,
            format!(
                "limit: raw io_uring {} B random reads, qd {}",
                iops.read_bytes, iops.queue_depth
            ),
            4,
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// The label of a height in nines: p0, p90, p99, p99.9...
fn nines_label(y: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-y));
    let text = format!("{p:.4}");
    format!("p{}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A latency in µs as text: `250us`, `12ms`, `1.5s`.
fn duration_label(us: f64) -> String {
    if us >= 1e6 {
        format!("{}s", us / 1e6)
    } else if us >= 1e3 {
        format!("{}ms", us / 1e3)
    } else {
        format!("{us}us")
    }
}

/// The latency distribution of `o` as (µs, nines) points from p0 to p99.99.
fn cdf_points(o: &PeerOutcome) -> Vec<(f64, f64)> {
    (0..=(MAX_NINES * 50.0) as u32)
        .map(|i| {
            let y = f64::from(i) / 50.0;
            let q = 1.0 - 10f64.powf(-y);
            (o.quantile_us(q).max(0.1), y)
        })
        .collect()
}

/// Draws the latency distributions to `path`, one panel per batch size.
pub fn draw_latency(path: &Path, outcomes: &[PeerOutcome], title: &str) -> Result<()> {
    let err = err(path);
    let mut batches: Vec<usize> = outcomes.iter().map(|o| o.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    let cols = batches.len().clamp(1, 3);
    let rows = batches.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (420 * cols as u32, 60 + 330 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let panels = root.split_evenly((rows, cols));
    for (panel, &batch) in panels.iter().zip(&batches) {
        let here: Vec<&PeerOutcome> = outcomes.iter().filter(|o| o.batch == batch).collect();
        draw_panel(panel, batch, &here).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    batch: usize,
    outcomes: &[&PeerOutcome],
) -> Result<(), Box<dyn std::error::Error>> {
    let curves: Vec<(System, Vec<(f64, f64)>)> =
        outcomes.iter().map(|o| (o.system, cdf_points(o))).collect();
    let xs = curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.0));
    let x_min = xs.clone().fold(f64::INFINITY, f64::min).max(0.1);
    let x_max = xs.fold(0.0f64, f64::max).max(x_min * 2.0);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("batch {batch}"), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d((x_min / 1.3..x_max * 1.3).log_scale(), 0.0..MAX_NINES)?;
    chart
        .configure_mesh()
        .x_desc("latency")
        .y_labels(5)
        .x_label_formatter(&|x| duration_label(*x))
        .y_label_formatter(&|y| nines_label(*y))
        .draw()?;
    for (system, points) in curves {
        let style = color(system).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(system.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use engram_store_cache::LatencyHistogram;

    use super::super::outcome::RawIops;
    use super::*;

    fn outcome(system: System, batch: usize, rate: f64, us: u64) -> PeerOutcome {
        let latency = LatencyHistogram::new();
        for i in 0..1000 {
            latency.record(Duration::from_micros(us + i % 50));
        }
        PeerOutcome {
            system,
            batch,
            concurrency: 4,
            runs: vec![(rate, rate * 160.0)],
            latency,
            rss_bytes: 1 << 20,
            stored_rows: 1000,
            ram_hit_rate: None,
            rows_total: 1000,
            server_cpu_s: 0.0,
            client_cpu_s: 0.0,
        }
    }

    #[test]
    fn nines_read_as_percentiles() {
        assert_eq!(nines_label(0.0), "p0");
        assert_eq!(nines_label(1.0), "p90");
        assert_eq!(nines_label(2.0), "p99");
        assert_eq!(nines_label(3.0), "p99.9");
        assert_eq!(duration_label(250.0), "250us");
        assert_eq!(duration_label(20_000.0), "20ms");
        assert_eq!(duration_label(1_500_000.0), "1.5s");
    }

    #[test]
    fn draws_both_plots() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let outcomes = vec![
            outcome(System::EngramStore, 16, 1e5, 80),
            outcome(System::Redis, 16, 9e4, 90),
            outcome(System::EngramStore, 4096, 5e6, 900),
            outcome(System::Redis, 4096, 1e6, 2000),
        ];
        let limits = MachineLimits {
            tcp_bytes_per_s: 3e9,
            iops: Some(RawIops {
                per_s: 1e5,
                queue_depth: 64,
                read_bytes: 4096,
            }),
        };
        let rows = dir.path().join("rows.svg");
        let latency = dir.path().join("latency.svg");
        draw_rows(&rows, &outcomes, &limits, 160, "test")?;
        draw_latency(&latency, &outcomes, "test")?;
        let rows = std::fs::read_to_string(rows)?;
        assert!(rows.contains("<svg") && rows.contains("engram-store") && rows.contains("redis"));
        let latency = std::fs::read_to_string(latency)?;
        assert!(latency.contains("batch 4096") && latency.contains("p99"));
        Ok(())
    }
}
