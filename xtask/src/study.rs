//! `cargo xtask study PLAN.toml`: a study is presets x seeds plus the evaluations
//! every run gets. Each (preset, seed) run is a task: it trains into
//! `OUT/<preset>/seed-<seed>/` and evaluates into `eval-<name>/` beside it. A task is
//! idempotent: a finished training is reported, not retrained (the run folder's own
//! rule), an interrupted one resumes from its checkpoint, a finished evaluation is
//! skipped (its `study-eval.json` records the spec it ran), an interrupted one resumes
//! from its state file. By default the tasks run one after another here, then the
//! report; `--slurm` writes an array job (one task per array index) and a merge job
//! that runs after it (`--dependency=afterok`), and `--submit` hands both to sbatch.
//!
//! `cargo xtask report PLAN.toml` aggregates whatever is evaluated so far into
//! `OUT/report/`: per evaluation, mean ± sd over seeds per method, head / middle /
//! tail, per class (`study-<eval>.md`, `study-<eval>.json`), the plots, and the wall
//! times (`timings.md`, kept apart so that the accuracy files of two executions of the
//! same study compare equal byte for byte).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser};
use robal::train::{train, RunOptions};
use robal::{RunDir, RunState, TrainConfig};
use robal_eval::study::{self, StudyRun};
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct StudyArgs {
    /// The study plan (TOML): out, presets, seeds, set, [[eval]], [slurm].
    plan: PathBuf,
    /// Run only task K (0-based: seed index x number of presets + preset index), as one
    /// Slurm array task does.
    #[arg(long, value_name = "K")]
    task: Option<usize>,
    /// Write the Slurm array job and its merge job into OUT/slurm/ and print how to submit them.
    #[arg(long)]
    slurm: bool,
    /// With --slurm: submit both jobs with sbatch.
    #[arg(long, requires = "slurm")]
    submit: bool,
    /// With --submit: wait until the merge job has ended (sbatch --wait) and exit with its status.
    #[arg(long, requires = "submit")]
    wait: bool,
    /// Print each task and what its folder holds; run nothing.
    #[arg(long, conflicts_with_all = ["task", "slurm"])]
    status: bool,
}

/// A study plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Folder of the study's runs and report (relative to the workspace root).
    pub out: PathBuf,
    /// Presets (names in configs/).
    pub presets: Vec<String>,
    /// Training seeds (`train.seed`); each preset runs once per seed.
    pub seeds: Vec<u64>,
    /// Overrides applied to every run (`train.epochs=2`, ...), before the seed.
    #[serde(default)]
    pub set: Vec<String>,
    /// The evaluations of every run.
    #[serde(default, rename = "eval")]
    pub evals: Vec<EvalPlan>,
    /// Settings of the Slurm jobs.
    #[serde(default)]
    pub slurm: SlurmPlan,
}

/// One evaluation of every run (`cargo xtask eval` with these flags).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalPlan {
    /// Name: the output folder is `eval-<name>` in the run folder.
    pub name: String,
    /// `--attacks`, e.g. `clean,pgd` or `clean,pgd,aa-paper`.
    pub attacks: String,
    /// `--limit`: test images, evenly spaced (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Run the audit's sweeps (off: `--no-audit`).
    #[serde(default)]
    pub audit: bool,
    /// `--batch`.
    #[serde(default = "batch")]
    pub batch: usize,
}

fn batch() -> usize {
    128
}

/// Resources of each Slurm task.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmPlan {
    /// `--partition` (none: the cluster's default).
    #[serde(default)]
    pub partition: Option<String>,
    /// `--cpus-per-task` (also the task's rayon threads).
    #[serde(default = "cpus")]
    pub cpus: usize,
    /// `--time` of each array task.
    #[serde(default = "time")]
    pub time: String,
    /// `--mem` of each task.
    #[serde(default = "mem")]
    pub mem: String,
}

impl Default for SlurmPlan {
    fn default() -> Self {
        Self { partition: None, cpus: cpus(), time: time(), mem: mem() }
    }
}

fn cpus() -> usize {
    2
}
fn time() -> String {
    "04:00:00".into()
}
fn mem() -> String {
    "8G".into()
}

/// One (preset, seed) run of a plan.
pub struct Task {
    /// Index in the plan (preset-major).
    pub index: usize,
    /// Preset name.
    pub preset: String,
    /// Training seed.
    pub seed: u64,
    /// Run folder.
    pub dir: PathBuf,
}

impl Plan {
    /// Read and check a plan file.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading the study plan {}", path.display()))?;
        let de = toml::Deserializer::parse(&text).with_context(|| format!("study plan {}", path.display()))?;
        let plan: Plan = serde_path_to_error::deserialize(de)
            .map_err(|e| anyhow::anyhow!("study plan {}: {}: {}", path.display(), e.path(), e.inner().message()))?;
        plan.check().with_context(|| format!("study plan {}", path.display()))?;
        Ok(plan)
    }

    fn check(&self) -> Result<()> {
        ensure!(!self.presets.is_empty(), "presets: the list is empty");
        ensure!(!self.seeds.is_empty(), "seeds: the list is empty");
        for (i, p) in self.presets.iter().enumerate() {
            crate::workspace::preset(p).with_context(|| format!("presets[{i}]"))?;
            ensure!(!self.presets[..i].contains(p), "presets: {p:?} is listed twice");
        }
        for (i, s) in self.seeds.iter().enumerate() {
            ensure!(!self.seeds[..i].contains(s), "seeds: {s} is listed twice");
        }
        for (i, e) in self.evals.iter().enumerate() {
            ensure!(
                !e.name.is_empty() && e.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "eval[{i}].name {:?}: expected letters, digits, - or _",
                e.name
            );
            ensure!(!self.evals[..i].iter().any(|o| o.name == e.name), "eval[{i}].name {:?} is used twice", e.name);
            robal_eval::AttackSpec::parse_list(&e.attacks).with_context(|| format!("eval[{i}].attacks"))?;
            ensure!(e.batch > 0, "eval[{i}].batch: expected at least 1");
        }
        ensure!(self.slurm.cpus > 0, "slurm.cpus: expected at least 1");
        // They are written into the job scripts' #SBATCH lines.
        let slurm = [
            ("time", Some(&self.slurm.time)),
            ("mem", Some(&self.slurm.mem)),
            ("partition", self.slurm.partition.as_ref()),
        ];
        for (name, value) in slurm {
            if let Some(v) = value {
                ensure!(
                    !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '\'' && c != '"'),
                    "slurm.{name} {v:?}: expected one word (e.g. time = \"04:00:00\", mem = \"8G\")"
                );
            }
        }
        Ok(())
    }

    /// The study's folder.
    pub fn out(&self) -> PathBuf {
        if self.out.is_absolute() {
            self.out.clone()
        } else {
            crate::workspace::root().join(&self.out)
        }
    }

    /// Every task, seed-major (every preset's first seed, then every preset's second...),
    /// so that a study stopped part-way covers all its presets.
    pub fn tasks(&self) -> Vec<Task> {
        let out = self.out();
        self.seeds
            .iter()
            .flat_map(|&s| self.presets.iter().map(move |p| (p.clone(), s)))
            .enumerate()
            .map(|(index, (preset, seed))| Task {
                index,
                dir: out.join(&preset).join(format!("seed-{seed}")),
                preset,
                seed,
            })
            .collect()
    }

    /// The training config of a task: its preset, the plan's overrides, its seed.
    fn config(&self, task: &Task) -> Result<TrainConfig> {
        let mut overrides = self.set.clone();
        overrides.push(format!("train.seed={}", task.seed));
        Ok(TrainConfig::load(&crate::workspace::preset(&task.preset)?, &overrides)?)
    }
}

/// Parses `cargo xtask eval` flags, so a study runs exactly what that command runs.
#[derive(Parser)]
struct EvalCommand {
    #[command(flatten)]
    args: crate::eval::EvalArgs,
}

const EVAL_MARKER: &str = "study-eval.json";

/// Written by the merge job when it ends well (OUT/slurm/merged).
const MERGED_MARKER: &str = "merged";

/// The spec a finished evaluation of `e` records beside its report.
fn marker_text(e: &EvalPlan) -> Result<String> {
    Ok(serde_json::to_string_pretty(e)?)
}

/// Train and evaluate one task (idempotent; see the module docs).
fn run_task(plan: &Plan, task: &Task) -> Result<()> {
    let cfg = plan.config(task)?;
    let started = RunDir::new(&task.dir).state() != RunState::Empty;
    println!(
        "task {}: {} seed {} -> {} ({})",
        task.index,
        task.preset,
        task.seed,
        task.dir.display(),
        if started { "continuing" } else { "starting" }
    );
    let opts =
        RunOptions { run_dir: task.dir.clone(), resume: started, progress: true, stop_after: None, overwrite: false };
    let summary = train(&cfg, &opts, &candle_core::Device::Cpu)
        .with_context(|| format!("task {} ({} seed {})", task.index, task.preset, task.seed))?;
    if !summary.finished_before {
        println!("task {}: trained {} epochs at {:.0} img/s", task.index, summary.epochs_run, summary.img_per_s);
    }
    for e in &plan.evals {
        let out = task.dir.join(format!("eval-{}", e.name));
        let marker = out.join(EVAL_MARKER);
        let spec = marker_text(e)?;
        let recorded = std::fs::read_to_string(&marker).ok();
        if recorded.as_deref() == Some(spec.as_str()) && out.join(robal_eval::REPORT_FILE).is_file() {
            println!("task {}: evaluation {} done already", task.index, e.name);
            continue;
        }
        let mut argv: Vec<String> =
            ["eval", &task.dir.display().to_string(), "--attacks", &e.attacks].iter().map(|s| s.to_string()).collect();
        argv.extend(["--limit".into(), e.limit.to_string(), "--batch".into(), e.batch.to_string()]);
        argv.extend(["--out".into(), out.display().to_string(), "--resume".into()]);
        if !e.audit {
            argv.push("--no-audit".into());
        }
        if recorded.is_some() {
            // The plan's evaluation changed since this report was made: redo it (the old
            // report is moved aside, not deleted).
            argv.push("--overwrite".into());
        }
        let cmd = EvalCommand::try_parse_from(&argv).with_context(|| format!("eval[{}] flags {argv:?}", e.name))?;
        crate::eval::run(cmd.args).with_context(|| format!("task {}: evaluation {}", task.index, e.name))?;
        robal_data::write_atomic(&marker, spec.as_bytes())?;
    }
    Ok(())
}

fn status(plan: &Plan) {
    for t in plan.tasks() {
        let train = match RunDir::new(&t.dir).state() {
            RunState::Empty => "not started".to_string(),
            RunState::Unfinished { epochs_done } => format!("{epochs_done} epochs checkpointed"),
            RunState::Finished => "trained".to_string(),
        };
        let evals: Vec<String> = plan
            .evals
            .iter()
            .map(|e| {
                let done = t.dir.join(format!("eval-{}", e.name)).join(EVAL_MARKER).is_file();
                format!("{} {}", e.name, if done { "done" } else { "-" })
            })
            .collect();
        println!("task {:>3}: {:<32} seed {:<3} {train}; {}", t.index, t.preset, t.seed, evals.join(", "));
    }
}

pub fn run(a: StudyArgs) -> Result<()> {
    let plan_path = crate::workspace::resolve(&a.plan);
    let plan = Plan::load(&plan_path)?;
    let tasks = plan.tasks();
    if a.status {
        status(&plan);
        return Ok(());
    }
    if a.slurm {
        return slurm(&plan, &plan_path, a.submit, a.wait);
    }
    if let Some(k) = a.task {
        let task = tasks.get(k).with_context(|| format!("--task {k}: the plan has tasks 0..{}", tasks.len()))?;
        return run_task(&plan, task);
    }
    let n = tasks.len();
    for t in &tasks {
        println!("\n== study task {} of {n}", t.index + 1);
        run_task(&plan, t)?;
    }
    report(&plan)
}

/// Aggregate what is evaluated so far into OUT/report/ and print the tables.
pub fn report(plan: &Plan) -> Result<()> {
    let out = plan.out().join("report");
    let tasks = plan.tasks();
    let mut timings = String::from("| preset | seed | training (min) | ");
    timings += &plan.evals.iter().map(|e| format!("eval {} (min)", e.name)).collect::<Vec<_>>().join(" | ");
    timings += &format!(" |\n|---|---:|---:|{}\n", "---:|".repeat(plan.evals.len()));
    let mut rows = vec![String::new(); tasks.len()];
    // Each run's metrics.jsonl, read once: for its training time and for the curves.
    let metrics: Vec<Option<String>> =
        tasks.iter().map(|t| std::fs::read_to_string(RunDir::new(&t.dir).metrics()).ok()).collect();
    for t in &tasks {
        // Epoch lines carry `seconds`; a run not started has none, a running one fewer
        // than its config's epochs.
        let epochs: Vec<f64> = metrics[t.index]
            .iter()
            .flat_map(|m| robal::metrics::MetricsRecord::parse_all(m))
            .filter_map(|r| match r {
                robal::metrics::MetricsRecord::Epoch(e) => Some(e.seconds),
                _ => None,
            })
            .collect();
        let planned = plan.config(t)?.train.epochs;
        let training = match epochs.len() {
            0 => "-".to_string(),
            n if n < planned => format!("{:.1} ({n} of {planned} epochs)", epochs.iter().sum::<f64>() / 60.0),
            _ => format!("{:.1}", epochs.iter().sum::<f64>() / 60.0),
        };
        rows[t.index] = format!("| {} | {} | {training} |", t.preset, t.seed);
    }
    let mut written = Vec::new();
    for e in &plan.evals {
        let mut runs = Vec::new();
        let mut missing = Vec::new();
        for t in &tasks {
            let dir = t.dir.join(format!("eval-{}", e.name));
            if !dir.join(EVAL_MARKER).is_file() {
                missing.push(format!("{} seed {}", t.preset, t.seed));
                rows[t.index] += " - |";
                continue;
            }
            let report = robal_eval::Report::load(&dir.join(robal_eval::REPORT_FILE))?;
            let secs: f64 = report.attacks.iter().map(|a| a.seconds).sum();
            rows[t.index] += &format!(" {:.1} |", secs / 60.0);
            runs.push(StudyRun { method: t.preset.clone(), seed: t.seed, report, metrics: metrics[t.index].clone() });
        }
        if runs.is_empty() {
            println!("evaluation {}: no run evaluated yet", e.name);
            continue;
        }
        let summaries = study::summarize(&runs)?;
        let first = &runs[0].report;
        let mut md = format!(
            "# Study {}: evaluation `{}` ({} test images, attacks {}, eps {})\n\nMean ± sample sd over seeds, in percent. Head / middle / tail: classes ranked by training count, 30% / 40% / 30%.\n\n",
            plan.out.display(),
            e.name,
            first.images,
            e.attacks,
            first.settings.eps
        );
        if !missing.is_empty() {
            md += &format!(
                "**Incomplete**: {} of {} runs not evaluated yet: {}.\n\n",
                missing.len(),
                tasks.len(),
                missing.join(", ")
            );
        }
        md += &study::markdown(&summaries, &first.class_names, &first.train_counts);
        println!("\n{md}");
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let stem = format!("study-{}", e.name);
        robal_data::write_atomic(&out.join(format!("{stem}.md")), md.as_bytes())?;
        robal_data::write_atomic(
            &out.join(format!("{stem}.json")),
            serde_json::to_string_pretty(&summaries)?.as_bytes(),
        )?;
        let svg = study::per_class_vs_count_svg(
            &format!("Worst-case accuracy per class ({}, {} images)", e.name, first.images),
            &summaries,
            &first.train_counts,
        )?;
        robal_eval::plot::write_svg_png(&out, &format!("per-class-{}", e.name), &svg)?;
        written.extend([format!("{stem}.md"), format!("{stem}.json"), format!("per-class-{}.svg/png", e.name)]);
        if e.name == plan.evals[0].name {
            robal_eval::plot::write_svg_png(&out, "curves", &study::curves_svg("Study", &runs)?)?;
            written.push("curves.svg/png".into());
        }
    }
    timings += &rows.join("\n");
    timings += "\n";
    if !plan.evals.is_empty() {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        robal_data::write_atomic(&out.join("timings.md"), timings.as_bytes())?;
        written.push("timings.md".into());
    }
    println!("{timings}\nwrote {} in {}", written.join(", "), out.display());
    Ok(())
}

/// The array job and the merge job of a plan, as sbatch scripts.
fn slurm_scripts(plan: &Plan, plan_path: &Path) -> Result<(String, String)> {
    let exe = std::env::current_exe().context("locating the xtask binary for the job scripts")?;
    let root = crate::workspace::root();
    let logs = plan.out().join("slurm");
    let n = plan.tasks().len();
    let partition = plan.slurm.partition.as_ref().map(|p| format!("#SBATCH --partition={p}\n")).unwrap_or_default();
    let q = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let head = |name: &str, log: &str, time: &str| {
        format!(
            "#!/bin/bash\n#SBATCH --job-name={name}\n#SBATCH --output={}/{log}\n#SBATCH --cpus-per-task={}\n#SBATCH --mem={}\n#SBATCH --time={time}\n{partition}",
            logs.display(),
            plan.slurm.cpus,
            plan.slurm.mem,
        )
    };
    let array = format!(
        "{}#SBATCH --array=0-{}\n# One (preset, seed) run per array index; idempotent, so a requeued or resubmitted task\n# resumes its run instead of repeating it.\nset -euo pipefail\ncd {}\nexport RAYON_NUM_THREADS=\"${{SLURM_CPUS_PER_TASK:-{}}}\"\nexec {} study {} --task \"$SLURM_ARRAY_TASK_ID\"\n",
        head("robal-study", "task-%a.log", &plan.slurm.time),
        n - 1,
        q(&root),
        plan.slurm.cpus,
        q(&exe),
        q(plan_path)
    );
    let merge = format!(
        "{}# Runs after every array task succeeded (--dependency=afterok): aggregates the runs, then\n# leaves a marker (Slurm cancels this job when a task failed, and `sbatch --wait` still exits 0).\nset -euo pipefail\ncd {}\n{} report {}\ntouch {}\n",
        head("robal-study-merge", "merge.log", "00:30:00"),
        q(&root),
        q(&exe),
        q(plan_path),
        q(&logs.join(MERGED_MARKER))
    );
    Ok((array, merge))
}

fn sbatch(args: &[&str]) -> Result<String> {
    let out = Command::new("sbatch")
        .args(args)
        .output()
        .context("running sbatch (is Slurm's client installed and SLURM_CONF set?)")?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

fn slurm(plan: &Plan, plan_path: &Path, submit: bool, wait: bool) -> Result<()> {
    let dir = plan.out().join("slurm");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (array, merge) = slurm_scripts(plan, plan_path)?;
    let (array_path, merge_path) = (dir.join("array.sbatch"), dir.join("merge.sbatch"));
    robal_data::write_atomic(&array_path, array.as_bytes())?;
    robal_data::write_atomic(&merge_path, merge.as_bytes())?;
    let (a, m) = (array_path.display().to_string(), merge_path.display().to_string());
    if !submit {
        println!("wrote {a} ({} tasks) and {m}; submit them with:\n", plan.tasks().len());
        println!("  array=$(sbatch --parsable {a} | cut -d';' -f1)");
        println!("  sbatch --dependency=afterok:$array --kill-on-invalid-dep=yes {m}");
        return Ok(());
    }
    let marker = dir.join(MERGED_MARKER);
    if marker.exists() {
        std::fs::remove_file(&marker).with_context(|| format!("removing the old {}", marker.display()))?;
    }
    // The merge job goes in right after the array: Slurm forgets finished jobs (MinJobAge),
    // and an afterok on a forgotten job counts as satisfied.
    let id = sbatch(&["--parsable", &a])?;
    let id = id.split(';').next().unwrap_or_default().to_string();
    println!("submitted array job {id} ({} tasks)", plan.tasks().len());
    let dep = format!("--dependency=afterok:{id}");
    let mut args = vec!["--parsable", dep.as_str(), "--kill-on-invalid-dep=yes"];
    if wait {
        args.push("--wait");
    }
    args.push(&m);
    let merge_id = sbatch(&args).with_context(|| format!("the merge job after array job {id}"))?;
    if wait && !marker.exists() {
        bail!(
            "merge job {merge_id} did not run: an array task of job {id} failed, so Slurm cancelled it \
             (see {}/task-*.log); resubmit and the finished tasks are skipped",
            dir.display()
        );
    }
    println!("submitted merge job {merge_id} after {id}{}", if wait { "; it has ended successfully" } else { "" });
    Ok(())
}

#[cfg(test)]
#[path = "../../tests/support/fuzz.rs"]
mod fuzz_support;

/// Study plans read from damaged bytes (the repository's own plan with one byte
/// replaced, or cut) load or fail naming the plan, and never panic or hang; a loaded
/// plan's Slurm settings are single words (they go into `#SBATCH` lines).
#[cfg(test)]
mod fuzz_plans {
    use super::fuzz_support as fuzz;
    use proptest::prelude::*;

    const PLAN: &str = include_str!("../../studies/fashion-mnist-lt.toml");

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz::cases(64), ..ProptestConfig::default() })]

        #[test]
        fn damaged_plans_load_or_name_the_file(
            pos in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<bool>(),
        ) {
            fuzz::within(move || -> Result<(), TestCaseError> {
                let bytes = PLAN.as_bytes().to_vec();
                let bytes = fuzz::damaged(bytes, pos.index(PLAN.len()), byte, cut);
                let tmp = tempfile::tempdir().unwrap();
                let p = tmp.path().join("plan.toml");
                std::fs::write(&p, &bytes).unwrap();
                match super::Plan::load(&p) {
                    Ok(plan) => {
                        prop_assert!(!plan.tasks().is_empty());
                        for v in [&plan.slurm.time, &plan.slurm.mem] {
                            prop_assert!(!v.contains(char::is_whitespace), "{:?}", v);
                        }
                    }
                    Err(e) => prop_assert!(format!("{e:#}").contains("plan.toml"), "{:#}", e),
                }
                Ok(())
            })?;
        }
    }

    #[test]
    fn a_slurm_setting_that_is_not_one_word_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("plan.toml");
        std::fs::write(&p, PLAN.replace("time = \"02:00:00\"", "time = \"02:00:00\\n#SBATCH --exclusive\"")).unwrap();
        let e = format!("{:#}", super::Plan::load(&p).unwrap_err());
        assert!(e.contains("slurm.time") && e.contains("one word"), "{e}");
    }
}
