//! The SVG plot: hit rate against cache size (log scale, percent of distinct rows), one line per
//! policy; the default policy is drawn thicker and OPT in black.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::outcome::Outcome;

/// Draws `outcomes` (one trace) to an SVG file.
pub fn draw(path: &Path, outcomes: &[Outcome]) -> Result<()> {
    let mut policies: Vec<&str> = Vec::new();
    for o in outcomes {
        if !policies.contains(&o.policy.as_str()) {
            policies.push(&o.policy);
        }
    }
    let fracs = outcomes.iter().map(|o| o.cache_fraction * 100.0);
    let x_min = fracs.clone().fold(f64::INFINITY, f64::min).max(1e-3);
    let x_max = fracs.fold(0.0f64, f64::max).max(x_min * 1.01);
    let y_max = outcomes
        .iter()
        .map(|o| o.hit_rate() * 100.0)
        .fold(0.0f64, f64::max);
    let y_max = ((y_max / 10.0).ceil() * 10.0).clamp(10.0, 100.0);
    let trace = outcomes.first().map_or("", |o| o.trace.as_str());

    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| anyhow!("plot {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{trace}: hit rate vs cache size"),
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((x_min * 0.9..x_max * 1.1).log_scale(), 0.0..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("cache size (% of distinct rows)")
        .y_desc("hit rate (%)")
        .x_label_formatter(&|x| format!("{x}"))
        .draw()
        .map_err(|e| err(&e))?;

    for (i, &p) in policies.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = outcomes
            .iter()
            .filter(|o| o.policy == p)
            .map(|o| (o.cache_fraction * 100.0, o.hit_rate() * 100.0))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let is_default = outcomes.iter().any(|o| o.policy == p && o.is_default);
        let color = if p == "opt" {
            BLACK
        } else {
            let (r, g, b) = Palette99::pick(i).to_backend_color().rgb;
            RGBColor(r, g, b)
        };
        let style = color.stroke_width(if is_default { 4 } else { 2 });
        let label = if is_default {
            format!("{p} (default)")
        } else {
            p.to_owned()
        };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| err(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(points.iter().map(|&pt| Circle::new(pt, 3, color.filled())))
            .map_err(|e| err(&e))?;
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
