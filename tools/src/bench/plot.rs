//! The `--plot` SVG: latency percentile distributions on log scales.

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;
use plotters::prelude::*;
use std::path::Path;

/// Draws each histogram's percentile distribution: x is the percentile on
/// a "nines" scale (log10 of 1 / (1 - p)), y the latency in ns, log scale.
pub fn percentiles(path: &Path, series: &[(&str, &Histogram<u64>)]) -> Result<()> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let nines: Vec<f64> = (0..=500).map(|i| i as f64 / 100.0).collect();
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            nines
                .iter()
                .map(|&x| {
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q).max(1) as f64)
                })
                .collect()
        })
        .collect();
    let ymax = curves.iter().flatten().map(|p| p.1).fold(10.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption("tape one-way latency vs. floor", ("sans-serif", 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..5f64, (10f64..ymax).log_scale())
        .map_err(|e| anyhow!("plot: {e}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ns)")
        .x_labels(6)
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            format!("{p}%")
        })
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, ((name, _), pts)) in series.iter().zip(curves).enumerate() {
        let c = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| anyhow!("plot: {e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("plot: {e}"))?;
    root.present().map_err(|e| anyhow!("plot: {e}"))?;
    Ok(())
}
