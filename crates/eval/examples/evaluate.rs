//! robal-eval as a library: evaluate a checkpoint with a custom attack list and
//! threat model, print the paper-style table and the audit, and write the report.
//!
//! `cargo run --release -p robal-eval --example evaluate -- CHECKPOINT [OUT_DIR]`
//!
//! CHECKPOINT is a run folder or a robal-rs `.safetensors` whose metadata names its
//! training data (what `cargo xtask train` writes), e.g. `runs/mnist-lt-robal`.

use candle_core::Device;
use robal_eval::{
    evaluate, load_model, load_test_set, write_outputs, AttackSettings, AttackSpec, AuditConfig, DataSpec, EvalOptions,
    ModelFlags,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let checkpoint = args.next().ok_or("usage: evaluate CHECKPOINT [OUT_DIR]")?;
    let out = args.next().unwrap_or_else(|| "eval-example".into());

    let loaded = load_model(&checkpoint, &ModelFlags::default(), None, true, &Device::Cpu)?;
    // 200 evenly spaced test images of the set the model was trained on.
    let (test, data) = load_test_set(&DataSpec::FromCheckpoint, &loaded, 200)?;
    let threat =
        loaded.train_config.as_ref().map(|c| (c.eval.eps, c.eval.step_size)).unwrap_or((8.0 / 255.0, 2.0 / 255.0));
    let opts = EvalOptions {
        attacks: vec![AttackSpec::Clean, AttackSpec::Pgd, AttackSpec::Cw, AttackSpec::ApgdDlr],
        settings: AttackSettings { eps: threat.0, step_size: threat.1, steps: 20, ..Default::default() },
        audit: Some(AuditConfig { limit: 50, ..Default::default() }),
        batch: 100,
        progress: true,
        ..Default::default()
    };
    let report = evaluate(&loaded.model, &test, &checkpoint, &data, &opts)?;
    println!("{}", report.summary_table());
    for flag in &report.audit.flags {
        println!("audit {:?} [{}]: {}", flag.severity, flag.check, flag.message);
    }
    for path in write_outputs(&report, std::path::Path::new(&out), None)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
