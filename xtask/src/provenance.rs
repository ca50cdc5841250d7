//! The provenance tables of the paper presets (`configs/provenance/*.tsv`, format in its
//! README): one line per (preset, field) with the value and the upstream line it comes
//! from. [`check`] holds every line against the resolved preset, so that an edit that
//! changes an experiment without changing its trace fails, and requires every field a
//! traced preset sets to be traced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use robal::config::toml_leaves;
use robal::TrainConfig;

/// Keys a preset sets that are not part of the experiment (where files are, how often
/// to checkpoint or print progress, the study's seed): not traced.
pub const UNTRACED: [&str; 6] =
    ["data.dir", "train.seed", "train.checkpoint_every", "eval.every", "eval.quick_limit", "eval.limit"];

/// Prefixes of the paper presets, which must be traced in full.
pub const PAPER_PRESETS: [&str; 3] = ["cifar10-lt-", "cifar100-lt-", "tiny-imagenet-lt-"];

/// One traced field.
#[derive(Clone, Debug)]
pub struct Row {
    /// `file:line` of the row in its table.
    pub at: String,
    /// Preset name.
    pub preset: String,
    /// Dotted path of the key in the preset file.
    pub field: String,
    /// The value, as TOML.
    pub value: toml::Value,
    /// Where it comes from.
    pub source: String,
    /// Disagreements, or why the preset differs from the code.
    pub note: String,
}

/// Every row of every table in `dir` (`*.tsv`), in file order.
pub fn load(dir: &Path) -> Result<Vec<Row>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the provenance tables in {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tsv"))
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", file.display(), i + 1);
            let cols: Vec<&str> = line.split('\t').collect();
            ensure!(
                (4..=5).contains(&cols.len()),
                "{at}: expected preset<TAB>field<TAB>value<TAB>source[<TAB>note], found {} columns",
                cols.len()
            );
            let value =
                parse_value(cols[2]).with_context(|| format!("{at}: value {:?} is not a TOML value", cols[2]))?;
            ensure!(!cols[3].trim().is_empty(), "{at}: the source is empty");
            rows.push(Row {
                at,
                preset: cols[0].trim().to_string(),
                field: cols[1].trim().to_string(),
                value,
                source: cols[3].trim().to_string(),
                note: cols.get(4).map(|s| s.trim().to_string()).unwrap_or_default(),
            });
        }
    }
    Ok(rows)
}

fn parse_value(text: &str) -> Result<toml::Value> {
    let table: toml::Table = format!("v = {}", text.trim()).parse()?;
    table.get("v").cloned().context("no value")
}

/// The value at a dotted path of a table.
fn lookup<'a>(table: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut parts = path.split('.');
    let mut v = table.get(parts.next()?)?;
    for p in parts {
        v = v.as_table()?.get(p)?;
    }
    Some(v)
}

/// TOML values equal as experiment settings: numbers by value (10 == 10.0, relative
/// 1e-12), arrays element by element, everything else exactly.
pub fn same(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::{Array, Float, Integer};
    match (a, b) {
        (Integer(x), Integer(y)) => x == y,
        (Integer(_) | Float(_), Integer(_) | Float(_)) => {
            let f = |v: &toml::Value| match v {
                Integer(i) => *i as f64,
                Float(f) => *f,
                _ => f64::NAN,
            };
            let (x, y) = (f(a), f(b));
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300)
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q)),
        _ => a == b,
    }
}

/// Check every row against the presets in `configs`; the problems found, one line each
/// (empty: all traced and all equal).
pub fn check(rows: &[Row], configs: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut by_preset: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by_preset.entry(&r.preset).or_default().push(r);
    }
    for (preset, rows) in &by_preset {
        let path = configs.join(format!("{preset}.toml"));
        if !path.is_file() {
            problems.push(format!("{}: preset {preset}: no file {}", rows[0].at, path.display()));
            continue;
        }
        let file: toml::Table = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .parse()
            .with_context(|| format!("parsing {}", path.display()))?;
        let resolved = toml::Table::try_from(
            TrainConfig::load(&path, &[]).with_context(|| format!("preset {preset}: {}", path.display()))?,
        )?;
        let mut seen = BTreeSet::new();
        for r in rows {
            if !seen.insert(r.field.as_str()) {
                problems.push(format!("{}: {preset} {} is traced twice", r.at, r.field));
                continue;
            }
            match lookup(&resolved, &r.field) {
                None => problems.push(format!(
                    "{}: {preset}: field {} is not in the resolved preset (source {})",
                    r.at, r.field, r.source
                )),
                Some(v) if !same(v, &r.value) => problems.push(format!(
                    "{}: {preset}: {} = {v} in the preset, but the provenance table says {} (source {}){}",
                    r.at,
                    r.field,
                    r.value,
                    r.source,
                    if r.note.is_empty() { String::new() } else { format!("; note: {}", r.note) }
                )),
                Some(_) => {}
            }
        }
        for (key, _) in toml_leaves(&file) {
            if !UNTRACED.contains(&key.as_str()) && !seen.contains(key.as_str()) {
                problems.push(format!("{preset}: {key} is set in {} but has no provenance row", path.display()));
            }
        }
    }
    Ok(problems)
}

/// Paper presets in `configs` with no provenance row.
pub fn untraced_presets(rows: &[Row], configs: &Path) -> Result<Vec<String>> {
    let traced: BTreeSet<&str> = rows.iter().map(|r| r.preset.as_str()).collect();
    let mut out = Vec::new();
    for e in std::fs::read_dir(configs).with_context(|| format!("reading {}", configs.display()))?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(p) = name.strip_suffix(".toml") {
            if PAPER_PRESETS.iter().any(|pre| p.starts_with(pre)) && !traced.contains(p) {
                out.push(p.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `cargo xtask preset verify`: every table against the presets; an error listing every
/// problem if any.
pub fn verify(configs: &Path) -> Result<()> {
    let rows = load(&configs.join("provenance"))?;
    let mut problems = check(&rows, configs)?;
    for p in untraced_presets(&rows, configs)? {
        problems.push(format!("{p}: a paper preset with no provenance rows"));
    }
    let presets: BTreeSet<&str> = rows.iter().map(|r| r.preset.as_str()).collect();
    if !problems.is_empty() {
        bail!("{} provenance problem(s):\n{}", problems.len(), problems.join("\n"));
    }
    println!("{} rows trace {} presets; every value matches its preset", rows.len(), presets.len());
    Ok(())
}

/// The rows of one preset, by field.
pub fn rows_of(configs: &Path, preset: &str) -> Result<BTreeMap<String, Row>> {
    Ok(load(&configs.join("provenance"))?
        .into_iter()
        .filter(|r| r.preset == preset)
        .map(|r| (r.field.clone(), r))
        .collect())
}
