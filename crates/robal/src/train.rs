//! The trainer: runs any [`crate::objective`] (plus AWP, class budgets, a clean first
//! stage), with checkpoints that resume bit-for-bit, NaN guards, progress and metrics.
//! The data a config names is loaded by [`crate::splits`].
//!
//! Run folder: `config.toml` (the config used), `metrics.jsonl` (one JSON object
//! per epoch and per quick evaluation), `checkpoint.safetensors` +
//! `optimizer-<epoch>.safetensors` (the last completed epoch), `model.safetensors` (the
//! final model with its evaluation head and, in its metadata under `train_config`, the
//! config), `train_eval.json` (the final quick evaluation; `cargo xtask eval` writes the
//! full `report.json`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use robal_attacks::Pgd;
use robal_data::{Dataset, ImageSet, Loader, LoaderConfig};
use robal_models::checkpoint::{self, CheckpointInfo};
use robal_models::{Classifier, FcBias, HeadConfig, Mode, ModelConfig};

use crate::config::{
    AttackBatchNorm, AttackStart, PassInput, PassPoint, Stage2BatchNorm, Stage2Kind, Stage2Section, TrainConfig,
};
use crate::error::{Result, TrainError};
use crate::evaluate::{quick_eval, QuickEval};
use crate::losses::TrainLoss;
use crate::metrics::{EpochRecord, MetricsRecord, SelectionRecord};
use crate::objective::{awp, InnerAttack, InnerLoss, Method, Objective, Plain, StepContext};
use crate::optim::Sgd;
use crate::run_dir::{
    config_differences, RunDir, RunState, CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, TRAIN_EVAL_FILE,
};
use crate::selection::{BestModel, SelectionReport, BEST_FILE};
pub use crate::splits::{load_data, load_splits};

/// Build the model a config describes (training head), recording the class counts.
pub fn build_model(cfg: &TrainConfig, train: &ImageSet, device: &Device) -> Result<Classifier> {
    let shape = train.shape();
    let normalization = cfg.model.normalization.resolve(shape.channels)?;
    let config = ModelConfig {
        arch: cfg.arch()?,
        in_channels: shape.channels,
        num_classes: train.classes().num_classes(),
        head: cfg.model.head,
        normalization,
    };
    let mut model = Classifier::new(config, device, cfg.train.seed)?;
    model.set_class_counts(train.classes().train_counts().to_vec())?;
    if cfg.model.head == (HeadConfig::Fc { bias: FcBias::Prior }) {
        model.init_prior_bias(train.classes().train_counts())?;
    }
    Ok(model)
}

/// The same weights under other head settings (e.g. cosine s = 1 in training, s = 10 at
/// evaluation), with post-hoc adjustment `tau_p` if given.
pub fn with_eval_head(model: &Classifier, head: HeadConfig, tau_p: Option<f64>) -> Result<Classifier> {
    let mut config = model.config().clone();
    config.head = head;
    let mut out = Classifier::new(config, model.device(), 0)?;
    let state = model.store().state().into_iter().map(|(n, t)| Ok((n, t.copy()?))).collect::<Result<_>>()?;
    out.store().load_state(&state).map_err(|report| TrainError::Invalid {
        what: "model.eval_head",
        reason: format!("does not fit the trained head:\n{report}"),
    })?;
    if let Some(c) = model.class_counts() {
        out.set_class_counts(c.to_vec())?;
    }
    out.set_posthoc(tau_p)?;
    Ok(out)
}

/// What a finished run reports.
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Epochs trained in this call (after a resume: the remaining ones).
    pub epochs_run: usize,
    /// The final evaluation.
    pub eval: QuickEval,
    /// Mean training throughput, images/s (adversarial generation included).
    pub img_per_s: f64,
    /// The run folder.
    pub run_dir: PathBuf,
    /// The epoch kept in `best.safetensors` and on what, with a validation split.
    pub selection: Option<SelectionReport>,
    /// The folder held this run finished already: nothing was trained, the summary
    /// is the one recorded in `train_eval.json`.
    pub finished_before: bool,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.display().to_string(), source }
}

fn append_metrics(run_dir: &Path, record: &MetricsRecord) -> Result<()> {
    let path = run_dir.join(METRICS_FILE);
    let line = record.to_line()?;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
    writeln!(f, "{line}").map_err(io(&path))
}

fn scalar(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()?)
}

fn accuracy(z: &Tensor, y: &Tensor) -> Result<f64> {
    let eq = z.argmax(1)?.to_dtype(DType::U32)?.eq(y)?.to_dtype(DType::F32)?;
    Ok(scalar(&eq.mean_all()?)? as f64)
}

/// Options of [`train`] that are not part of the experiment's config.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Run folder.
    pub run_dir: PathBuf,
    /// Continue from the folder's last checkpoint.
    pub resume: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Stop after this many epochs of this call (for tests that simulate a kill).
    pub stop_after: Option<usize>,
    /// Move a run the folder already holds aside (into `replaced-<time>/`) and start over.
    pub overwrite: bool,
}

/// The epochs a saved config.toml asks for ("?" when it cannot be read).
fn saved_epochs(saved: Option<&str>) -> String {
    saved
        .and_then(|s| s.parse::<toml::Table>().ok())
        .and_then(|t| t.get("train")?.get("epochs")?.as_integer())
        .map_or_else(|| "?".into(), |e| e.to_string())
}

/// The summary of a finished run, read back from its `train_eval.json`.
fn recorded_summary(run: &RunDir) -> Result<RunSummary> {
    let path = run.train_eval();
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let bad = |e: serde_json::Error| TrainError::Invalid {
        what: TRAIN_EVAL_FILE,
        reason: format!("{}: {e}", path.display()),
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    let eval: QuickEval = serde_json::from_value(value["eval"].clone()).map_err(bad)?;
    let selection = serde_json::from_value(value["selection"].clone()).map_err(bad)?;
    Ok(RunSummary {
        epochs_run: 0,
        eval,
        img_per_s: 0.0,
        run_dir: run.path().to_path_buf(),
        selection,
        finished_before: true,
    })
}

/// Train as configured, evaluate, and write the run folder.
///
/// The folder is locked for the whole call ([`RunDir::lock`]). A folder that already
/// holds a run is continued with `resume`, moved aside with `overwrite`, reported
/// (not retrained) when it holds this very config finished, and otherwise refused
/// with an error naming what it holds and how the configs differ.
///
/// The parts, in order: [`check_run_folder`] (what the folder holds), [`start_or_restore`]
/// (a fresh folder, or the checkpoint, momentum and objective state), then per epoch
/// [`EpochRunner::run_epoch`] (the steps: [`EpochRunner::step`]) and [`end_epoch`]
/// (metrics, selection, checkpoint, quick evaluation), and [`finish`] (the second
/// stage, the final model and its evaluation).
pub fn train(cfg: &TrainConfig, opts: &RunOptions, device: &Device) -> Result<RunSummary> {
    let run = RunDir::new(&opts.run_dir);
    let _lock = run.lock("training")?;
    let config_text =
        toml::to_string_pretty(cfg).map_err(|e| TrainError::Invalid { what: "config", reason: e.to_string() })?;
    let saved = std::fs::read_to_string(run.config()).ok();
    let resume = match check_run_folder(&run, opts, &config_text, saved.as_deref())? {
        FolderCheck::Finished => return recorded_summary(&run),
        FolderCheck::Train { resume } => resume,
    };
    let (train_set, validation, test_set) = load_splits(cfg)?;
    let counts = train_set.classes().train_counts().to_vec();
    let model = build_model(cfg, &train_set, device)?;
    let mut sgd = Sgd::new(model.store().trainable(""), cfg.train.momentum, cfg.train.weight_decay)
        .with_nesterov(cfg.train.nesterov);
    let chosen = cfg.objective();
    let first_epoch = start_or_restore(&run, &config_text, saved, resume, &model, &mut sgd, chosen.as_ref(), device)?;
    let loss = TrainLoss::new(cfg.loss.clone(), &counts, device)?;
    let loader_cfg = LoaderConfig {
        sampler: cfg.data.sampler.sampler(),
        augment: cfg.data.augment,
        drop_last: cfg.data.drop_last,
        ..LoaderConfig::train(cfg.train.batch_size, cfg.train.seed)
    };
    let train_arc = Arc::new(train_set);
    let loader = Loader::new(train_arc.clone(), loader_cfg, device.clone())?;
    let eval_attack = Pgd::linf(cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps);
    let previous = if resume { BestModel::recorded(run.path(), device) } else { None };
    let mut best = selector(cfg, validation, &test_set, &eval_attack, previous);
    let last_epoch = opts.stop_after.map_or(cfg.train.epochs, |n| (first_epoch + n).min(cfg.train.epochs));
    let runner = EpochRunner {
        cfg,
        model: &model,
        loss: &loss,
        loader: &loader,
        params: model.store().trainable(""),
        counts: &counts,
        progress: opts.progress,
        checkpoint: run.checkpoint(),
    };
    let (mut images, started) = (0usize, Instant::now());
    for epoch in first_epoch..last_epoch {
        let method: &dyn Objective = if epoch < cfg.train.clean_epochs { &Plain } else { chosen.as_ref() };
        let stats = runner.run_epoch(epoch, method, &mut sgd)?;
        if epoch >= cfg.train.clean_epochs {
            chosen.end_epoch();
        }
        images += stats.images;
        let at_end = EpochEnd { cfg, run: &run, model: &model, sgd: &sgd, objective: chosen.as_ref(), device };
        at_end.run(epoch, &stats, best.as_mut(), &test_set)?;
    }
    let img_per_s = images as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let finished =
        Finish { cfg, run: &run, config_text: &config_text, counts: &counts, device, progress: opts.progress };
    let done = last_epoch == cfg.train.epochs;
    let eval = finished.run(model, done, train_arc, &loss, &test_set, &eval_attack, best.as_ref())?;
    Ok(RunSummary {
        epochs_run: last_epoch.saturating_sub(first_epoch),
        eval,
        img_per_s,
        run_dir: run.path().to_path_buf(),
        selection: best.as_ref().and_then(|b| b.report()),
        finished_before: false,
    })
}

/// What [`check_run_folder`] found.
enum FolderCheck {
    /// The folder holds this very run, finished: report it.
    Finished,
    /// Train (continuing from the checkpoint when `resume`).
    Train { resume: bool },
}

/// Decide what to do with what the run folder holds: report this very run finished,
/// move it aside (`overwrite`), continue it (`resume`), or refuse naming what it holds
/// and how the configs differ.
fn check_run_folder(run: &RunDir, opts: &RunOptions, config_text: &str, saved: Option<&str>) -> Result<FolderCheck> {
    let state = run.state();
    if state == RunState::Finished && saved == Some(config_text) && !opts.overwrite {
        return Ok(FolderCheck::Finished);
    }
    if state != RunState::Empty && opts.overwrite {
        run.move_aside()?;
    } else if state != RunState::Empty && !opts.resume {
        let epochs = saved_epochs(saved);
        let differences = config_differences(saved.unwrap_or(""), config_text);
        return Err(TrainError::RunExists {
            path: run.path().display().to_string(),
            holds: match state {
                RunState::Unfinished { epochs_done } => {
                    format!("unfinished, {epochs_done} of {epochs} epochs checkpointed")
                }
                _ => format!("finished, {epochs} epochs"),
            },
            differences: if differences.is_empty() {
                String::new()
            } else {
                format!(" with another config:\n  {}", differences.join("\n  "))
            },
        });
    }
    Ok(FolderCheck::Train { resume: opts.resume && !opts.overwrite })
}

/// A fresh run: clear what an earlier run left and write `config.toml`; returns 0. A
/// resumed one: check the saved config is this one, load the checkpoint's weights, the
/// objective's state and the momentum, drop metrics of uncheckpointed epochs; returns
/// the first epoch to train.
#[allow(clippy::too_many_arguments)]
fn start_or_restore(
    run: &RunDir,
    config_text: &str,
    saved: Option<String>,
    resume: bool,
    model: &Classifier,
    sgd: &mut Sgd,
    objective: &dyn Objective,
    device: &Device,
) -> Result<usize> {
    let run_dir = run.path();
    if !resume {
        for stale in [METRICS_FILE, CHECKPOINT_FILE, MODEL_FILE, TRAIN_EVAL_FILE, BEST_FILE] {
            let _ = std::fs::remove_file(run_dir.join(stale));
        }
        remove_optimizer_states(run_dir, None);
        robal_data::write_atomic(&run.config(), config_text.as_bytes())?;
        return Ok(0);
    }
    let saved = saved.ok_or_else(|| TrainError::Resume {
        path: run_dir.display().to_string(),
        reason: "no config.toml: nothing to resume".into(),
    })?;
    if saved != config_text {
        return Err(TrainError::Resume {
            path: run_dir.display().to_string(),
            reason: format!(
                "the config differs from the run's config.toml:\n  {}",
                config_differences(&saved, config_text).join("\n  ")
            ),
        });
    }
    let mut first_epoch = 0;
    let ckpt_path = run.checkpoint();
    if ckpt_path.is_file() {
        let info = checkpoint::load_weights(model, &ckpt_path)?;
        first_epoch = info.epoch as usize;
        if let Some(state) = info.extra.get(OBJECTIVE_STATE_KEY) {
            objective.load_state(state)?;
        }
        let opt_path = optimizer_path(run_dir, first_epoch);
        let opt = candle_core::safetensors::load(&opt_path, device)
            .map_err(|e| TrainError::Resume { path: opt_path.display().to_string(), reason: e.to_string() })?;
        sgd.set_state(opt.into_iter().collect())?;
    }
    keep_metrics_up_to(run_dir, first_epoch)?;
    Ok(first_epoch)
}

/// Model selection, if any: on a validation split (PGD on all of it, or AutoAttack's
/// APGD-CE + APGD-T on `eval.selection_autoattack` images), or on the test set
/// (`eval.select_on_test`, MCAT's quirk); `previous` is an interrupted run's best.
fn selector(
    cfg: &TrainConfig,
    validation: Option<ImageSet>,
    test_set: &ImageSet,
    eval_attack: &Pgd,
    previous: Option<(usize, f64)>,
) -> Option<BestModel> {
    if cfg.eval.select_on_test {
        return Some(BestModel::on_test(test_set.clone(), Box::new(eval_attack.clone()), previous));
    }
    validation.map(|v| {
        let (attack, limit): (Box<dyn robal_attacks::Attack + Send + Sync>, usize) = match cfg.eval.selection_autoattack
        {
            0 => (Box::new(eval_attack.clone()), 0),
            n => (Box::new(robal_attacks::AutoAttack::new(robal_attacks::Suite::ApgdCeT, cfg.eval.eps)), n),
        };
        BestModel::new(v, attack, limit, previous)
    })
}

/// A progress bar over `len` steps, drawn only when `show`.
fn progress_bar(len: usize, show: bool, prefix: String) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("epoch {prefix} {bar:30} {pos}/{len} {msg} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix);
    bar
}

/// The loss value of a step, or [`TrainError::NonFinite`] naming the epoch, the step
/// (both 1-based) and the checkpoint to go back to.
fn finite_loss(loss: &Tensor, epoch: usize, step: usize, checkpoint: impl FnOnce() -> String) -> Result<f32> {
    let value = scalar(loss)?;
    if value.is_finite() {
        Ok(value)
    } else {
        Err(TrainError::NonFinite { value, epoch: epoch + 1, step: step + 1, checkpoint: checkpoint() })
    }
}

/// What one epoch of steps measured.
struct EpochStats {
    /// Mean step loss.
    loss: f64,
    /// Mean batch accuracy on clean / adversarial logits, over the steps that had them.
    clean: Option<f64>,
    adv: Option<f64>,
    /// Images trained on.
    images: usize,
    /// Wall time, seconds.
    seconds: f64,
}

/// The first stage's epochs: the loader, the loss and the model a step needs.
struct EpochRunner<'a> {
    cfg: &'a TrainConfig,
    model: &'a Classifier,
    loss: &'a TrainLoss,
    loader: &'a Loader<ImageSet>,
    /// Every trainable parameter (AWP perturbs them all).
    params: Vec<(String, candle_core::Var)>,
    counts: &'a [usize],
    progress: bool,
    checkpoint: PathBuf,
}

impl EpochRunner<'_> {
    /// Every step of `epoch` (0-based) with `method`, with a progress bar.
    fn run_epoch(&self, epoch: usize, method: &dyn Objective, sgd: &mut Sgd) -> Result<EpochStats> {
        let cfg = self.cfg;
        let steps = self.loader.num_batches();
        let weights = cfg.train.reweight.at_epoch(self.counts, epoch);
        let budget = cfg.attack.class_budget.map(|b| b.at_epoch(self.counts, epoch, cfg.train.epochs));
        let bar = progress_bar(steps, self.progress, format!("{}/{}", epoch + 1, cfg.train.epochs));
        let started = Instant::now();
        let (mut loss_sum, mut n_steps, mut images) = (0f64, 0usize, 0usize);
        // Batch accuracies on clean / adversarial logits, over the steps that computed them
        // (PGD-AT has no clean forward pass, plain training no adversarial one).
        let (mut clean, mut adv) = (BatchMean::default(), BatchMean::default());
        for (step, batch) in self.loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let ctx = StepContext {
                model: self.model,
                loss: self.loss,
                weights: weights.as_ref().map(|(w, a)| (w.as_slice(), *a)),
                seed: cfg.train.seed ^ ((epoch as u64) << 32 | step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                budget: budget.as_deref(),
                start: None,
                epoch_start: epoch > 0 && step == 0,
            };
            let lr = cfg.train.learning_rate(epoch, step as f64 / steps as f64);
            let out =
                self.step(&ctx, method, &batch.images, &batch.labels, sgd, lr, (epoch, step)).inspect_err(|_| {
                    bar.abandon();
                })?;
            let y = &batch.labels;
            loss_sum += out.loss as f64;
            if let Some(z) = &out.clean_logits {
                clean.add(accuracy(&z.detach(), y)?);
            }
            if let Some(z) = &out.adv_logits {
                adv.add(accuracy(&z.detach(), y)?);
            }
            n_steps += 1;
            images += batch.indices.len();
            let rate = images as f64 / started.elapsed().as_secs_f64();
            bar.set_message(format!(
                "loss {:.3} clean {} adv {} {rate:.0} img/s",
                loss_sum / n_steps as f64,
                clean.display(),
                adv.display()
            ));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(EpochStats {
            loss: loss_sum / n_steps.max(1) as f64,
            clean: clean.mean(),
            adv: adv.mean(),
            images,
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// One step: craft x_adv, the AWP probe, the outer loss, the update; the configured
    /// statistics-only passes at their points, and the objective shown what it asks to
    /// see (the outer logits, the logging pass after the update).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        ctx: &StepContext,
        method: &dyn Objective,
        x: &Tensor,
        y: &Tensor,
        sgd: &mut Sgd,
        lr: f64,
        (epoch, step): (usize, usize),
    ) -> Result<StepResult> {
        let cfg = self.cfg;
        let x_adv = method.craft(ctx, x, y)?;
        let extra = |at| extra_passes(self.model, cfg, at, x, x_adv.as_ref(), ctx.epoch_start);
        extra(PassPoint::AfterAttack)?;
        let perturbation = match &cfg.awp {
            Some(awp) if epoch >= awp.from_epoch && method.method() != Method::Plain => {
                Some(awp::probe(awp, method, ctx, x, y, x_adv.as_ref(), &self.params, sgd, lr)?)
            }
            _ => None,
        };
        extra(PassPoint::BeforeOuter)?;
        let out = method.outer(ctx, x, y, x_adv.as_ref())?;
        extra(PassPoint::AfterOuter)?;
        method.observe(y, &out)?;
        let checkpoint = || {
            if self.checkpoint.is_file() {
                self.checkpoint.display().to_string()
            } else {
                "none".into()
            }
        };
        let loss = finite_loss(&out.loss, epoch, step, checkpoint)?;
        sgd.step(&out.loss, lr)?;
        if let Some(p) = perturbation {
            p.restore()?;
        }
        if let Some(z) = extra(PassPoint::AfterUpdate)? {
            method.observe_after_update(y, &z)?;
        }
        Ok(StepResult { loss, clean_logits: out.clean_logits, adv_logits: out.adv_logits })
    }
}

/// What a step leaves for the epoch's metrics.
struct StepResult {
    loss: f32,
    clean_logits: Option<Tensor>,
    adv_logits: Option<Tensor>,
}

/// What happens after each epoch of the first stage.
struct EpochEnd<'a> {
    cfg: &'a TrainConfig,
    run: &'a RunDir,
    model: &'a Classifier,
    sgd: &'a Sgd,
    objective: &'a dyn Objective,
    device: &'a Device,
}

impl EpochEnd<'_> {
    /// The epoch's metrics line; the selection (when due); the checkpoint (every
    /// `train.checkpoint_every` epochs and the last) by the commit protocol; the quick
    /// evaluation (every `eval.every` epochs but the last).
    fn run(&self, epoch: usize, stats: &EpochStats, best: Option<&mut BestModel>, test_set: &ImageSet) -> Result<()> {
        let (cfg, run_dir) = (self.cfg, self.run.path());
        append_metrics(
            run_dir,
            &MetricsRecord::Epoch(EpochRecord {
                epoch: epoch + 1,
                lr: cfg.train.learning_rate(epoch, 0.0),
                loss: stats.loss,
                clean_batch_acc: stats.clean,
                adv_batch_acc: stats.adv,
                img_per_s: stats.images as f64 / stats.seconds,
                seconds: stats.seconds,
            }),
        )?;
        let done = epoch + 1;
        // Selection before the checkpoint: a kill in between repeats the epoch and its
        // (deterministic) evaluation.
        let due = cfg.eval.every > 0 && done.is_multiple_of(cfg.eval.every);
        if let Some(b) = best.filter(|_| due || done == cfg.train.epochs) {
            let head = cfg.model.eval_head.unwrap_or(cfg.model.head);
            let value =
                b.consider(&with_eval_head(self.model, head, cfg.model.posthoc_tau)?, done, run_dir, self.device)?;
            let mut record = SelectionRecord { epoch: done, ..SelectionRecord::default() };
            let field = if cfg.eval.select_on_test {
                &mut record.test_overall_pgd
            } else if cfg.eval.selection_autoattack > 0 {
                &mut record.validation_balanced_autoattack
            } else {
                &mut record.validation_balanced_pgd
            };
            *field = Some(value);
            append_metrics(run_dir, &MetricsRecord::Selection(record))?;
        }
        if done.is_multiple_of(cfg.train.checkpoint_every.max(1)) || done == cfg.train.epochs {
            // Commit protocol: the momentum of epoch `done` goes to its own file first,
            // then the checkpoint (the commit point) names that epoch, then older
            // momentum files go. A kill at any moment leaves a checkpoint whose
            // optimizer file exists.
            robal_data::write_atomic(&optimizer_path(run_dir, done), &safetensors_bytes(self.sgd.state())?)?;
            let extra = self.objective.state().map(|s| (OBJECTIVE_STATE_KEY.to_string(), s)).into_iter().collect();
            checkpoint::save(self.model, &self.run.checkpoint(), &CheckpointInfo { epoch: done as u64, extra })?;
            remove_optimizer_states(run_dir, Some(done));
        }
        if due && done < cfg.train.epochs {
            let pgd = Pgd::linf(cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps.min(10));
            let q = quick_eval(self.model, test_set, &pgd, cfg.eval.quick_limit, 128, 0, self.device)?;
            append_metrics(run_dir, &MetricsRecord::QuickEval { epoch: done, quick_eval: q })?;
        }
        Ok(())
    }
}

/// After the last epoch of this call.
struct Finish<'a> {
    cfg: &'a TrainConfig,
    run: &'a RunDir,
    config_text: &'a str,
    counts: &'a [usize],
    device: &'a Device,
    progress: bool,
}

impl Finish<'_> {
    /// When the run is `done`: the second stage (if any), `model.safetensors` with its
    /// evaluation head and config, the final evaluation into `train_eval.json`. When it
    /// stopped early: a one-step PGD check on 64 images, nothing written.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        mut model: Classifier,
        done: bool,
        train_set: Arc<ImageSet>,
        loss: &TrainLoss,
        test_set: &ImageSet,
        eval_attack: &Pgd,
        best: Option<&BestModel>,
    ) -> Result<QuickEval> {
        let (cfg, run_dir) = (self.cfg, self.run.path());
        let mut eval_head = cfg.model.eval_head.unwrap_or(cfg.model.head);
        if let (Some(s2), true) = (&cfg.stage2, done) {
            second_stage(&mut model, cfg, s2, train_set, loss, self.device, run_dir, self.progress)?;
            eval_head = model.config().head;
        }
        let eval_model = with_eval_head(&model, eval_head, cfg.model.posthoc_tau)?;
        if !done {
            let pgd = Pgd::linf(cfg.eval.eps, cfg.eval.step_size, 1);
            return quick_eval(&eval_model, test_set, &pgd, 64, 64, 0, self.device);
        }
        checkpoint::save(
            &eval_model,
            &run_dir.join(MODEL_FILE),
            &CheckpointInfo {
                epoch: cfg.train.epochs as u64,
                extra: [(TRAIN_CONFIG_KEY.to_string(), self.config_text.to_string())].into_iter().collect(),
            },
        )?;
        let e = quick_eval(&eval_model, test_set, eval_attack, cfg.eval.limit, 128, 0, self.device)?;
        let report = serde_json::json!({"config": cfg, "class_counts": self.counts, "eval": e,
            "selection": best.and_then(|b| b.report())});
        robal_data::write_atomic(
            &run_dir.join(TRAIN_EVAL_FILE),
            serde_json::to_string_pretty(&report).unwrap_or_default().as_bytes(),
        )?;
        Ok(e)
    }
}

/// Two-stage baselines on the frozen, trained backbone (BatchNorm in evaluation mode),
/// with class-balanced sampling: `crt` trains a fresh FC head; `lws` keeps the FC head
/// and learns per-class gains. Training examples are adversarial unless mode is `plain`.
#[allow(clippy::too_many_arguments)]
fn second_stage(
    model: &mut Classifier,
    cfg: &TrainConfig,
    s2: &Stage2Section,
    train_set: Arc<ImageSet>,
    loss: &TrainLoss,
    device: &Device,
    run_dir: &Path,
    progress: bool,
) -> Result<()> {
    let attack = InnerAttack::from_config(cfg, InnerLoss::CrossEntropy, AttackStart::Uniform);
    let prefix = match s2.kind {
        // RS-fine keeps the first stage's classifier; cRT proper starts a fresh one.
        Stage2Kind::Crt if s2.keep_head => "head.",
        Stage2Kind::Crt => {
            model.replace_head(HeadConfig::FC, false)?;
            "head."
        }
        Stage2Kind::Lws => {
            model.replace_head(HeadConfig::Lws { bias: s2.lws_bias }, true)?;
            "head.gains"
        }
    };
    let mut sgd = Sgd::new(model.store().trainable(prefix), cfg.train.momentum, cfg.train.weight_decay);
    let loader_cfg = LoaderConfig {
        sampler: s2.sampler.sampler(),
        augment: cfg.data.augment,
        ..LoaderConfig::train(cfg.train.batch_size, cfg.train.seed ^ 0x2)
    };
    let mode = match s2.batch_norm {
        Stage2BatchNorm::Frozen => Mode::Eval,
        Stage2BatchNorm::Train => Mode::Train,
    };
    let loader = Loader::new(train_set, loader_cfg, device.clone())?;
    for epoch in 0..s2.epochs {
        let bar = progress_bar(loader.num_batches(), progress, format!("{:?} {}/{}", s2.kind, epoch + 1, s2.epochs));
        let (mut sum, mut n) = (0f64, 0usize);
        for (step, batch) in loader.epoch(epoch as u64).enumerate() {
            let batch = batch?;
            let x = if cfg.train.mode == Method::Plain {
                batch.images.clone()
            } else {
                let ctx = StepContext {
                    model,
                    loss,
                    weights: None,
                    seed: cfg.train.seed ^ (0x5 << 40 | (epoch << 20 | step) as u64),
                    budget: None,
                    start: None,
                    epoch_start: false,
                };
                attack.run(&ctx, &batch.images, &batch.labels)?
            };
            let l = loss.forward(&model.forward(&x, mode)?, &batch.labels, None)?;
            let value = finite_loss(&l, epoch, step, || {
                bar.abandon();
                format!("{} (stage 1)", run_dir.join(CHECKPOINT_FILE).display())
            })?;
            sgd.step(&l, s2.learning_rate(&cfg.train, epoch))?;
            sum += value as f64;
            n += 1;
            bar.inc(1);
        }
        bar.finish_and_clear();
        append_metrics(
            run_dir,
            &MetricsRecord::Stage2 { stage2: s2.kind, epoch: epoch + 1, loss: sum / n.max(1) as f64 },
        )?;
    }
    Ok(())
}

/// Checkpoint metadata key of the objective's epoch-to-epoch state (REAT's counts).
pub const OBJECTIVE_STATE_KEY: &str = "objective_state";

/// Metadata key of `model.safetensors` holding the training config (TOML), so that the
/// final model names its data set and threat model by itself.
pub const TRAIN_CONFIG_KEY: &str = "train_config";

/// The optimizer state (SGD momentum) saved with the checkpoint of `epoch`.
pub fn optimizer_path(run_dir: &Path, epoch: usize) -> PathBuf {
    RunDir::new(run_dir).optimizer(epoch)
}

/// Remove the optimizer-state files of every epoch but `keep`.
fn remove_optimizer_states(run_dir: &Path, keep: Option<usize>) {
    let Ok(entries) = std::fs::read_dir(run_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let epoch = name.strip_prefix("optimizer-").and_then(|r| r.strip_suffix(".safetensors"));
        if epoch.is_some_and(|ep| ep.parse::<usize>().ok() != keep) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// On resume, drop metrics lines of epochs after the checkpoint (a run killed between
/// logging an epoch and checkpointing it repeats that epoch).
fn keep_metrics_up_to(run_dir: &Path, epoch: usize) -> Result<()> {
    let path = run_dir.join(METRICS_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let kept: String = text
        .lines()
        .filter(|l| crate::metrics::line_epoch(l).is_none_or(|e| e <= epoch))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept != text {
        robal_data::write_atomic(&path, kept.as_bytes())?;
    }
    Ok(())
}

fn safetensors_bytes(state: &std::collections::BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let cpu: Vec<(String, Tensor)> =
        state.iter().map(|(n, t)| Ok((n.clone(), t.to_device(&Device::Cpu)?.contiguous()?))).collect::<Result<_>>()?;
    safetensors::serialize(cpu.iter().map(|(n, t)| (n.as_str(), t)), None)
        .map_err(|e| TrainError::Invalid { what: "optimizer state", reason: e.to_string() })
}

/// Running mean of a per-batch value that only some steps compute.
#[derive(Default)]
struct BatchMean {
    sum: f64,
    count: usize,
}

impl BatchMean {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
    }

    /// The mean, or `None` (JSON null) when no step computed the value.
    fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    fn display(&self) -> String {
        self.mean().map_or_else(|| "-".into(), |m| format!("{m:.2}"))
    }
}

/// The `train.extra_passes` at `at`: statistics-only forwards (train mode; at
/// `after-attack` only when the attack itself runs in train mode), outputs discarded.
/// RobustLT's logging passes (`train.log_passes`) are after-update passes on x_adv (if
/// any), then x, after the configured ones; their logits on x_adv are returned (REAT
/// counts them with `reat.count = "after-update"`).
fn extra_passes(
    model: &Classifier,
    cfg: &TrainConfig,
    at: PassPoint,
    x: &Tensor,
    x_adv: Option<&Tensor>,
    epoch_start: bool,
) -> Result<Option<Tensor>> {
    // A batch-statistics attack (`batch`) puts its statistics back: no pass to repeat.
    let attack_moves_statistics =
        cfg.attack.batch_norm != AttackBatchNorm::Batch && cfg.attack.batch_norm.train_mode(epoch_start);
    if at == PassPoint::AfterAttack && !attack_moves_statistics {
        return Ok(None);
    }
    let configured = cfg.train.extra_passes.iter().filter(|p| p.at == at).map(|p| (p.input, false));
    let logging = (at == PassPoint::AfterUpdate && cfg.train.log_passes)
        .then_some([(PassInput::Adv, true), (PassInput::Clean, true)])
        .into_iter()
        .flatten();
    let mut logged_adv = None;
    for (pass_input, is_log) in configured.chain(logging) {
        let input = match pass_input {
            PassInput::Clean => Some(x),
            PassInput::Adv => x_adv,
        };
        if let Some(input) = input {
            let z = model.forward(&input.detach(), Mode::Train)?;
            if is_log && pass_input == PassInput::Adv {
                logged_adv = Some(z.detach());
            }
        }
    }
    Ok(logged_adv)
}
