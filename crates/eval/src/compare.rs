//! Several evaluated runs side by side: the shape of the paper's Table 1 (overall
//! accuracy per attack) and Table 2 (shot groups, clean and worst case), and a
//! per-class comparison plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{file_err, Result};
use crate::plot::{per_class_svg, training_curves_svg, write_svg_png, ClassSeries};
use crate::report::{pct, AttackReport, Report, REPORT_FILE};
use robal::run_dir::METRICS_FILE;

/// A report and the name of its run.
pub struct NamedReport {
    /// Run name (the folder name).
    pub name: String,
    /// The run folder (or the report's folder).
    pub dir: PathBuf,
    /// The report.
    pub report: Report,
}

/// Load `report.json` from each run folder (or a `report.json` path given directly).
pub fn load_runs(runs: &[PathBuf]) -> Result<Vec<NamedReport>> {
    runs.iter()
        .map(|r| {
            let (dir, file) = if r.is_dir() {
                (r.clone(), r.join(REPORT_FILE))
            } else {
                (r.parent().map(Path::to_path_buf).unwrap_or_default(), r.clone())
            };
            if !file.is_file() {
                return Err(file_err(&file, "no report.json: run `cargo xtask eval` on this run first"));
            }
            let name =
                dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| r.display().to_string());
            Ok(NamedReport { name, dir, report: Report::load(&file)? })
        })
        .collect()
}

fn column_key(a: &AttackReport) -> String {
    a.name.clone()
}

/// Markdown tables: overall accuracy per attack and worst case (Table 1), then shot
/// groups and balanced accuracy, clean and worst case (Table 2).
pub fn tables(runs: &[NamedReport]) -> String {
    let mut cols: Vec<String> = Vec::new();
    for r in runs {
        for a in &r.report.attacks {
            if !cols.contains(&column_key(a)) {
                cols.push(column_key(a));
            }
        }
    }
    let mut s = format!("| run | {} | worst case |\n|---|{}---:|\n", cols.join(" | "), "---:|".repeat(cols.len()));
    for r in runs {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                r.report.attacks.iter().find(|a| &column_key(a) == c).map(|a| pct(a.accuracy)).unwrap_or("-".into())
            })
            .collect();
        let _ = writeln!(s, "| {} | {} | {} |", r.name, cells.join(" | "), pct(r.report.worst_case.accuracy));
    }
    let groups: Vec<String> =
        runs.first().map(|r| r.report.worst_case.groups.iter().map(|g| g.name.clone()).collect()).unwrap_or_default();
    let head: Vec<String> = ["clean", "worst"]
        .iter()
        .flat_map(|k| {
            groups
                .iter()
                .chain(std::iter::once(&"balanced".to_string()))
                .map(move |g| format!("{k} {g}"))
                .collect::<Vec<_>>()
        })
        .collect();
    let _ = write!(s, "\n| run | {} |\n|---|{}\n", head.join(" | "), "---:|".repeat(head.len()));
    for r in runs {
        let mut cells = Vec::new();
        for a in [r.report.attacks.first(), Some(&r.report.worst_case)].into_iter().flatten() {
            for g in &groups {
                cells.push(a.groups.iter().find(|x| &x.name == g).map(|x| pct(x.mean)).unwrap_or("-".into()));
            }
            cells.push(pct(a.balanced_accuracy));
        }
        let _ = writeln!(s, "| {} | {} |", r.name, cells.join(" | "));
    }
    s
}

/// Write `comparison.md`, `per_class_worst.svg/png` (worst-case recall per class of
/// every run) and `curves-<run>.svg/png` for runs with a `metrics.jsonl` into `out`.
pub fn write_comparison(runs: &[NamedReport], out: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).map_err(|e| file_err(out, e))?;
    let text = format!("# Comparison of {} runs\n\n{}", runs.len(), tables(runs));
    robal_data::write_atomic(&out.join("comparison.md"), text.as_bytes())?;
    let mut written = vec![out.join("comparison.md")];
    if let Some(first) = runs.first() {
        let same_classes: Vec<&NamedReport> =
            runs.iter().filter(|r| r.report.train_counts.len() == first.report.train_counts.len()).collect();
        let series: Vec<ClassSeries> = same_classes
            .iter()
            .map(|r| ClassSeries { label: &r.name, values: &r.report.worst_case.per_class })
            .collect();
        let svg = per_class_svg("Worst-case robust accuracy per class", &series, &first.report.train_counts)?;
        write_svg_png(out, "per_class_worst", &svg)?;
        written.extend([out.join("per_class_worst.svg"), out.join("per_class_worst.png")]);
    }
    for r in runs {
        let m = r.dir.join(METRICS_FILE);
        if m.is_file() {
            let text = std::fs::read_to_string(&m).map_err(|e| file_err(&m, e))?;
            let stem = format!("curves-{}", r.name);
            write_svg_png(out, &stem, &training_curves_svg(&r.name, &text)?)?;
            written.extend([out.join(format!("{stem}.svg")), out.join(format!("{stem}.png"))]);
        }
    }
    Ok(written)
}
