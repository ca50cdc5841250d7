//! `cargo xtask gpu-check` on the CPU side: the CPU compared with itself passes every
//! check with zero error, and a perturbed copy fails them and exits non-zero. (The CUDA
//! side needs a GPU: `cargo xtask gpu-check` there, built with `--features cuda`.)

use std::process::Command;

fn gpu_check(extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["gpu-check", "--device", "cpu", "--models", "small-cnn", "--batch", "8"])
        .args(extra)
        .output()
        .expect("xtask runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn cpu_against_itself_passes_and_a_perturbed_copy_fails() {
    let (ok, text) = gpu_check(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("all 7 checks within tolerance"), "{text}");
    for check in ["logits", "input gradient (rel. L2)", "after one SGD step", "PGD-20 robust accuracy"] {
        assert!(text.contains(&format!("| small-cnn | {check} | 0.00e0 |")), "{check}: {text}");
    }
    let (ok, text) = gpu_check(&["--perturb", "0.01"]);
    assert!(!ok, "a perturbed model must fail: {text}");
    assert!(text.contains("MISMATCH") && text.contains("checks mismatched between cpu and cpu"), "{text}");
}

/// Run `scripts/gpu-run.sh` in its CPU mode with `env`, from the workspace root.
fn gpu_run(out: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/gpu-run.sh")).arg(env!("CARGO_BIN_EXE_xtask")).arg(out).arg("--cpu");
    cmd.current_dir(&root)
        .env("GPU_RUN_CHECK_MODELS", "small-cnn")
        .env("GPU_RUN_BENCH_MODELS", "small-cnn")
        .env("GPU_RUN_BATCH", "4")
        .env("GPU_RUN_SECONDS", "0.05");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("bash runs");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// The GPU run's script, end to end on the CPU (only the device itself is left untested
/// here): every step leaves its file, the table holds the check and one bench row per
/// step; a mismatching check stops the run before the benches, with its table saved.
#[test]
fn gpu_run_script_writes_its_table_and_stops_at_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("good");
    let (ok, text) = gpu_run(&out, &[]);
    assert!(ok, "{text}");
    for file in ["machine.txt", "ldd.txt", "ptx.txt", "gpu-check.md", "bench.jsonl", "gpu-run.md"] {
        assert!(out.join(file).is_file(), "{file} missing: {text}");
    }
    let table = std::fs::read_to_string(out.join("gpu-run.md")).unwrap();
    assert!(table.contains("| small-cnn | PGD-20 robust accuracy | 0.00e0 |"), "{table}");
    for step in ["attack", "train", "infer"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| small-cnn | {step} |")))
            .unwrap_or_else(|| panic!("{step}: {table}"));
        let ours: f64 = row.split('|').nth(4).unwrap().trim().parse().unwrap_or_else(|_| panic!("{row}"));
        assert!(ours > 0.0, "{row}");
    }
    assert!(!out.join("failed.txt").exists());

    let bad = dir.path().join("bad");
    let (ok, text) = gpu_run(&bad, &[("GPU_RUN_CHECK_ARGS", "--perturb 0.01")]);
    assert!(!ok, "a mismatch must fail the run: {text}");
    let why = std::fs::read_to_string(bad.join("failed.txt")).unwrap();
    assert!(why.contains("gpu-check exited 1"), "{why}");
    assert!(std::fs::read_to_string(bad.join("gpu-check.md")).unwrap().contains("MISMATCH"));
    assert!(!bad.join("bench.jsonl").exists(), "the benches must not run after a mismatch");

    let missing = dir.path().join("no-such-binary");
    let o = Command::new("bash")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/gpu-run.sh"))
        .arg(&missing)
        .arg(dir.path().join("missing"))
        .arg("--cpu")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no-such-binary: no such file"));
}
