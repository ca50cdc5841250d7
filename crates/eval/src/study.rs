//! A study's reports aggregated over seeds: for each method, the mean and sample
//! standard deviation over its seeds of every attack's accuracy, the worst case, the
//! head / middle / tail class groups and each class; as Markdown tables, JSON and
//! plots (per-class worst-case accuracy against the training count on a log axis,
//! and training curves).
//!
//! Class groups here are by rank of training count, so that they mean something on
//! any long tail: with C classes sorted by count, `head` is the first round(0.3 C),
//! `tail` the last round(0.3 C), `middle` the rest (3 / 4 / 3 of 10 classes). (The
//! reports' own many/medium/few groups use fixed counts, > 100 and < 20, which put
//! every class of a 6,000-to-120 tail into `many`.)

use std::fmt::Write as _;

use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::plot::{curves_from_metrics, Curve, PALETTE};
use crate::report::Report;

/// One evaluated run of a study.
pub struct StudyRun {
    /// The method (preset) name.
    pub method: String,
    /// Its training seed.
    pub seed: u64,
    /// The run's evaluation report.
    pub report: Report,
    /// The run's `metrics.jsonl`, if any.
    pub metrics: Option<String>,
}

/// Mean and sample standard deviation (n - 1 in the denominator; NaN for n < 2).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanSd {
    /// Mean.
    #[serde(with = "crate::nan::one")]
    pub mean: f64,
    /// Sample standard deviation sqrt(sum (x - mean)^2 / (n - 1)).
    #[serde(with = "crate::nan::one")]
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

impl MeanSd {
    /// Of `values` (NaN values are skipped).
    pub fn of(values: &[f64]) -> Self {
        let v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        let n = v.len();
        if n == 0 {
            return Self { mean: f64::NAN, sd: f64::NAN, n };
        }
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd =
            if n < 2 { f64::NAN } else { (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt() };
        Self { mean, sd, n }
    }

    /// `mean ± sd` in percent with one decimal (`mean` alone for one value, `-` for none).
    pub fn pct(&self) -> String {
        match (self.mean.is_nan(), self.sd.is_nan()) {
            (true, _) => "-".into(),
            (false, true) => format!("{:.1}", 100.0 * self.mean),
            (false, false) => format!("{:.1} ± {:.1}", 100.0 * self.mean, 100.0 * self.sd),
        }
    }
}

/// Head / middle / tail classes by rank of training count (see the module docs).
pub fn rank_groups(train_counts: &[usize]) -> Vec<(String, Vec<usize>)> {
    let k = train_counts.len();
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(train_counts[c]));
    let edge = ((0.3 * k as f64).round() as usize).max(1).min(k / 2);
    let (head, rest) = order.split_at(edge);
    let (middle, tail) = rest.split_at(rest.len() - edge);
    let mut groups = vec![("head".to_string(), head.to_vec())];
    if !middle.is_empty() {
        groups.push(("middle".to_string(), middle.to_vec()));
    }
    groups.push(("tail".to_string(), tail.to_vec()));
    groups.retain(|(_, c)| !c.is_empty());
    groups
}

fn group_mean(recall: &[f64], classes: &[usize]) -> f64 {
    crate::metrics::mean_present(classes.iter().map(|&c| recall[c]))
}

/// One accuracy figure of a method: overall, balanced, per group, per class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured: an attack's name, or `worst-case`.
    pub name: String,
    /// Overall accuracy.
    pub overall: MeanSd,
    /// Balanced accuracy (mean recall over classes).
    pub balanced: MeanSd,
    /// Head / middle / tail mean recall.
    pub groups: Vec<(String, MeanSd)>,
    /// Recall of each class.
    pub per_class: Vec<MeanSd>,
}

/// A method's figures over its seeds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method (preset) name.
    pub method: String,
    /// The seeds aggregated.
    pub seeds: Vec<u64>,
    /// Test images per run.
    pub images: usize,
    /// Each attack of the report (clean first), then `worst-case`.
    pub figures: Vec<Figure>,
}

/// The methods of `runs`, each once, in order of first appearance.
fn methods(runs: &[StudyRun]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in runs {
        if !out.contains(&r.method.as_str()) {
            out.push(&r.method);
        }
    }
    out
}

/// Aggregate the runs by method (methods in order of first appearance). Runs of a
/// method must have been evaluated on the same images with the same attacks.
pub fn summarize(runs: &[StudyRun]) -> Result<Vec<MethodSummary>> {
    methods(runs)
        .into_iter()
        .map(|m| {
            let of: Vec<&StudyRun> = runs.iter().filter(|r| r.method == m).collect();
            let first = &of[0].report;
            let names: Vec<String> = first.attacks.iter().map(|a| a.name.clone()).collect();
            for r in &of {
                let these: Vec<String> = r.report.attacks.iter().map(|a| a.name.clone()).collect();
                if these != names || r.report.images != first.images || r.report.train_counts != first.train_counts {
                    return Err(EvalError::Invalid {
                        what: format!("study method {m}"),
                        reason: format!(
                            "seed {} was evaluated differently ({} images, attacks {these:?}) from seed {} ({} images, attacks {names:?})",
                            r.seed, r.report.images, of[0].seed, first.images
                        ),
                    });
                }
            }
            let groups = rank_groups(&first.train_counts);
            let figure = |name: &str, pick: &dyn Fn(&Report) -> &crate::report::AttackReport| {
                let each = |f: &dyn Fn(&crate::report::AttackReport) -> f64| {
                    MeanSd::of(&of.iter().map(|r| f(pick(&r.report))).collect::<Vec<_>>())
                };
                Figure {
                    name: name.to_string(),
                    overall: each(&|a| a.accuracy),
                    balanced: each(&|a| a.balanced_accuracy),
                    groups: groups.iter().map(|(g, cls)| (g.clone(), each(&|a| group_mean(&a.per_class, cls)))).collect(),
                    per_class: (0..first.train_counts.len()).map(|c| each(&|a| a.per_class[c])).collect(),
                }
            };
            let mut figures: Vec<Figure> =
                (0..names.len()).map(|i| figure(&names[i], &|r: &Report| &r.attacks[i])).collect();
            figures.push(figure("worst-case", &|r: &Report| &r.worst_case));
            Ok(MethodSummary { method: m.to_string(), seeds: of.iter().map(|r| r.seed).collect(), images: first.images, figures })
        })
        .collect()
}

/// Markdown: overall accuracy per attack and worst case; then balanced accuracy and
/// head / middle / tail, clean and worst case; then worst-case recall per class.
/// Every cell is mean ± sd over the seeds, in percent.
pub fn markdown(summaries: &[MethodSummary], class_names: &[String], train_counts: &[usize]) -> String {
    let mut s = String::new();
    let Some(first) = summaries.first() else { return s };
    let names: Vec<&str> = first.figures.iter().map(|f| f.name.as_str()).collect();
    let _ = write!(s, "| method | seeds | {} |\n|---|---:|{}\n", names.join(" | "), "---:|".repeat(names.len()));
    for m in summaries {
        let cells: Vec<String> = m.figures.iter().map(|f| f.overall.pct()).collect();
        let _ = writeln!(s, "| {} | {} | {} |", m.method, m.seeds.len(), cells.join(" | "));
    }
    let groups: Vec<String> = rank_groups(train_counts).into_iter().map(|(g, _)| g).collect();
    let head: Vec<String> = ["clean", "worst"]
        .iter()
        .flat_map(|k| std::iter::once(format!("{k} balanced")).chain(groups.iter().map(move |g| format!("{k} {g}"))))
        .collect();
    let _ = write!(s, "\n| method | {} |\n|---|{}\n", head.join(" | "), "---:|".repeat(head.len()));
    for m in summaries {
        let mut cells = Vec::new();
        for f in [m.figures.first(), m.figures.last()].into_iter().flatten() {
            cells.push(f.balanced.pct());
            cells.extend(f.groups.iter().map(|(_, v)| v.pct()));
        }
        let _ = writeln!(s, "| {} | {} |", m.method, cells.join(" | "));
    }
    let cls: Vec<String> = class_names.iter().zip(train_counts).map(|(n, c)| format!("{n} ({c})")).collect();
    let _ = write!(
        s,
        "\nWorst-case recall per class (training images in brackets):\n\n| method | {} |\n|---|{}\n",
        cls.join(" | "),
        "---:|".repeat(cls.len())
    );
    for m in summaries {
        if let Some(w) = m.figures.last() {
            let cells: Vec<String> = w.per_class.iter().map(|v| v.pct()).collect();
            let _ = writeln!(s, "| {} | {} |", m.method, cells.join(" | "));
        }
    }
    s
}

fn plot_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Invalid { what: "study plot".into(), reason: e.to_string() }
}

/// Per-class worst-case accuracy (mean over seeds, with ±sd bars) against the class's
/// training count on a log axis, one line per method. SVG text.
pub fn per_class_vs_count_svg(title: &str, summaries: &[MethodSummary], train_counts: &[usize]) -> Result<String> {
    let mut svg = String::new();
    {
        let full = SVGBackend::with_string(&mut svg, (1120, 520)).into_drawing_area();
        full.fill(&WHITE).map_err(plot_err)?;
        // The legend gets its own column: the lines cover the whole plot area.
        let (root, legend) = full.split_horizontally(860);
        let lo = train_counts.iter().copied().min().unwrap_or(1).max(1) as f64;
        let hi = train_counts.iter().copied().max().unwrap_or(1).max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d((lo / 1.3..hi * 1.3).log_scale(), 0f64..100f64)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_desc("training images of the class (log scale)")
            .y_desc("worst-case robust accuracy (%)")
            .x_labels(12)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .draw()
            .map_err(plot_err)?;
        for (i, m) in summaries.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let y = 40 + 24 * i as i32;
            legend.draw(&PathElement::new([(8, y), (30, y)], color.stroke_width(3))).map_err(plot_err)?;
            legend.draw(&Text::new(m.method.clone(), (36, y - 7), ("sans-serif", 14))).map_err(plot_err)?;
            let Some(w) = m.figures.last() else { continue };
            let mut pts: Vec<(f64, f64, f64)> = train_counts
                .iter()
                .zip(&w.per_class)
                .filter(|(_, v)| !v.mean.is_nan())
                .map(|(&n, v)| (n.max(1) as f64, 100.0 * v.mean, if v.sd.is_nan() { 0.0 } else { 100.0 * v.sd }))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), color.stroke_width(2)))
                .map_err(plot_err)?;
            chart
                .draw_series(pts.iter().map(|&(x, y, sd)| {
                    PathElement::new([(x, (y - sd).max(0.0)), (x, (y + sd).min(100.0))], color.stroke_width(1))
                }))
                .map_err(plot_err)?;
            chart.draw_series(pts.iter().map(|&(x, y, _)| Circle::new((x, y), 3, color.filled()))).map_err(plot_err)?;
        }
        full.present().map_err(plot_err)?;
    }
    Ok(svg)
}

/// Mean over seeds of each method's training curves: training loss (left) and the
/// periodic test PGD accuracy, or the adversarial batch accuracy where the runs have
/// no quick evaluations (right). SVG text.
pub fn curves_svg(title: &str, runs: &[StudyRun]) -> Result<String> {
    let mean_curve = |label: &str, curves: Vec<&Curve>| {
        let mut by_x: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for c in curves {
            for &(x, y) in &c.points {
                by_x.entry((x * 1000.0).round() as i64).or_default().push(y);
            }
        }
        Curve {
            label: label.to_string(),
            points: by_x
                .into_iter()
                .map(|(x, ys)| (x as f64 / 1000.0, ys.iter().sum::<f64>() / ys.len() as f64))
                .collect(),
        }
    };
    let (mut loss, mut acc) = (Vec::new(), Vec::new());
    for m in methods(runs) {
        let parsed: Vec<(Vec<Curve>, Vec<Curve>)> = runs
            .iter()
            .filter(|r| r.method == m)
            .filter_map(|r| r.metrics.as_deref().map(curves_from_metrics))
            .collect();
        if parsed.is_empty() {
            continue;
        }
        loss.push(mean_curve(m, parsed.iter().flat_map(|(l, _)| l.iter()).collect()));
        let pick = |label: &str| -> Vec<&Curve> {
            parsed.iter().flat_map(|(_, a)| a.iter().filter(|c| c.label == label)).collect()
        };
        let test = pick("PGD (test)");
        acc.push(mean_curve(m, if test.is_empty() { pick("adversarial (train batches)") } else { test }));
    }
    crate::plot::two_panels_svg(
        &format!("{title}: training loss"),
        "loss",
        &loss,
        &format!("{title}: test PGD accuracy"),
        "accuracy (%)",
        &acc,
    )
}
