//! SVG (and, natively, PNG) plots of weight-change spectra: rank needed per layer for each
//! module type with typical LoRA ranks as reference lines, and cumulative explained-variance
//! curves. PNG text is drawn with the bundled DejaVu Sans (assets/), so no system font is needed.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::spectrum::{MatrixSpectrum, explained_variance};
use crate::error::{Error, Result};
use crate::files::File;

/// LoRA ranks drawn as reference lines (the paper's 16, 64, 256).
pub const LORA_RANKS: &[usize] = &[16, 64, 256];

const PALETTE: &[RGBColor] = &[
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot_err<E: std::fmt::Debug>(e: E) -> Error {
    Error::Input(format!("plotting failed: {e:?}"))
}

/// Rank of ΔW needed for the threshold, per layer, one line per module type.
pub fn rank_vs_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    spectra: &[MatrixSpectrum],
    threshold: f64,
    title: &str,
) -> Result<()> {
    area.fill(&WHITE).map_err(plot_err)?;
    let mut kinds: Vec<String> = spectra.iter().map(|s| s.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let max_layer = spectra.iter().filter_map(|s| s.layer).max().unwrap_or(0);
    let max_rank = spectra.iter().map(|s| s.rank_delta).max().unwrap_or(1);
    let full = spectra
        .iter()
        .map(|s| s.shape[0].min(s.shape[1]))
        .max()
        .unwrap_or(1);
    let y_top = (max_rank.max(16) as f64 * 1.15)
        .min(full as f64 * 1.05)
        .max(max_rank as f64 + 1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(-0.3f64..(max_layer as f64 + 0.3), 0f64..y_top)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("layer")
        .x_labels(max_layer + 2)
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .y_desc(format!(
            "rank for {:.0}% of ΔW's σ² energy",
            threshold * 100.0
        ))
        .draw()
        .map_err(plot_err)?;
    for &r in LORA_RANKS {
        if (r as f64) < y_top {
            chart
                .draw_series(LineSeries::new(
                    [(-0.3, r as f64), (max_layer as f64 + 0.3, r as f64)],
                    BLACK.mix(0.5).stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(format!("LoRA r = {r}"))
                .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.35)));
        }
    }
    for (i, kind) in kinds.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut pts: Vec<(f64, f64)> = spectra
            .iter()
            .filter(|s| &s.kind == kind)
            .map(|s| (s.layer.unwrap_or(0) as f64, s.rank_delta as f64))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(plot_err)?
            .label(kind.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .map_err(plot_err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_err)?;
    area.present().map_err(plot_err)
}

/// Cumulative explained variance of ΔW for the given matrices.
pub fn cumulative_variance<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    spectra: &[&MatrixSpectrum],
    threshold: f64,
) -> Result<()> {
    area.fill(&WHITE).map_err(plot_err)?;
    let n = spectra.iter().map(|s| s.sv_delta.len()).max().unwrap_or(1);
    let mut chart = ChartBuilder::on(area)
        .caption("cumulative explained variance of ΔW", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n as f64, 0f64..1.02f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("number of singular values k")
        .y_desc("Σ_{i≤k} σ² / Σ σ²")
        .draw()
        .map_err(plot_err)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, threshold), (n as f64, threshold)],
            BLACK.mix(0.35),
        ))
        .map_err(plot_err)?
        .label(format!("threshold {threshold}"))
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.35)));
    for (i, s) in spectra.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = explained_variance(&s.sv_delta)
            .into_iter()
            .enumerate()
            .map(|(k, v)| ((k + 1) as f64, v))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(plot_err)?
            .label(s.module.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_err)?;
    area.present().map_err(plot_err)
}

/// Plot files as (name, bytes): `rank_vs_layer.svg`, `cumulative_variance.svg`, and natively
/// the same as PNG.
pub fn spectrum_plots(
    spectra: &[MatrixSpectrum],
    threshold: f64,
    title: &str,
) -> Result<Vec<File>> {
    // Natively, text is measured (and for PNG drawn) with the bundled font, SVG included.
    #[cfg(feature = "native")]
    register_font();
    // The matrices with the lowest and highest rank, and one per block, for the curves.
    let mut chosen: Vec<&MatrixSpectrum> = Vec::new();
    if let Some(lo) = spectra.iter().min_by_key(|s| s.rank_delta) {
        chosen.push(lo);
    }
    if let Some(hi) = spectra.iter().max_by_key(|s| s.rank_delta) {
        chosen.push(hi);
    }
    for block in ["attention", "mlp"] {
        if let Some(s) = spectra.iter().find(|s| s.block == block) {
            chosen.push(s);
        }
    }
    chosen.dedup_by(|a, b| a.module == b.module);
    let (w, h) = (900u32, 560u32);
    let mut files = Vec::new();
    let mut svg = String::new();
    rank_vs_layer(
        &SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(),
        spectra,
        threshold,
        title,
    )?;
    files.push(File::new("rank_vs_layer.svg", svg.into_bytes()));
    let mut svg = String::new();
    cumulative_variance(
        &SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(),
        &chosen,
        threshold,
    )?;
    files.push(File::new("cumulative_variance.svg", svg.into_bytes()));
    #[cfg(feature = "native")]
    {
        files.push(File::new(
            "rank_vs_layer.png",
            png(w, h, |a| rank_vs_layer(a, spectra, threshold, title))?,
        ));
        files.push(File::new(
            "cumulative_variance.png",
            png(w, h, |a| cumulative_variance(a, &chosen, threshold))?,
        ));
    }
    Ok(files)
}

/// A 2-D chart described as data, so one drawing function serves SVG and PNG: lines (with
/// markers) for curves, markers with labels for scatter plots.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
}

/// One labelled set of points of a [`Chart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Join the points with a line (curves) or only mark them (scatter).
    pub line: bool,
    /// Text drawn beside each point (empty: none).
    pub point_labels: Vec<String>,
    /// Error bars (± x, ± y) per point, e.g. standard errors over seeds (empty: none).
    pub errors: Vec<(f64, f64)>,
}

impl Series {
    /// Points joined by a line, without point labels.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            line: true,
            point_labels: Vec::new(),
            errors: Vec::new(),
        }
    }
}

fn padded_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.08).max(hi.abs().max(1e-3) * 0.02);
    (lo - pad)..(hi + pad)
}

/// Draw `chart` on `area`.
pub fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    area.fill(&WHITE).map_err(plot_err)?;
    // Extents include the error bars.
    let ends = || {
        chart.series.iter().flat_map(|s| {
            s.points.iter().enumerate().flat_map(move |(i, &(x, y))| {
                let (ex, ey) = s.errors.get(i).copied().unwrap_or_default();
                [(x - ex, y - ey), (x + ex, y + ey)]
            })
        })
    };
    let xr = padded_range(ends().map(|p| p.0));
    let yr = padded_range(ends().map(|p| p.1));
    let mut c = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 20))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(62)
        .build_cartesian_2d(xr, yr)
        .map_err(plot_err)?;
    c.configure_mesh()
        .x_desc(&chart.x_desc)
        .y_desc(&chart.y_desc)
        .draw()
        .map_err(plot_err)?;
    for (i, s) in chart.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let marker = |p: (f64, f64)| Circle::new(p, 5, color.filled());
        if s.line {
            c.draw_series(LineSeries::new(s.points.clone(), color.stroke_width(2)))
                .map_err(plot_err)?;
        }
        for (&(x, y), &(ex, ey)) in s.points.iter().zip(&s.errors) {
            for bar in [[(x - ex, y), (x + ex, y)], [(x, y - ey), (x, y + ey)]] {
                if bar[0] != bar[1] && bar.iter().all(|p| p.0.is_finite() && p.1.is_finite()) {
                    c.draw_series(std::iter::once(PathElement::new(
                        bar,
                        color.stroke_width(1),
                    )))
                    .map_err(plot_err)?;
                }
            }
        }
        c.draw_series(s.points.iter().map(|&p| marker(p)))
            .map_err(plot_err)?
            .label(s.label.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, color.filled()));
        for (p, text) in s.points.iter().zip(&s.point_labels) {
            c.draw_series(std::iter::once(
                Text::new(
                    text.clone(),
                    *p,
                    ("sans-serif", 13).into_font().color(&color),
                )
                .into_dyn(),
            ))
            .map_err(plot_err)?;
        }
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(plot_err)?;
    area.present().map_err(plot_err)
}

/// `<name>.svg` and, natively, `<name>.png` of `chart`.
pub fn chart_files(name: &str, chart: &Chart) -> Result<Vec<File>> {
    #[cfg(feature = "native")]
    register_font();
    let (w, h) = (900u32, 600u32);
    let mut svg = String::new();
    draw_chart(
        &SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area(),
        chart,
    )?;
    #[allow(unused_mut)]
    let mut files = vec![File::new(format!("{name}.svg"), svg)];
    #[cfg(feature = "native")]
    files.push(File::new(
        format!("{name}.png"),
        png(w, h, |a| draw_chart(a, chart))?,
    ));
    Ok(files)
}

/// Render with the bitmap backend and encode as PNG.
#[cfg(feature = "native")]
pub fn png(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<Vec<u8>> {
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw(&area)?;
    }
    let img = image::RgbImage::from_raw(w, h, rgb).ok_or_else(|| plot_err("bad buffer size"))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(plot_err)?;
    Ok(out.into_inner())
}

/// Make the bundled DejaVu Sans the `sans-serif` font of native plots.
#[cfg(feature = "native")]
pub fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans (assets/DejaVuSans-LICENSE.txt: Bitstream Vera licence, free to embed).
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;

    #[test]
    fn bundled_font_measures_text() {
        register_font();
        let font: FontDesc = ("sans-serif", 12.0).into();
        assert!(font.box_size("rank").is_ok());
    }
}
