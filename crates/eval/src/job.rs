//! Evaluating a checkpoint end to end: load the model (robal-rs safetensors, a
//! reference PyTorch `state_dict` with architecture flags, or an `hf://` file),
//! pick the test set (by default the one the checkpoint was trained on), run the
//! suite and the audit, and write the report and plots.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use robal::evaluate::EvalModel;
use robal::run_dir::{CONFIG_FILE, MODEL_FILE};
use robal::train::TRAIN_CONFIG_KEY;
use robal::TrainConfig;
use robal_data::{cifar, Cifar, ClassInfo, Dataset, ImageSet, Loader, LoaderConfig, Split};
use robal_models::{checkpoint, Classifier, FcBias, HeadConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::audit::{audit_sweeps, AuditConfig, AuditResult};
use crate::error::{file_err, EvalError, Result};
use crate::parts::{Evaluation, Shard, State, StateKey};
use crate::plot::{per_class_svg, training_curves_svg, write_svg_png, ClassSeries};
use crate::report::{Report, MODEL_INFO_FILE, REPORT_FILE, REPORT_MD_FILE};
use crate::suite::{run_suite_with, AttackOutcome, AttackSettings, AttackSpec, Progress};

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
    /// Classes (foreign checkpoints; read from the head's weight when the file has one).
    pub num_classes: Option<usize>,
    /// Input channels (foreign checkpoints; read from the first convolution's weight).
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
    /// Whether its tensors were checked against the digest in its metadata
    /// (`None` for foreign files, which carry none).
    pub integrity: Option<checkpoint::Integrity>,
    /// The format of a foreign file (`None` for a robal-rs checkpoint).
    pub foreign_format: Option<checkpoint::ForeignFormat>,
}

impl LoadedModel {
    /// A line for the user when the checkpoint's tensors could not be verified
    /// (a robal-rs file written before checkpoints carried `robal.sha256`).
    pub fn integrity_notice(&self) -> Option<String> {
        if self.foreign_format == Some(checkpoint::ForeignFormat::PytorchLegacy) {
            return Some(format!(
                "notice: {} is in PyTorch's legacy format (before torch 1.6), which carries no checksum; \
                 its tensors were loaded unchecked",
                self.path.display()
            ));
        }
        (self.integrity == Some(checkpoint::Integrity::Unchecked)).then(|| {
            format!(
                "notice: {} carries no {} digest (written before robal-rs recorded one); its tensors were loaded unchecked",
                self.path.display(),
                checkpoint::DIGEST_KEY
            )
        })
    }
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
        path = path.join(MODEL_FILE);
    }
    if !path.exists() {
        return Err(file_err(&path, "checkpoint not found (expected a file, a run folder, or hf://owner/repo/file)"));
    }
    let run_dir = path.parent().filter(|d| d.join(CONFIG_FILE).is_file()).map(Path::to_path_buf);
    let (mut model, extra, integrity, foreign_format) = match &flags.arch {
        None => {
            let (m, info, integrity) = checkpoint::load_checked(&path, device)?;
            (m, info.extra, Some(integrity), None)
        }
        Some(arch) => {
            let (m, format) = import_foreign(&path, arch, flags, device)?;
            (m, Default::default(), None, Some(format))
        }
    };
    let train_config = match (extra.get(TRAIN_CONFIG_KEY), &run_dir) {
        (Some(text), _) => Some(TrainConfig::from_toml(text, &format!("{} metadata", path.display()), &[])?),
        (None, Some(dir)) => Some(TrainConfig::load(&dir.join(CONFIG_FILE), &[])?),
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
    Ok(LoadedModel { model, train_config, run_dir, path, integrity, foreign_format })
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

/// Build the model of a foreign checkpoint from `--arch`/`--head` flags. Input channels
/// and classes come from the file's own shapes (first convolution, head); a flag that
/// contradicts them is an error naming the tensor, and one is needed only where the
/// file does not say.
fn import_foreign(
    path: &Path,
    arch: &str,
    flags: &ModelFlags,
    device: &Device,
) -> Result<(Classifier, checkpoint::ForeignFormat)> {
    let arch: robal_models::Arch =
        arch.parse().map_err(|e: robal_models::ModelError| invalid("--arch", e.to_string()))?;
    let state = checkpoint::read_foreign(path)?;
    let shape = checkpoint::foreign_shape(arch, &state)?;
    let pick =
        |flag: &str, given: Option<usize>, read: Option<(usize, String)>, default: Option<usize>| match (given, read) {
            (Some(g), Some((r, tensor))) if g != r => Err(file_err(
                path,
                format!("{flag} {g} contradicts the checkpoint: its {tensor} has {r} (leave {flag} out to use it)"),
            )),
            (_, Some((r, _))) => Ok(r),
            (Some(g), None) => Ok(g),
            (None, None) => default.ok_or_else(|| {
                invalid(flag, "this checkpoint has no head weight to read it from; give it (e.g. 10)".to_string())
            }),
        };
    let in_channels = pick("--in-channels", flags.in_channels, shape.in_channels, Some(3))?;
    let num_classes = pick("--num-classes", flags.num_classes, shape.num_classes, None)?;
    let head = match flags.head.as_deref().unwrap_or("fc") {
        "fc" => HeadConfig::FC,
        "cosine" => HeadConfig::Cosine {
            scale: flags.scale.unwrap_or(10.0),
            gamma: flags.gamma.unwrap_or(0.03125),
            bias: false,
        },
        other => return Err(invalid("--head", format!("{other:?}: expected fc or cosine for a PyTorch checkpoint"))),
    };
    let config = ModelConfig { arch, in_channels, num_classes, head, normalization: None };
    let mut model = Classifier::new(config, device, 0)?;
    checkpoint::load_foreign(&model, path, &state)?;
    if let Some(n) = state.normalization {
        // A normalisation wrapper (RobustBench style): the model normalises inside, as trained.
        model.set_normalization(Some(n))?;
    }
    Ok((model, state.format))
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

/// Which test images count (`--test-profile`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestProfile {
    /// The test split as it is (balanced for CIFAR): the RoBal protocol.
    #[default]
    Balanced,
    /// A test set long-tailed like training (TAET's protocol, METHODS section 4):
    /// the first `n_c = int(m r^(c / (K - 1)))` test images of class c, with `m` the
    /// smallest per-class test count and `r` the training imbalance `min / max` of
    /// the model's training counts. Balanced accuracy is then "balanced robustness".
    LongTailed,
}

impl TestProfile {
    /// Parse `--test-profile`: `balanced` or `lt`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "balanced" => Ok(Self::Balanced),
            "lt" | "long-tailed" => Ok(Self::LongTailed),
            other => Err(invalid("--test-profile", format!("{other:?}: expected balanced or lt"))),
        }
    }
}

/// The long-tailed test subset of [`TestProfile::LongTailed`], from per-class training
/// counts `train_counts`; the indices into `labels`, in their original order.
pub fn long_tailed_indices(labels: &[u32], train_counts: &[usize]) -> Result<Vec<usize>> {
    let k = train_counts.len();
    let (lo, hi) = (train_counts.iter().copied().min().unwrap_or(0), train_counts.iter().copied().max().unwrap_or(0));
    if k < 2 || lo == 0 {
        return Err(invalid(
            "--test-profile lt",
            format!(
                "needs the training count of every class (>= 1, two classes or more); the model has {train_counts:?}"
            ),
        ));
    }
    let r = lo as f64 / hi as f64;
    let mut have = vec![0usize; k];
    labels.iter().for_each(|&l| have[l as usize] += 1);
    let m = have.iter().copied().min().unwrap_or(0);
    let want: Vec<usize> = (0..k).map(|c| (m as f64 * r.powf(c as f64 / (k - 1) as f64)) as usize).collect();
    let mut taken = vec![0usize; k];
    Ok((0..labels.len())
        .filter(|&i| {
            let c = labels[i] as usize;
            taken[c] += 1;
            taken[c] <= want[c]
        })
        .collect())
}

/// The test set named by `spec` with `limit` images (0 = all) spread evenly over it, its
/// class metadata carrying the model's training counts when it has them; and a description.
pub fn load_test_set(spec: &DataSpec, loaded: &LoadedModel, limit: usize) -> Result<(ImageSet, String)> {
    load_test_set_with(spec, loaded, TestProfile::Balanced, limit)
}

/// [`load_test_set`] under a test profile (applied before `limit`).
pub fn load_test_set_with(
    spec: &DataSpec,
    loaded: &LoadedModel,
    profile: TestProfile,
    limit: usize,
) -> Result<(ImageSet, String)> {
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
    let (set, name) = match profile {
        TestProfile::Balanced => (set, name),
        TestProfile::LongTailed => {
            let idx = long_tailed_indices(set.labels(), set.classes().train_counts())?;
            let lt = set.subset(&idx)?;
            let name = format!("{name}, long-tailed like training ({} images)", lt.len());
            (lt, name)
        }
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
    /// The part of the test set to evaluate (`1/1`: all of it).
    pub shard: Shard,
    /// Where progress is saved for `--resume`, or `None` for no state file.
    pub state: Option<StateFile>,
}

impl Default for EvalOptions {
    /// The default suite at SPEC's threat model, the audit with its defaults, batch 128,
    /// no progress bars, the whole set, no state file.
    fn default() -> Self {
        Self {
            attacks: crate::suite::DEFAULT_ATTACKS.to_vec(),
            settings: AttackSettings::default(),
            audit: Some(AuditConfig::default()),
            batch: 128,
            progress: false,
            shard: Shard::default(),
            state: None,
        }
    }
}

/// The state file of an evaluation (see [`crate::parts::State`]).
#[derive(Clone, Debug)]
pub struct StateFile {
    /// The output folder, which holds it.
    pub dir: PathBuf,
    /// Least time between two saves within an attack (each attack's end always saves).
    pub every: Duration,
    /// Continue from the state file if there is one (else it is overwritten).
    pub resume: bool,
}

/// A short description of the head, e.g. `cosine s=10 gamma=0.03125 + post-hoc tau_p=1.5`.
pub fn describe_head(model: &Classifier) -> String {
    let h = match model.config().head {
        HeadConfig::Fc { bias: FcBias::Learned } => "fc".to_string(),
        HeadConfig::Fc { bias: FcBias::Prior } => "fc (prior-initialised bias)".to_string(),
        HeadConfig::Fc { bias: FcBias::FrozenRandom } => "fc (frozen random bias)".to_string(),
        HeadConfig::Cosine { scale, gamma, bias } => {
            format!("cosine s={scale} gamma={gamma}{}", if bias { " (bias)" } else { "" })
        }
        HeadConfig::TauNorm { tau, bias } => format!("tau-norm tau={tau}{}", if bias { "" } else { " (no bias)" }),
        HeadConfig::Lws { bias } => format!("lws{}", if bias { "" } else { " (no bias)" }),
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
    Ok(evaluate_part(model, test, checkpoint, data, opts)?.report())
}

/// The per-example outcomes of `opts.shard` of `test` (all of it for `1/1`), with the
/// entry checks and the audit's sweeps when this is shard 1; saves and resumes
/// progress through `opts.state`, and removes the state file once done.
pub fn evaluate_part(
    model: &Classifier,
    test: &ImageSet,
    checkpoint: &str,
    data: &str,
    opts: &EvalOptions,
) -> Result<Evaluation> {
    let digest = robal_models::checkpoint::model_digest(model)?;
    evaluate_part_with_digest(model, &digest, test, checkpoint, data, opts)
}

/// [`evaluate_part`] for a caller that has the model's
/// [`robal_models::checkpoint::model_digest`] already (hashing every tensor of a large
/// model once is enough).
pub fn evaluate_part_with_digest(
    model: &Classifier,
    digest: &str,
    test: &ImageSet,
    checkpoint: &str,
    data: &str,
    opts: &EvalOptions,
) -> Result<Evaluation> {
    let device = model.device().clone();
    let view = EvalModel(model);
    let batch = opts.batch.max(1);
    let (start, end, first_batch) = opts.shard.range(test.len(), batch);
    let part = test.subset(&(start..end).collect::<Vec<_>>())?;
    let key = StateKey {
        model: digest.to_string(),
        data: data.into(),
        attacks: opts.attacks.clone(),
        settings: opts.settings,
        batch,
        shard: opts.shard,
        labels: part.labels().to_vec(),
    };
    let state_path = opts.state.as_ref().map(|s| opts.shard.state_path(&s.dir));
    let resume = match (&opts.state, &state_path) {
        (Some(s), Some(path)) if s.resume => State::load(path, &key)?.map(|st| st.outcomes).unwrap_or_default(),
        _ => Vec::new(),
    };
    if let (Some(path), Some(last)) = (&state_path, resume.last()) {
        if opts.progress {
            eprintln!(
                "resuming from {}: {} of {} attacks begun, {} of {} images done in the last",
                path.display(),
                resume.len(),
                opts.attacks.len(),
                last.predicted.len(),
                part.len()
            );
        }
    }
    let mut save = |outcomes: &[AttackOutcome]| match &state_path {
        Some(path) => State { key: key.clone(), outcomes: outcomes.to_vec() }.save(path),
        None => Ok(()),
    };
    let every = opts.state.as_ref().map(|s| s.every).unwrap_or(Duration::MAX);
    let progress = Progress { first_batch, resume, every, save: &mut save };
    let outcomes =
        run_suite_with(&view, &part, &opts.attacks, &opts.settings, batch, &device, opts.progress, progress)?;

    // Entry checks and sweeps on the first images of the whole set: shard 1's job.
    let mut audit_result = AuditResult::default();
    if opts.shard.index == 1 {
        let n = opts.audit.map(|c| if c.limit == 0 { test.len() } else { c.limit.min(test.len()) }).unwrap_or(0);
        let n_entry = batch.min(test.len());
        let idx: Vec<usize> = if n > 0 { (0..n).map(|i| i * test.len() / n).collect() } else { (0..n_entry).collect() };
        let sub = Arc::new(test.subset(&idx)?);
        if let Some(b) = Loader::new(sub, LoaderConfig::eval(idx.len().max(1)), device.clone())?.epoch(0).next() {
            let b = b?;
            let entry_x = b.images.narrow(0, 0, n_entry.min(b.images.dim(0)?))?;
            let entry = crate::runtime::entry_checks(&view, &entry_x, model.config().num_classes, &opts.attacks)?;
            if let Some(cfg) = &opts.audit {
                let bar = crate::progress::bar(1, "audit", opts.progress);
                bar.tick();
                audit_result =
                    audit_sweeps(&view, &b.images, &b.labels, &opts.settings, &AuditConfig { limit: 0, ..*cfg })?;
                bar.finish_and_clear();
            }
            for c in entry {
                audit_result.push(c);
            }
        }
    }
    if let Some(path) = &state_path {
        if path.exists() {
            std::fs::remove_file(path).map_err(|e| file_err(path, format!("cannot remove the finished state: {e}")))?;
        }
    }
    Ok(Evaluation {
        checkpoint: checkpoint.into(),
        model: digest.to_string(),
        data: data.into(),
        head: describe_head(model),
        settings: opts.settings,
        attacks: opts.attacks.clone(),
        batch,
        class_names: test.classes().names().to_vec(),
        train_counts: test.classes().train_counts().to_vec(),
        total_images: test.len(),
        shard: opts.shard,
        labels: part.labels().to_vec(),
        outcomes,
        audit: audit_result,
        audit_config: opts.audit,
    })
}

/// Write `report.json`, `report.md`, `per_class.svg/png` and, when `metrics` (a run's
/// `metrics.jsonl`) exists, `curves.svg/png` into `dir`.
pub fn write_outputs(report: &Report, dir: &Path, metrics: Option<&Path>) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let mut written = Vec::new();
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
    // Last: report.json marks a complete evaluation (a process killed before it leaves none).
    report.save(dir)?;
    written.splice(0..0, [dir.join(REPORT_FILE), dir.join(REPORT_MD_FILE), dir.join(MODEL_INFO_FILE)]);
    Ok(written)
}
