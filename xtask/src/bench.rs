//! `cargo xtask bench`: images/s and peak memory of the three steps adversarial
//! training and evaluation are made of, for the project's models, side by side with
//! PyTorch when it is installed (`bench/pytorch_reference.py`, the same architectures
//! and steps):
//!
//! - `attack`: eval-mode forward + gradient of the summed cross-entropy w.r.t. the input
//!   (one PGD step, what `robal_attacks::model::loss_and_grad` does);
//! - `train`: train-mode forward, cross-entropy, backward, SGD with momentum 0.9 and
//!   weight decay 2e-4;
//! - `infer`: eval-mode forward (batch `--infer-batch`);
//! - `pgd-at`, `trades`, `robal`, `reat`, `taet`: one whole training step of that method
//!   as its CIFAR-10-LT preset (`configs/cifar10-lt-<method>.toml`, RoBal's `-robal-n`) sets it up: the
//!   inner attack (5 or 10 PGD steps), the outer loss's forward passes and the SGD
//!   update ([`robal::objective`]); images/s counts each image once (robal-rs only);
//! - `pgd-at-awp`, `trades-awp`: the same with AWP's probe (one more outer forward and
//!   backward, the perturbation put on before and taken off after the step).
//!
//! Every (model, step) runs in a fresh process so that its peak RSS is its own; with
//! `--rounds R` the robal-rs and PyTorch processes alternate R times.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use robal::objective::{awp, AwpConfig, Objective, StepContext};
use robal::{EvalModel, Sgd, TrainConfig, TrainLoss};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};
use serde_json::{json, Value};

const MODELS: [&str; 8] = [
    "small-cnn",
    "wrn-10-2",
    "wrn-16-4",
    "resnet18",
    "wrn-34-10",
    "preact-resnet18-64",
    "resnet18-imagenet",
    "resnet50-imagenet",
];
/// Models without a PyTorch counterpart in `bench/pytorch_reference.py`.
const ROBAL_ONLY: [&str; 3] = ["preact-resnet18-64", "resnet18-imagenet", "resnet50-imagenet"];
/// The steps of one forward/backward pass.
const PASSES: [&str; 3] = ["attack", "train", "infer"];
/// The steps that are whole training steps of a method (no PyTorch counterpart).
const OBJECTIVES: [&str; 7] = ["pgd-at", "trades", "robal", "reat", "taet", "pgd-at-awp", "trades-awp"];

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// Models, comma-separated: small-cnn, wrn-10-2, wrn-16-4, resnet18, wrn-34-10,
    /// preact-resnet18-64 (Tiny-ImageNet's 64x64 input), and the ImageNet forms
    /// resnet18-imagenet, resnet50-imagenet (224x224 input); the last three robal-rs only.
    #[arg(long, default_value = "small-cnn,wrn-10-2,wrn-16-4,resnet18")]
    model: String,
    /// Steps, comma-separated: attack, train, infer, and whole training steps of
    /// pgd-at, trades, robal, reat, taet, pgd-at-awp, trades-awp (as their cifar10-lt presets).
    #[arg(long, default_value = "attack,train,infer")]
    step: String,
    /// Batch size of the attack and train steps.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Batch size of the infer step.
    #[arg(long, default_value_t = 256)]
    infer_batch: usize,
    /// Time each step for at least this many seconds (after one warm-up step) ...
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// ... and at least this many steps.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Alternate robal-rs and PyTorch this many times.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// One JSON object per line instead of the table.
    #[arg(long)]
    json: bool,
    /// Use candle's own conv2d and BatchNorm ops instead of robal-models' kernels.
    #[arg(long)]
    candle_ops: bool,
    /// Python interpreter that has torch (the PyTorch side is skipped without it).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_pytorch: bool,
    /// Run the step this many times and report the RSS after the first 10 and at the end
    /// (a leak check) instead of timing it.
    #[arg(long)]
    soak: Option<usize>,
    /// Device of both sides: cpu, or cuda (needs the `cuda` feature; PyTorch then reports
    /// its peak GPU memory).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Internal: measure one model and step in this process.
    #[arg(long, hide = true)]
    single: bool,
}

fn list<'a>(flag: &str, value: &'a str, known: &[&str]) -> Result<Vec<&'a str>> {
    let items: Vec<&str> = value.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    for i in &items {
        if !known.contains(i) {
            bail!("{flag} {i:?}: expected a comma-separated list of {}", known.join(", "));
        }
    }
    Ok(items)
}

/// VmHWM (peak) or VmRSS (current) of this process in bytes, from /proc (0 elsewhere).
fn proc_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Architecture and input shape (C, H, W) of a bench model; FC head, 10 classes.
pub(crate) fn model(name: &str, dev: &Device) -> Result<(Classifier, (usize, usize, usize))> {
    let (arch, chw) = match name {
        "small-cnn" => (Arch::SmallCnn, (1, 28, 28)),
        "resnet18" => (Arch::ResNet18, (3, 32, 32)),
        "preact-resnet18-64" => (Arch::PreActResNet18, (3, 64, 64)),
        "resnet18-imagenet" => (Arch::ResNet18ImageNet, (3, 224, 224)),
        "resnet50-imagenet" => (Arch::ResNet50ImageNet, (3, 224, 224)),
        wrn => (wrn.parse::<Arch>()?, (3, 32, 32)),
    };
    let config = ModelConfig { arch, in_channels: chw.0, num_classes: 10, head: HeadConfig::FC, normalization: None };
    Ok((Classifier::new(config, dev, 0)?, chw))
}

/// Measure one (model, step) in this process; returns its JSON object.
fn single(a: &BenchArgs) -> Result<Value> {
    let (name, step) = (a.model.as_str(), a.step.as_str());
    let dev = crate::train::device(&a.device)?;
    let (mut m, (c, h, w)) = model(name, &dev)?;
    if a.candle_ops {
        m.set_kernels(robal_models::ops::Kernels::Candle);
    }
    let batch = if step == "infer" { a.infer_batch } else { a.batch };
    let x = Tensor::rand(0f32, 1.0, (batch, c, h, w), &dev)?;
    let y = Tensor::from_vec((0..batch as u32).map(|i| i % 10).collect::<Vec<_>>(), batch, &dev)?;
    let params = m.store().trainable("");
    let mut sgd = Sgd::new(params.clone(), 0.9, 2e-4);
    let view = EvalModel(&m);
    let method = OBJECTIVES.contains(&step).then(|| objective_step(step, &dev)).transpose()?;
    let mut seed = 0u64;
    // Seconds spent in AWP's probe, for the share of the step it costs.
    let probe_secs = std::cell::Cell::new(0f64);
    let mut run = || -> Result<()> {
        if let Some((objective, loss, awp)) = &method {
            seed += 1;
            let ctx =
                StepContext { model: &m, loss, weights: None, seed, budget: None, start: None, epoch_start: false };
            let x_adv = objective.craft(&ctx, &x, &y)?;
            let probe_start = Instant::now();
            let perturbation = awp
                .as_ref()
                .map(|a| awp::probe(a, objective.as_ref(), &ctx, &x, &y, x_adv.as_ref(), &params, &sgd, 0.1))
                .transpose()?;
            probe_secs.set(probe_secs.get() + probe_start.elapsed().as_secs_f64());
            let out = objective.outer(&ctx, &x, &y, x_adv.as_ref())?;
            objective.observe(&y, &out)?;
            sgd.step(&out.loss, 0.1)?;
            if let Some(p) = perturbation {
                p.restore()?;
            }
            return Ok(());
        }
        match step {
            "attack" => {
                let s = robal_attacks::model::loss_and_grad(&view, &x, &y, &robal_attacks::Loss::CrossEntropy)?;
                s.grad.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()?;
            }
            "train" => {
                let z = m.forward(&x, Mode::Train)?;
                let loss = robal::losses::cross_entropy_per_example(&z, &y)?.mean_all()?;
                sgd.step(&loss, 0.1)?;
            }
            _ => {
                m.forward(&x, Mode::Eval)?.sum_all()?.to_scalar::<f32>()?;
            }
        }
        Ok(())
    };
    run()?;
    if let Some(n) = a.soak {
        let mut after_10 = 0;
        for i in 1..n {
            run()?;
            if i == 10 {
                after_10 = proc_bytes("VmRSS:");
            }
        }
        return Ok(json!({"impl": impl_name(a), "model": name, "step": step, "batch": batch, "steps": n,
            "rss_after_10_bytes": after_10, "rss_end_bytes": proc_bytes("VmRSS:"), "peak_rss_bytes": proc_bytes("VmHWM:")}));
    }
    dev.synchronize()?;
    probe_secs.set(0.0);
    let start = Instant::now();
    let mut iters = 0;
    while iters < a.iters.max(1) || start.elapsed().as_secs_f64() < a.seconds {
        run()?;
        iters += 1;
    }
    dev.synchronize()?;
    let secs = start.elapsed().as_secs_f64();
    let mut row = json!({"impl": impl_name(a), "model": name, "step": step, "batch": batch, "iters": iters,
        "img_per_s": (batch * iters) as f64 / secs, "peak_rss_bytes": proc_bytes("VmHWM:")});
    if probe_secs.get() > 0.0 {
        row["awp_probe_share"] = json!(probe_secs.get() / secs);
    }
    Ok(row)
}

/// The objective, loss and AWP settings of `configs/cifar10-lt-<method>.toml`, with
/// CIFAR-10-LT's class counts (r = 0.02).
fn objective_step(method: &str, dev: &Device) -> Result<(Box<dyn Objective>, TrainLoss, Option<AwpConfig>)> {
    let preset = if method == "robal" { "cifar10-lt-robal-n".to_string() } else { format!("cifar10-lt-{method}") };
    let path = crate::workspace::preset(&preset)?;
    let cfg = TrainConfig::load(&path, &[])?;
    let counts = robal_data::Profile::Exp { ratio: 0.02 }.counts(10, 5000.0)?;
    Ok((cfg.objective(), TrainLoss::new(cfg.loss.clone(), &counts, dev)?, cfg.awp))
}

fn impl_name(a: &BenchArgs) -> &'static str {
    if a.candle_ops {
        "candle-ops"
    } else {
        "robal-rs"
    }
}

/// Run `cmd` and parse the last line of its standard output as JSON.
fn json_line(mut cmd: Command, what: &str) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!("{what} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).with_context(|| format!("{what} printed no JSON"))?;
    serde_json::from_str(line).with_context(|| format!("{what} printed {line:?}"))
}

fn torch_available(python: &str) -> bool {
    Command::new(python).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this xtask build has debug assertions (`cargo xtask`); the numbers to report come \
             from the release build: `cargo xtask-release bench ...`"
        );
    }
    if a.single {
        println!("{}", single(&a)?);
        return Ok(());
    }
    let models = list("--model", &a.model, &MODELS)?;
    let known: Vec<&str> = PASSES.into_iter().chain(OBJECTIVES).collect();
    let steps = list("--step", &a.step, &known)?;
    let torch = !a.no_pytorch && a.soak.is_none() && torch_available(&a.python);
    if !a.no_pytorch && a.soak.is_none() && !torch && !a.json {
        println!("(PyTorch side skipped: `{} -c \"import torch\"` failed; pass --python PATH)", a.python);
    }
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let script = crate::workspace::root().join("bench/pytorch_reference.py");
    let mut rows: Vec<Value> = Vec::new();
    for &model in &models {
        for &step in &steps {
            for round in 0..a.rounds.max(1) {
                let mut ours = Command::new(&exe);
                ours.args(["bench", "--single", "--model", model, "--step", step]);
                ours.args(["--batch", &a.batch.to_string(), "--infer-batch", &a.infer_batch.to_string()]);
                ours.args(["--seconds", &a.seconds.to_string(), "--iters", &a.iters.to_string()]);
                ours.args(["--device", &a.device]);
                if a.candle_ops {
                    ours.arg("--candle-ops");
                }
                if let Some(n) = a.soak {
                    ours.args(["--soak", &n.to_string()]);
                }
                let mut sides = vec![json_line(ours, &format!("robal-rs {model} {step}"))?];
                if torch && !ROBAL_ONLY.contains(&model) && !OBJECTIVES.contains(&step) {
                    let mut py = Command::new(&a.python);
                    py.arg(&script).args(["--model", model, "--step", step]);
                    py.args(["--batch", &a.batch.to_string(), "--infer-batch", &a.infer_batch.to_string()]);
                    py.args(["--seconds", &a.seconds.to_string(), "--iters", &a.iters.to_string()]);
                    py.args(["--device", &a.device]);
                    sides.push(json_line(py, &format!("PyTorch {model} {step}"))?);
                }
                for mut v in sides {
                    v["round"] = json!(round + 1);
                    if a.json {
                        println!("{v}");
                    }
                    rows.push(v);
                }
            }
        }
    }
    if !a.json {
        print!("{}", table(&rows, a.soak.is_some()));
    }
    Ok(())
}

/// min-max over rounds of a field, formatted with `f`.
fn span(rows: &[&Value], field: &str, f: impl Fn(f64) -> String) -> String {
    let v: Vec<f64> = rows.iter().filter_map(|r| r[field].as_f64()).collect();
    let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
    match v.len() {
        0 => "-".into(),
        _ if f(lo) == f(hi) => f(lo),
        _ => format!("{}-{}", f(lo), f(hi)),
    }
}

fn table(rows: &[Value], soak: bool) -> String {
    let mb = |b: f64| format!("{:.0}", b / 1e6);
    let rate = |r: f64| if r >= 100.0 { format!("{r:.0}") } else { format!("{r:.1}") };
    let mut s = if soak {
        "| model | step | batch | steps | RSS after 10 (MB) | RSS at end (MB) | peak (MB) |\n|---|---|---:|---:|---:|---:|---:|\n".to_string()
    } else {
        "| model | step | batch | ours img/s | ours peak MB | PyTorch img/s | PyTorch peak MB | ratio |\n|---|---|---:|---:|---:|---:|---:|---:|\n"
            .to_string()
    };
    let mut keys: Vec<(String, String)> = Vec::new();
    for r in rows {
        let k = (r["model"].as_str().unwrap_or("").to_string(), r["step"].as_str().unwrap_or("").to_string());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (model, step) in keys {
        let (torch, ours): (Vec<&Value>, Vec<&Value>) = rows
            .iter()
            .filter(|r| r["model"] == model.as_str() && r["step"] == step.as_str())
            .partition(|r| r["impl"] == "pytorch");
        let batch = ours.first().and_then(|r| r["batch"].as_u64()).unwrap_or(0);
        if soak {
            let steps = ours.first().and_then(|r| r["steps"].as_u64()).unwrap_or(0);
            s += &format!(
                "| {model} | {step} | {batch} | {steps} | {} | {} | {} |\n",
                span(&ours, "rss_after_10_bytes", mb),
                span(&ours, "rss_end_bytes", mb),
                span(&ours, "peak_rss_bytes", mb)
            );
            continue;
        }
        // Best round of each side (the machine's noise only ever slows a run down).
        let best = |v: &[&Value]| v.iter().filter_map(|r| r["img_per_s"].as_f64()).reduce(f64::max);
        let ratio = match (best(&ours), best(&torch)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        s += &format!(
            "| {model} | {step} | {batch} | {} | {} | {} | {} | {ratio} |\n",
            span(&ours, "img_per_s", rate),
            span(&ours, "peak_rss_bytes", mb),
            span(&torch, "img_per_s", rate),
            span(&torch, "peak_rss_bytes", mb)
        );
    }
    s
}
