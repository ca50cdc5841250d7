//! `cargo xtask eval`: the full attack suite, per-class metrics and the robustness
//! audit for one checkpoint; `cargo xtask report`: several runs side by side.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use robal_data::Dataset;
use robal_eval::job::{describe_head, EvalOptions};
use robal_eval::{
    AttackSettings, AttackSpec, AuditConfig, DataSpec, Evaluation, ModelFlags, Report, Shard, StateFile, TestProfile,
    Verdict,
};

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder, a checkpoint (robal-rs .safetensors, PyTorch .pt/.pth with --arch), or hf://owner/repo/file.
    checkpoint: String,
    /// Test data: mnist-lt, cifar10:DIR, cifar100:DIR, cifar10-bin:FILE, cifar100-bin:FILE (default: the checkpoint's own).
    #[arg(long, default_value = "")]
    data: String,
    /// Attacks: default (clean,fgsm,pgd,mim,cw,aa-paper), aa (full standard AutoAttack), or a comma list
    /// of clean, fgsm, pgd, mim, cw, aa-paper, aa, apgd-ce, apgd-dlr, apgd-t, fab-t, square.
    #[arg(long, default_value = "default")]
    attacks: String,
    /// L-inf radius (default: the checkpoint's training config `eval.eps`, else 8/255).
    #[arg(long)]
    eps: Option<f64>,
    /// PGD/MIM/CW steps (default: the training config's `eval.steps`, else 20).
    #[arg(long)]
    steps: Option<usize>,
    /// PGD/MIM/CW step size (default: the training config's `eval.step_size`, else 2/255).
    #[arg(long)]
    step_size: Option<f64>,
    /// Random start of PGD/MIM/CW: uniform or off.
    #[arg(long, default_value = "uniform")]
    random_start: String,
    /// Seed of the attacks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Evaluate N test images, evenly spaced over the set (0 = all).
    #[arg(long, default_value_t = 0)]
    limit: usize,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Images used by the audit's sweeps.
    #[arg(long, default_value_t = 100)]
    audit_limit: usize,
    /// Accuracy gap (points) the audit flags.
    #[arg(long, default_value_t = 2.0)]
    audit_threshold: f64,
    /// Skip the audit's sweeps (the CE-vs-margin check still runs).
    #[arg(long)]
    no_audit: bool,
    /// Output folder (default: the run folder, else the checkpoint's folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Architecture of a PyTorch checkpoint, e.g. wrn-34-10.
    #[arg(long)]
    arch: Option<String>,
    /// Head: fc or cosine (PyTorch checkpoints), or posthoc (boundary adjustment by --tau-p).
    #[arg(long)]
    head: Option<String>,
    /// Cosine scale s.
    #[arg(long)]
    scale: Option<f64>,
    /// Cosine gamma.
    #[arg(long)]
    gamma: Option<f64>,
    /// Classes of a PyTorch checkpoint (read from its head's weight when it has one).
    #[arg(long)]
    num_classes: Option<usize>,
    /// Input channels of a PyTorch checkpoint (read from its first convolution; 3 if it has none).
    #[arg(long)]
    in_channels: Option<usize>,
    /// Post-hoc boundary adjustment z - tau_p log(prior).
    #[arg(long)]
    tau_p: Option<f64>,
    /// hf-hub cache folder (default $HF_HOME/hub).
    #[arg(long)]
    hf_cache: Option<PathBuf>,
    /// Never download: use the hf-hub cache only.
    #[arg(long)]
    offline: bool,
    /// Device: cpu, or cuda (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Test images: balanced (the split as it is) or lt (long-tailed like training, TAET's protocol).
    #[arg(long, default_value = "balanced")]
    test_profile: String,
    /// Continue an interrupted evaluation from the state file in the output folder.
    #[arg(long)]
    resume: bool,
    /// Save the per-example outcomes so far at most every SECS seconds (and after each attack).
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    state_every: f64,
    /// Evaluate part K of N of the test set (whole batches), writing shard-K-of-N.json for `cargo xtask merge`.
    #[arg(long, value_name = "K/N")]
    shard: Option<String>,
    /// Move a report the output folder already holds from another evaluation aside (into
    /// OUT/replaced-<time>/) instead of refusing.
    #[arg(long)]
    overwrite: bool,
}

/// What makes two evaluations the same: the model (its tensors' digest), the images,
/// the attacks and their settings, the audit. Saved as `eval_spec.json` beside the report.
fn spec_text(
    loaded: &robal_eval::LoadedModel,
    digest: &str,
    data_name: &str,
    images: usize,
    opts: &EvalOptions,
) -> Result<String> {
    // The model by what it computes (`digest`), not by path: a moved run folder is the
    // same evaluation.
    Ok(serde_json::to_string_pretty(&serde_json::json!({
        "model": digest,
        "head": describe_head(&loaded.model),
        "data": data_name,
        "images": images,
        "attacks": opts.attacks.iter().map(|a| a.token()).collect::<Vec<_>>(),
        "settings": opts.settings,
        "audit": opts.audit.map(|c| serde_json::json!({"threshold": c.threshold, "limit": c.limit})),
        "batch": opts.batch,
    }))?)
}

const SPEC_FILE: &str = "eval_spec.json";

/// The report files `write_outputs` leaves in a folder (moved aside together).
const REPORT_FILES: [&str; 8] = [
    robal_eval::REPORT_FILE,
    robal_eval::REPORT_MD_FILE,
    robal_eval::MODEL_INFO_FILE,
    "per_class.svg",
    "per_class.png",
    "curves.svg",
    "curves.png",
    SPEC_FILE,
];

pub fn run(a: EvalArgs) -> Result<()> {
    let device = crate::train::device(&a.device)?;
    let flags = ModelFlags {
        arch: a.arch.clone(),
        head: a.head.clone(),
        scale: a.scale,
        gamma: a.gamma,
        num_classes: a.num_classes,
        in_channels: a.in_channels,
        tau_p: a.tau_p,
    };
    let checkpoint = if a.checkpoint.contains("://") {
        a.checkpoint.clone()
    } else {
        crate::workspace::resolve(std::path::Path::new(&a.checkpoint)).display().to_string()
    };
    let mut loaded = robal_eval::load_model(&checkpoint, &flags, a.hf_cache.as_deref(), a.offline, &device)
        .with_context(|| format!("loading checkpoint {}", a.checkpoint))?;
    if let Some(notice) = loaded.integrity_notice() {
        eprintln!("{notice}");
    }
    if let Some(tau) = a.tau_p {
        if loaded.model.class_counts().is_none() {
            let cfg = loaded.train_config.as_ref().context(
                "--tau-p needs the training counts per class: this checkpoint has none (evaluate a robal-rs checkpoint)",
            )?;
            let (train, _) = robal::train::load_data(cfg)?;
            loaded.model.set_class_counts(train.classes().train_counts().to_vec())?;
        }
        loaded.model.set_posthoc(Some(tau))?;
    }
    let spec = DataSpec::parse(&a.data)?;
    let profile = TestProfile::parse(&a.test_profile)?;
    let (test, data_name) = robal_eval::load_test_set_with(&spec, &loaded, profile, a.limit)?;
    let shard = a.shard.as_deref().map(Shard::parse).transpose()?.unwrap_or_default();
    anyhow::ensure!(
        a.state_every.is_finite() && a.state_every >= 0.0,
        "--state-every {}: expected seconds >= 0",
        a.state_every
    );
    let out = a
        .out
        .clone()
        .or_else(|| loaded.run_dir.clone())
        .or_else(|| loaded.path.parent().map(|p| p.to_path_buf()))
        .unwrap_or_else(|| PathBuf::from("."));
    let random_start = match a.random_start.as_str() {
        "uniform" => true,
        "off" => false,
        other => anyhow::bail!("--random-start {other:?}: expected uniform or off"),
    };
    // Threat model: flags, else the one the model was trained and evaluated for, else SPEC's.
    let mut defaults = AttackSettings::default();
    if let Some(cfg) = &loaded.train_config {
        (defaults.eps, defaults.step_size, defaults.steps) = (cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps);
    }
    let settings = AttackSettings {
        eps: a.eps.unwrap_or(defaults.eps),
        steps: a.steps.unwrap_or(defaults.steps),
        step_size: a.step_size.unwrap_or(defaults.step_size),
        random_start,
        seed: a.seed,
        ..defaults
    };
    settings.validate()?;
    anyhow::ensure!(a.batch > 0, "--batch 0: expected at least 1");
    let opts = EvalOptions {
        attacks: AttackSpec::parse_list(&a.attacks)?,
        settings,
        audit: (!a.no_audit).then_some(AuditConfig {
            threshold: a.audit_threshold,
            limit: a.audit_limit,
            batch: a.batch,
            ..Default::default()
        }),
        batch: a.batch,
        progress: true,
        shard,
        state: Some(StateFile { dir: out.clone(), every: Duration::from_secs_f64(a.state_every), resume: a.resume }),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating the output folder {}", out.display()))?;
    // One process at a time writes into a folder (a run folder or any --out).
    let _lock = robal::RunDir::new(&out).lock("evaluation")?;
    println!(
        "evaluating {} ({}) on {}: {}",
        loaded.path.display(),
        describe_head(&loaded.model),
        data_name,
        opts.attacks.iter().map(|s| s.token()).collect::<Vec<_>>().join(", ")
    );
    let digest = robal_models::checkpoint::model_digest(&loaded.model)?;
    let spec = spec_text(&loaded, &digest, &data_name, test.len(), &opts)?;
    if shard.is_whole() && out.join(robal_eval::REPORT_FILE).is_file() {
        let same = std::fs::read_to_string(out.join(SPEC_FILE)).is_ok_and(|s| s == spec);
        if same && !a.overwrite {
            let report = Report::load(&out.join(robal_eval::REPORT_FILE))?;
            println!(
                "{} already holds this evaluation (same model, images, attacks and settings): its report follows \
                 (nothing recomputed; --overwrite redoes it)\n\n{}",
                out.display(),
                report.summary_table()
            );
            return Ok(());
        }
        anyhow::ensure!(
            a.overwrite,
            "{} already holds the report of another evaluation (another model, images, attacks or settings; \
             its spec is {}).\nChoose one: --out another folder, or --overwrite to move that report aside \
             (into {}/replaced-<time>/)",
            out.display(),
            out.join(SPEC_FILE).display(),
            out.display()
        );
        let aside = robal::RunDir::new(&out).move_aside_where(|name| REPORT_FILES.contains(&name))?;
        println!("moved the previous report aside into {}", aside.display());
    }
    let part = robal_eval::evaluate_part_with_digest(&loaded.model, &digest, &test, &a.checkpoint, &data_name, &opts)?;
    if !shard.is_whole() {
        let path = out.join(shard.file_name());
        part.save(&path)?;
        println!(
            "shard {}/{}: {} of {} images; wrote {} (combine the shards with `cargo xtask merge {}`)",
            shard.index,
            shard.count,
            part.labels.len(),
            part.total_images,
            path.display(),
            out.display()
        );
        return Ok(());
    }
    let metrics = loaded.run_dir.as_ref().map(|d| d.join(robal::run_dir::METRICS_FILE));
    // The spec before the report: report.json, written last, is what marks the folder as
    // holding this evaluation; a kill in between leaves no report.json, so it is redone.
    robal_data::write_atomic(&out.join(SPEC_FILE), spec.as_bytes())?;
    print_and_write(&part.report(), &out, metrics.as_deref(), a.no_audit)?;
    Ok(())
}

fn print_and_write(report: &Report, out: &Path, metrics: Option<&Path>, no_audit: bool) -> Result<()> {
    let written = robal_eval::write_outputs(report, out, metrics)?;
    println!("\n{}", report.summary_table());
    match (report.audit.flags.is_empty(), no_audit) {
        (true, true) => println!("audit: sweeps skipped (--no-audit); the CE-vs-margin check did not fire"),
        (true, false) => println!("audit: no check fired ({} images in the sweeps)", report.audit.images),
        _ => {}
    }
    for f in &report.audit.flags {
        let level = if f.severity == Verdict::Warning { "WARNING" } else { "info" };
        println!("audit {level} [{}]: {}", f.check, f.message);
    }
    println!("\nwrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}

#[derive(Args)]
pub struct MergeArgs {
    /// The folder holding shard-K-of-N.json files (the shards' --out); the report is written there.
    dir: PathBuf,
    /// A run's metrics.jsonl, for the training curves (default: DIR/metrics.jsonl if it exists).
    #[arg(long)]
    metrics: Option<PathBuf>,
}

pub fn merge(mut a: MergeArgs) -> Result<()> {
    a.dir = crate::workspace::resolve(&a.dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&a.dir)
        .with_context(|| format!("reading the shard folder {}", a.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("shard-") && name.ends_with(".json")
        })
        .collect();
    files.sort();
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no shard-K-of-N.json files (run `cargo xtask eval ... --shard K/N --out {}` first)",
        a.dir.display(),
        a.dir.display()
    );
    let parts = files.iter().map(|f| Evaluation::load(f)).collect::<robal_eval::Result<Vec<_>>>()?;
    let whole = robal_eval::merge(parts).with_context(|| format!("merging the shards in {}", a.dir.display()))?;
    println!("merged {} shards: {} images", files.len(), whole.labels.len());
    let metrics = a.metrics.or_else(|| Some(a.dir.join(robal::run_dir::METRICS_FILE)));
    print_and_write(&whole.report(), &a.dir, metrics.as_deref(), whole.audit_config.is_none())
}

#[derive(Args)]
pub struct ReportArgs {
    /// Run folders (or report.json files) evaluated by `cargo xtask eval`; or one study plan
    /// (PLAN.toml), whose runs are aggregated into OUT/report/.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder for comparison.md and the plots.
    #[arg(long, default_value = "runs/comparison")]
    out: PathBuf,
}

pub fn report(a: ReportArgs) -> Result<()> {
    if let [plan] = a.runs.as_slice() {
        if plan.extension().is_some_and(|e| e == "toml") {
            let plan = crate::study::Plan::load(&crate::workspace::resolve(plan))?;
            return crate::study::report(&plan);
        }
    }
    let paths: Vec<PathBuf> = a.runs.iter().map(|p| crate::workspace::resolve(p)).collect();
    let runs = robal_eval::compare::load_runs(&paths)?;
    println!("{}", robal_eval::compare::tables(&runs));
    let written = robal_eval::compare::write_comparison(&runs, &a.out)?;
    println!("wrote {}", written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}
