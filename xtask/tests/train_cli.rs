//! `cargo xtask train` killed mid-run with SIGKILL, then resumed, reaches the same
//! final weights as an uninterrupted run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

const SETTINGS: [&str; 14] = [
    "--set",
    "data.limit=192",
    "--set",
    "train.batch_size=32",
    "--set",
    "attack.steps=1",
    "--set",
    "eval.limit=32",
    "--set",
    "eval.steps=2",
    "--epochs",
    "6",
    "--set",
    "train.milestones=[4]",
];

fn weights(path: &Path) -> Vec<(String, Vec<u32>)> {
    let t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<u32>)> = t
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

#[test]
fn killed_run_resumes_to_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let out = xtask().args(["train", "--run-dir"]).arg(&a).args(SETTINGS).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pgd-2 "), "{}", String::from_utf8_lossy(&out.stdout));

    let mut child = xtask().args(["train", "--run-dir"]).arg(&b).args(SETTINGS).spawn().unwrap();
    let ckpt = b.join("checkpoint.safetensors");
    let start = Instant::now();
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    assert!(!b.join("model.safetensors").exists(), "the run finished before it could be killed");
    let out = xtask().args(["train", "--resume", "--run-dir"]).arg(&b).args(SETTINGS).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(weights(&a.join("model.safetensors")), weights(&b.join("model.safetensors")));
}
