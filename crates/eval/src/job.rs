//! Evaluating a checkpoint end to end: load the model (robal-rs safetensors, a
//! reference PyTorch `state_dict` with architecture flags, or an `hf://` file),
//! pick the test set (by default the one the checkpoint was trained on), run the
//! suite and the audit, and write the report and plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;
use robal::evaluate::EvalModel;
use robal::train::TRAIN_CONFIG_KEY;
use robal::TrainConfig;
use robal_data::{cifar, Cifar, ClassInfo, Dataset, ImageSet, Loader, LoaderConfig, Split};
use robal_models::{checkpoint, Classifier, HeadConfig, ModelConfig};

use crate::audit::{audit, AuditConfig, AuditResult};
use crate::error::{file_err, EvalError, Result};
use crate::plot::{per_class_svg, training_curves_svg, write_svg_png, ClassSeries};
use crate::report::Report;
use crate::suite::{run_suite, AttackSettings, AttackSpec};

/// Architecture and head flags: required for a PyTorch checkpoint (which carries no
/// architecture), optional overrides for a robal-rs one.
#[derive(Clone, Debug, Default)]
pub struct ModelFlags {
    /// Backbone, e.g. `wrn-34-10` (marks the checkpoint as a foreign file to import).
    pub arch: Option<String>,
    /// `fc`, `cosine`, or `posthoc` (keep the head, adjust boundaries by `tau_p`).
    pub head: Option<String>,
    /// Cosine scale s.
    pub scale: Option<f64>,
    /// Cosine gamma.
    pub gamma: Option<f64>,
    /// Classes (foreign checkpoints).
    pub num_classes: Option<usize>,
    /// Input channels (foreign checkpoints; 3 by default).
    pub in_channels: Option<usize>,
    /// Post-hoc adjustment z - tau_p log pi.
    pub tau_p: Option<f64>,
}

/// A model ready for evaluation and what is known about its training.
pub struct LoadedModel {
    /// The classifier (evaluation head).
    pub model: Classifier,
    /// The training config, from the checkpoint's metadata or the run folder's `config.toml`.
    pub train_config: Option<TrainConfig>,
    /// The run folder, when the checkpoint sits in one (it has `config.toml`).
    pub run_dir: Option<PathBuf>,
    /// The local checkpoint file.
    pub path: PathBuf,
}

fn invalid(what: &str, reason: impl Into<String>) -> EvalError {
    EvalError::Invalid { what: what.into(), reason: reason.into() }
}

/// Load the model named by `spec` (a file, a run folder holding `model.safetensors`,
/// or `hf://owner/repo/file`), applying `flags`.
pub fn load_model(
    spec: &str,
    flags: &ModelFlags,
    hub_cache: Option<&Path>,
    offline: bool,
    device: &Device,
) -> Result<LoadedModel> {
    let mut path = crate::hub::resolve(spec, hub_cache, offline)?;
    if path.is_dir() {
        path = path.join("model.safetensors");
    }
    if !path.exists() {
        return Err(file_err(&path, "checkpoint not found (expected a file, a run folder, or hf://owner/repo/file)"));
    }
    let run_dir = path.parent().filter(|d| d.join("config.toml").is_file()).map(Path::to_path_buf);
    let (mut model, extra) = match &flags.arch {
        None => {
            let (m, info) = checkpoint::load(&path, device)?;
            (m, info.extra)
        }
        Some(arch) => (import_foreign(&path, arch, flags, device)?, Default::default()),
    };
    let train_config = match (extra.get(TRAIN_CONFIG_KEY), &run_dir) {
        (Some(text), _) => Some(TrainConfig::from_toml(text, &format!("{} metadata", path.display()), &[])?),
        (None, Some(dir)) => Some(TrainConfig::load(&dir.join("config.toml"), &[])?),
        (None, None) => None,
    };
    if flags.arch.is_none() {
        if let Some(head) = head_override(model.config().head, flags)? {
            model = robal::train::with_eval_head(&model, head, model.posthoc_tau())?;
        }
    }
    if flags.head.as_deref() == Some("posthoc") && flags.tau_p.is_none() {
        return Err(invalid("--head posthoc", "needs --tau-p (e.g. --tau-p 1.5)"));
    }
    Ok(LoadedModel { model, train_config, run_dir, path })
}

fn head_override(current: HeadConfig, flags: &ModelFlags) -> Result<Option<HeadConfig>> {
    let head = match (flags.head.as_deref(), current) {
        (None | Some("posthoc"), HeadConfig::Cosine { scale, gamma, bias }) => {
            HeadConfig::Cosine { scale: flags.scale.unwrap_or(scale), gamma: flags.gamma.unwrap_or(gamma), bias }
        }
        (None | Some("posthoc"), h) => {
            if flags.scale.is_some() || flags.gamma.is_some() {
                return Err(invalid(
                    "--scale/--gamma",
                    "apply to a cosine head only; this checkpoint's head is not cosine",
                ));
            }
            h
        }
        (Some(other), _) => {
            return Err(invalid(
                "--head",
                format!("{other:?}: a robal-rs checkpoint keeps its head; use --head posthoc --tau-p T or --scale S"),
            ))
        }
    };
    Ok((head != current).then_some(head))
}

fn import_foreign(path: &Path, arch: &str, flags: &ModelFlags, device: &Device) -> Result<Classifier> {
    let num_classes =
        flags.num_classes.ok_or_else(|| invalid("--num-classes", "a PyTorch checkpoint needs it (e.g. 10)"))?;
    let head = match flags.head.as_deref().unwrap_or("fc") {
        "fc" => HeadConfig::Fc,
        "cosine" => HeadConfig::Cosine {
            scale: flags.scale.unwrap_or(10.0),
            gamma: flags.gamma.unwrap_or(0.03125),
            bias: false,
        },
        other => return Err(invalid("--head", format!("{other:?}: expected fc or cosine for a PyTorch checkpoint"))),
    };
    let config = ModelConfig {
        arch: arch.parse().map_err(|e: robal_models::ModelError| invalid("--arch", e.to_string()))?,
        in_channels: flags.in_channels.unwrap_or(3),
        num_classes,
        head,
        normalization: None,
    };
    let model = Classifier::new(config, device, 0)?;
    if path.extension().is_some_and(|e| e == "safetensors") {
        checkpoint::load_weights(&model, path)?;
    } else {
        checkpoint::import_pytorch(&model, path)?;
    }
    Ok(model)
}

/// Where the test images come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// The set the checkpoint was trained on (its training config).
    FromCheckpoint,
    /// A set compiled into robal-data (`mnist-lt`).
    Embedded(String),
    /// The test split of an extracted CIFAR folder (or its `.tar.gz`).
    Cifar(Cifar, PathBuf),
    /// One CIFAR-format batch file.
    CifarBin(Cifar, PathBuf),
}

impl DataSpec {
    /// Parse `--data`: `mnist-lt`, `cifar10:DIR`, `cifar100:DIR`, `cifar10-bin:FILE`,
    /// `cifar100-bin:FILE`; empty means the checkpoint's own.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            invalid(
                "--data",
                format!("{s:?}: expected mnist-lt, cifar10:DIR, cifar100:DIR, cifar10-bin:FILE or cifar100-bin:FILE"),
            )
        };
        if s.is_empty() {
            return Ok(Self::FromCheckpoint);
        }
        if s == "mnist-lt" {
            return Ok(Self::Embedded(s.into()));
        }
        let (kind, path) = s.split_once(':').ok_or_else(bad)?;
        let p = PathBuf::from(path);
        Ok(match kind {
            "cifar10" => Self::Cifar(Cifar::Cifar10, p),
            "cifar100" => Self::Cifar(Cifar::Cifar100, p),
            "cifar10-bin" => Self::CifarBin(Cifar::Cifar10, p),
            "cifar100-bin" => Self::CifarBin(Cifar::Cifar100, p),
            _ => return Err(bad()),
        })
    }
}

/// The test set named by `spec` with `limit` images (0 = all) spread evenly over it, its
/// class metadata carrying the model's training counts when it has them; and a description.
pub fn load_test_set(spec: &DataSpec, loaded: &LoadedModel, limit: usize) -> Result<(ImageSet, String)> {
    let (set, name) = match spec {
        DataSpec::FromCheckpoint => {
            let cfg = loaded.train_config.as_ref().ok_or_else(|| {
                invalid(
                    "--data",
                    format!("{} has no training config (metadata or run folder): pass --data", loaded.path.display()),
                )
            })?;
            let (_, test) = robal::train::load_data(cfg)?;
            (test, format!("{} test split", cfg.data.name))
        }
        DataSpec::Embedded(name) => (robal_data::load_embedded(name, Split::Test)?, format!("{name} test split")),
        DataSpec::Cifar(kind, dir) => {
            (cifar::read(dir, *kind, Split::Test)?, format!("{kind:?} test split of {}", dir.display()))
        }
        DataSpec::CifarBin(kind, file) => {
            (cifar::read_batch_file(file, *kind)?, format!("{kind:?} records of {}", file.display()))
        }
    };
    let model_classes = loaded.model.config().num_classes;
    if set.classes().num_classes() != model_classes {
        return Err(invalid(
            "--data",
            format!("{name} has {} classes but the model predicts {model_classes}", set.classes().num_classes()),
        ));
    }
    let set = match loaded.model.class_counts() {
        Some(c) => {
            let classes = ClassInfo::new(set.classes().names().to_vec(), c.to_vec())?;
            set.with_classes(classes)?
        }
        None => set,
    };
    let n = if limit == 0 { set.len() } else { limit.min(set.len()) };
    let idx: Vec<usize> = (0..n).map(|i| i * set.len() / n).collect();
    let name = if n < set.len() { format!("{name} ({n} of {} images, evenly spaced)", set.len()) } else { name };
    Ok((set.subset(&idx)?, name))
}

/// Options of one evaluation.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Attack list, clean first.
    pub attacks: Vec<AttackSpec>,
    /// Threat model and steps.
    pub settings: AttackSettings,
    /// The audit, or `None` to skip it (the gap check on the suite still runs).
    pub audit: Option<AuditConfig>,
    /// Batch size.
    pub batch: usize,
    /// Progress bars.
    pub progress: bool,
}

/// A short description of the head, e.g. `cosine s=10 gamma=0.03125 + post-hoc tau_p=1.5`.
pub fn describe_head(model: &Classifier) -> String {
    let h = match model.config().head {
        HeadConfig::Fc => "fc".to_string(),
        HeadConfig::Cosine { scale, gamma, bias } => {
            format!("cosine s={scale} gamma={gamma}{}", if bias { " (bias)" } else { "" })
        }
        HeadConfig::TauNorm { tau } => format!("tau-norm tau={tau}"),
        HeadConfig::Lws => "lws".to_string(),
    };
    match model.posthoc_tau() {
        Some(t) => format!("{h} + post-hoc tau_p={t}"),
        None => h,
    }
}

/// Run the suite (and the audit) of `opts` on `test` and assemble the report.
pub fn evaluate(
    model: &Classifier,
    test: &ImageSet,
    checkpoint: &str,
    data: &str,
    opts: &EvalOptions,
) -> Result<Report> {
    let device = model.device().clone();
    let view = EvalModel(model);
    let outcomes = run_suite(&view, test, &opts.attacks, &opts.settings, opts.batch, &device, opts.progress)?;
    let audit_result = match &opts.audit {
        Some(cfg) => {
            let n = if cfg.limit == 0 { test.len() } else { cfg.limit.min(test.len()) };
            let idx: Vec<usize> = (0..n).map(|i| i * test.len() / n).collect();
            let sub = Arc::new(test.subset(&idx)?);
            let batch = Loader::new(sub, LoaderConfig::eval(n.max(1)), device.clone())?
                .epoch(0)
                .next()
                .ok_or_else(|| invalid("audit", "empty test set"))??;
            let bar = crate::progress::bar(1, "audit", opts.progress);
            bar.tick();
            let r = audit(
                &view,
                &batch.images,
                &batch.labels,
                &outcomes,
                &opts.settings,
                &AuditConfig { limit: 0, ..*cfg },
            )?;
            bar.finish_and_clear();
            r
        }
        None => AuditResult {
            flags: crate::audit::check_ce_vs_margin(&outcomes, AuditConfig::default().threshold).into_iter().collect(),
            ..Default::default()
        },
    };
    Ok(Report::build(
        checkpoint,
        data,
        &describe_head(model),
        opts.settings,
        test.classes().names().to_vec(),
        test.classes().train_counts().to_vec(),
        test.labels(),
        &outcomes,
        audit_result,
    ))
}

/// Write `report.json`, `report.md`, `per_class.svg/png` and, when `metrics` (a run's
/// `metrics.jsonl`) exists, `curves.svg/png` into `dir`.
pub fn write_outputs(report: &Report, dir: &Path, metrics: Option<&Path>) -> Result<Vec<PathBuf>> {
    report.save(dir)?;
    let mut written = vec![dir.join("report.json"), dir.join("report.md")];
    let clean = report.attacks.first().map(|a| a.per_class.as_slice()).unwrap_or(&[]);
    let series = [
        ClassSeries { label: "clean", values: clean },
        ClassSeries { label: "robust (worst case)", values: &report.worst_case.per_class },
    ];
    let svg = per_class_svg("Per-class accuracy and training images", &series, &report.train_counts)?;
    write_svg_png(dir, "per_class", &svg)?;
    written.extend([dir.join("per_class.svg"), dir.join("per_class.png")]);
    if let Some(m) = metrics.filter(|m| m.is_file()) {
        let text = std::fs::read_to_string(m).map_err(|e| file_err(m, e))?;
        write_svg_png(dir, "curves", &training_curves_svg("Training", &text)?)?;
        written.extend([dir.join("curves.svg"), dir.join("curves.png")]);
    }
    Ok(written)
}
