//! Plots as SVG (plotters) and PNG (the same SVG rasterised by resvg):
//! per-class clean and robust accuracy beside the training count per class, and
//! training curves from a run's `metrics.jsonl`.

use std::path::Path;

use plotters::prelude::*;
use robal::metrics::MetricsRecord;

use crate::error::{file_err, EvalError, Result};

fn plot_err(what: &str, e: impl std::fmt::Display) -> EvalError {
    EvalError::Invalid { what: format!("plot {what}"), reason: e.to_string() }
}

/// One named series of per-class accuracies in [0, 1].
pub struct ClassSeries<'a> {
    /// Legend label, e.g. `clean`.
    pub label: &'a str,
    /// Recall per class (NaN for classes absent from the test set).
    pub values: &'a [f64],
}

/// Series colours, in order (ten, for a study's methods).
pub(crate) const PALETTE: [RGBColor; 10] = [
    RGBColor(66, 133, 244),
    RGBColor(219, 68, 55),
    RGBColor(15, 157, 88),
    RGBColor(244, 160, 0),
    RGBColor(171, 71, 188),
    RGBColor(0, 172, 193),
    RGBColor(255, 112, 67),
    RGBColor(158, 157, 36),
    RGBColor(92, 107, 192),
    RGBColor(0, 0, 0),
];

/// Grouped bars of per-class accuracy (left axis, %) with the training count per class
/// as a black line on a log-scale right axis. Returns the SVG text.
pub fn per_class_svg(title: &str, series: &[ClassSeries], train_counts: &[usize]) -> Result<String> {
    let k = train_counts.len();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("per-class", e))?;
        let max_count = train_counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        let x_range = -0.5f64..(k as f64 - 0.5);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .right_y_label_area_size(70)
            .build_cartesian_2d(x_range.clone(), 0f64..105f64)
            .map_err(|e| plot_err("per-class", e))?
            .set_secondary_coord(x_range, (0.8f64..max_count * 1.5).log_scale());
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(k.min(25))
            .x_label_formatter(&|x| format!("{}", x.round() as i64))
            .x_desc("class (sorted by training count)")
            .y_desc("accuracy (%)")
            .draw()
            .map_err(|e| plot_err("per-class", e))?;
        chart
            .configure_secondary_axes()
            .y_desc("training images (log scale)")
            .draw()
            .map_err(|e| plot_err("per-class", e))?;
        let width = 0.8 / series.len().max(1) as f64;
        for (s, ser) in series.iter().enumerate() {
            let color = PALETTE[s % PALETTE.len()];
            chart
                .draw_series(ser.values.iter().enumerate().filter(|(_, v)| !v.is_nan()).map(|(c, &v)| {
                    let x0 = c as f64 - 0.4 + s as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width * 0.95, 100.0 * v)], color.filled())
                }))
                .map_err(|e| plot_err("per-class", e))?
                .label(ser.label)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        let counts: Vec<(f64, f64)> =
            train_counts.iter().enumerate().map(|(c, &n)| (c as f64, n.max(1) as f64)).collect();
        chart
            .draw_secondary_series(LineSeries::new(counts.clone(), BLACK.stroke_width(2)))
            .map_err(|e| plot_err("per-class", e))?
            .label("training images")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 12, y)], BLACK.stroke_width(2)));
        chart
            .draw_secondary_series(counts.iter().map(|&p| Circle::new(p, 3, BLACK.filled())))
            .map_err(|e| plot_err("per-class", e))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err("per-class", e))?;
        root.present().map_err(|e| plot_err("per-class", e))?;
    }
    Ok(svg)
}

/// One curve: label and (x, y) points.
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

/// Curves of a run's `metrics.jsonl`: training loss per epoch (left panel); batch
/// clean/adversarial accuracy and the periodic quick-evaluation accuracies (right panel, %).
pub fn curves_from_metrics(text: &str) -> (Vec<Curve>, Vec<Curve>) {
    let mut loss = Curve { label: "training loss".into(), points: vec![] };
    let mut acc: Vec<Curve> = ["clean (train batches)", "adversarial (train batches)", "clean (test)", "PGD (test)"]
        .iter()
        .map(|l| Curve { label: l.to_string(), points: vec![] })
        .collect();
    for record in MetricsRecord::parse_all(text) {
        match record {
            MetricsRecord::Epoch(r) => {
                let epoch = r.epoch as f64;
                loss.points.push((epoch, r.loss));
                for (i, a) in [(0, r.clean_batch_acc), (1, r.adv_batch_acc)] {
                    if let Some(a) = a {
                        acc[i].points.push((epoch, 100.0 * a));
                    }
                }
            }
            MetricsRecord::QuickEval { epoch, quick_eval: q } => {
                for (i, a) in [(2, q.clean.overall), (3, q.pgd.overall)] {
                    if a.is_finite() {
                        acc[i].points.push((epoch as f64, 100.0 * a));
                    }
                }
            }
            MetricsRecord::Stage2 { .. } | MetricsRecord::Selection(_) => {}
        }
    }
    acc.retain(|c| !c.points.is_empty());
    (vec![loss], acc)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    curves: &[Curve],
) -> Result<()> {
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (mut x1, mut y0, mut y1) = (1f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !y0.is_finite() {
        (y0, y1) = (0.0, 1.0);
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x1.max(1.0) + 0.5, (y0 - pad).min(0.0f64.max(y0 - pad))..y1 + pad)
        .map_err(|e| plot_err("curves", e))?;
    chart.configure_mesh().x_desc("epoch").y_desc(y_desc).draw().map_err(|e| plot_err("curves", e))?;
    for (i, c) in curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(c.points.clone(), color.stroke_width(2)))
            .map_err(|e| plot_err("curves", e))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 12, y)], color.stroke_width(2)));
        chart
            .draw_series(c.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| plot_err("curves", e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err("curves", e))?;
    Ok(())
}

/// Training curves of a run as SVG text (two panels: loss; accuracies in %).
pub fn training_curves_svg(title: &str, metrics_jsonl: &str) -> Result<String> {
    let (loss, acc) = curves_from_metrics(metrics_jsonl);
    two_panels_svg(&format!("{title}: loss"), "loss", &loss, &format!("{title}: accuracy"), "accuracy (%)", &acc)
}

/// Two line-chart panels side by side against the epoch: (title, y label, curves)
/// on the left and on the right. SVG text.
pub fn two_panels_svg(
    left_title: &str,
    left_y: &str,
    left: &[Curve],
    right_title: &str,
    right_y: &str,
    right: &[Curve],
) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("curves", e))?;
        let (l, r) = root.split_horizontally(520);
        panel(&l, left_title, left_y, left)?;
        panel(&r, right_title, right_y, right)?;
        root.present().map_err(|e| plot_err("curves", e))?;
    }
    Ok(svg)
}

/// Rasterise SVG text to PNG bytes (text drawn with the system's sans-serif font;
/// without any system font the labels are left out).
pub fn svg_to_png(svg: &str) -> Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    opt.fontdb_mut().load_system_fonts();
    // plotters asks for the generic "sans-serif"; map it to a font most Linux systems have.
    opt.fontdb_mut().set_sans_serif_family("DejaVu Sans");
    opt.font_family = "DejaVu Sans".into();
    let tree = usvg::Tree::from_str(svg, &opt).map_err(|e| plot_err("png", e))?;
    let size = tree.size().to_int_size();
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| plot_err("png", "empty image size"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    pixmap.encode_png().map_err(|e| plot_err("png", e))
}

/// Write `stem.svg` and `stem.png` into `dir`, atomically.
pub fn write_svg_png(dir: &Path, stem: &str, svg: &str) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    robal_data::write_atomic(&dir.join(format!("{stem}.svg")), svg.as_bytes())?;
    robal_data::write_atomic(&dir.join(format!("{stem}.png")), &svg_to_png(svg)?)?;
    Ok(())
}
