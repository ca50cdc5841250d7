//! `cargo xtask train`: train a preset (default: RoBal on the embedded MNIST-LT) and evaluate it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use robal::train::{train, RunOptions};
use robal::TrainConfig;

#[derive(Args)]
pub struct TrainArgs {
    /// Preset name in configs/ (without .toml).
    #[arg(long, default_value = "mnist-lt-robal")]
    preset: String,
    /// A config file instead of a preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Override any field: --set train.lr=0.05 --set loss.m=0.2 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run folder (default <workspace>/runs/<preset>).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the run the folder holds (interrupted or finished) from its last checkpoint.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Move the run the folder holds aside (into RUN_DIR/replaced-<time>/) and start over.
    #[arg(long)]
    overwrite: bool,
    /// Stop after this many epochs (the run can be resumed later).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// Device: cpu, or cuda (needs the `cuda` feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn device(name: &str) -> Result<candle_core::Device> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => candle_core::Device::new_cuda(0).context(if cfg!(feature = "cuda") {
            "--device cuda: no usable CUDA device 0 (is the NVIDIA driver's libcuda.so.1 on the library path?)"
        } else {
            "--device cuda: this binary was built without CUDA (build with --features cuda)"
        }),
        other => bail!("--device {other:?}: expected cpu or cuda"),
    }
}

pub fn run(a: TrainArgs) -> Result<()> {
    let path = match &a.config {
        Some(c) => crate::workspace::resolve(c),
        None => crate::workspace::preset(&a.preset)?,
    };
    let mut overrides = a.set.clone();
    if let Some(e) = a.epochs {
        overrides.push(format!("train.epochs={e}"));
    }
    let cfg = TrainConfig::load(&path, &overrides)?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
    let run_dir = a.run_dir.clone().unwrap_or_else(|| crate::workspace::run_dir(&name));
    let dev = device(&a.device)?;
    println!(
        "training {} ({} mode, {} epochs) -> {}",
        path.display(),
        cfg.train.mode,
        cfg.train.epochs,
        run_dir.display()
    );
    let opts = RunOptions {
        run_dir: run_dir.clone(),
        resume: a.resume,
        progress: true,
        stop_after: a.stop_after,
        overwrite: a.overwrite,
    };
    let summary = train(&cfg, &opts, &dev).with_context(|| format!("training {}", path.display()))?;
    if summary.finished_before {
        println!(
            "{} already holds this run, finished: its recorded evaluation follows (nothing retrained; \
             --overwrite starts over)",
            run_dir.display()
        );
    }
    let e = &summary.eval;
    if let Some(sel) = &summary.selection {
        println!("\nkept epoch {} in best.safetensors: {} = {:.3}", sel.epoch, sel.criterion, sel.value);
    }
    println!("\n{} images evaluated, attack {} (eps {})", e.images, e.attack, cfg.eval.eps);
    println!("{:<10} {:>8} {:>8}", "", "clean", e.attack);
    println!("{:<10} {:>7.1}% {:>7.1}%", "overall", 100.0 * e.clean.overall, 100.0 * e.pgd.overall);
    for ((g, c), (_, p)) in e.clean.groups.iter().zip(&e.pgd.groups) {
        println!("{g:<10} {:>7.1}% {:>7.1}%", 100.0 * c, 100.0 * p);
    }
    for (k, (c, p)) in e.clean.per_class.iter().zip(&e.pgd.per_class).enumerate() {
        println!("class {k:<4} {:>7.1}% {:>7.1}%", 100.0 * c, 100.0 * p);
    }
    if !summary.finished_before {
        println!("\ntraining throughput {:.0} img/s", summary.img_per_s);
    }
    println!("run folder {}", summary.run_dir.display());
    Ok(())
}
