//! Training from a TOML string: PGD-AT of the small CNN on the embedded MNIST-LT set
//! (1,236 digits) for 5 epochs, into a temporary run folder (config, metrics.jsonl,
//! checkpoints, model.safetensors), then its quick clean / PGD accuracy. Every field
//! not given takes its default; `configs/*.toml` are complete presets of the same shape.
//!
//!     cargo run --release -p robal --example train_from_toml

use candle_core::Device;
use robal::{train, RunOptions, TrainConfig};

const CONFIG: &str = r#"
[data]
name = "mnist-lt"

[model]
arch = "small-cnn"
head = { kind = "fc" }

[loss]
kind = "ce"

[train]
mode = "pgd-at"
epochs = 5
batch_size = 64
lr = 0.1
milestones = []

[attack]
eps = 0.1
step_size = 0.04
steps = 3

[eval]
eps = 0.1
step_size = 0.01
steps = 10
limit = 200
"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cfg = TrainConfig::from_toml(CONFIG, "the example's TOML", &[])?;
    let dir = tempfile::tempdir()?;
    let opts = RunOptions {
        run_dir: dir.path().join("run"),
        resume: false,
        progress: true,
        stop_after: None,
        overwrite: false,
    };
    let summary = train(&cfg, &opts, &Device::Cpu)?;
    println!(
        "{} epochs at {:.0} img/s; clean {:.1}%, {} {:.1}% on {} test images",
        summary.epochs_run,
        summary.img_per_s,
        100.0 * summary.eval.clean.overall,
        summary.eval.attack,
        100.0 * summary.eval.pgd.overall,
        summary.eval.images
    );
    Ok(())
}
