//! SVG plots of latency percentiles against offered rate (plotters, SVG only:
//! text is left to the viewer's fonts, so no font library is needed here).

use std::path::Path;

use plotters::prelude::*;

/// One offered rate and the percentiles measured at it, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub rate: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Draws p50, p90 and p99 against offered rate, with a dashed line at `target_ms`.
pub fn percentiles_vs_rate(
    path: &Path,
    title: &str,
    y_label: &str,
    points: &[Point],
    target_ms: Option<f64>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!points.is_empty(), "no points to plot for {title}");
    let x_max = points.iter().map(|p| p.rate).fold(0.0, f64::max) * 1.05;
    let y_max = points
        .iter()
        .map(|p| p.p99)
        .chain(target_ms)
        .fold(1.0, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart
        .configure_mesh()
        .x_desc("offered rate (requests/s, open loop)")
        .y_desc(y_label)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    type Series = (&'static str, RGBColor, fn(&Point) -> f64);
    let series: [Series; 3] = [
        ("p50", RGBColor(31, 119, 180), |p| p.p50),
        ("p90", RGBColor(255, 127, 14), |p| p.p90),
        ("p99", RGBColor(214, 39, 40), |p| p.p99),
    ];
    for (name, color, value) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.rate, value(p))).collect();
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            line.into_iter()
                .map(|xy| Circle::new(xy, 3, color.filled())),
        )?;
    }
    if let Some(target) = target_ms {
        let grey = RGBColor(120, 120, 120);
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, target), (x_max, target)],
                6,
                4,
                grey.stroke_width(1),
            ))?
            .label(format!("target p99 {target} ms"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], grey));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
