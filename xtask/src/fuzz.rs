//! `cargo xtask fuzz --cases N`: every reader's property tests at N cases each (CI runs a
//! small fixed number), in release, each case under a time limit that catches hangs
//! (tests/support/fuzz.rs), with the cases run and the wall time per suite.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

/// The property-test suites: (package, cargo's target selection, what it feeds).
pub const SUITES: [(&str, &str, &str); 5] = [
    ("robal-data", "--test fuzz_readers", "CIFAR batch files, CIFAR archives, .npz, IDX (raw and gzip)"),
    (
        "robal-models",
        "--test fuzz_checkpoints",
        "checkpoints (safetensors: arbitrary bytes, damaged headers and data) and PyTorch zips (damaged real file)",
    ),
    ("robal", "--test fuzz_config", "TOML configs and --set overrides"),
    (
        "robal-eval",
        "--test fuzz_files",
        "evaluation reports (arbitrary and damaged real ones), shard files and saved progress (eval_state.json)",
    ),
    ("xtask", "--bin xtask fuzz_plans", "study plans (damaged real one)"),
];

#[derive(Args)]
pub struct FuzzArgs {
    /// Cases per property.
    #[arg(long, default_value_t = 10_000)]
    cases: u32,
    /// Time limit of one case, in seconds (a longer case fails as a hang).
    #[arg(long, default_value_t = 10.0)]
    case_seconds: f64,
}

pub fn run(a: FuzzArgs) -> Result<()> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (package, test, feeds) in SUITES {
        println!("== {package} {test}: {} cases per property ({feeds})", a.cases);
        let start = Instant::now();
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(crate::workspace::root())
            .args(["test", "--release", "--locked", "-p", package])
            .args(test.split_whitespace())
            .env("ROBAL_FUZZ_CASES", a.cases.to_string())
            .env("ROBAL_FUZZ_CASE_SECONDS", a.case_seconds.to_string())
            .output()
            .with_context(|| format!("running cargo test -p {package} {test}"))?;
        let secs = start.elapsed().as_secs_f64();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let properties = stdout.lines().filter(|l| l.starts_with("test ") && l.contains(" ... ")).count();
        print!("{stdout}");
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            failed.push(format!("{package} {test}"));
        }
        rows.push(format!(
            "| {package} | {test} | {properties} | {} | {secs:.0} | {} |",
            properties as u64 * a.cases as u64,
            if out.status.success() { "ok" } else { "FAILED" }
        ));
    }
    println!(
        "\n| package | suite | properties | cases | wall s (build included) | result |\n|---|---|---:|---:|---:|---|"
    );
    rows.iter().for_each(|r| println!("{r}"));
    if !failed.is_empty() {
        bail!("fuzzing found problems in: {}", failed.join(", "));
    }
    Ok(())
}
