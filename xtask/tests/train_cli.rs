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

/// Two trainings into one folder: the second is refused at once, naming the first's
/// pid; SIGKILL on the first leaves no stale lock (the kernel drops the flock), so a
/// new process continues the run.
#[test]
fn a_second_process_is_refused_and_a_killed_holder_leaves_no_stale_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let long = ["--set", "data.limit=192", "--set", "attack.steps=1", "--set", "eval.limit=16", "--epochs", "500"];
    let mut first = xtask().args(["train", "--run-dir"]).arg(&dir).args(long).spawn().unwrap();
    let holder = format!("pid {}", first.id());
    let start = Instant::now();
    while !std::fs::read_to_string(dir.join("run.lock")).is_ok_and(|t| t.contains(&holder)) {
        assert!(start.elapsed() < Duration::from_secs(120), "the first training never took the lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    let second = xtask().args(["train", "--resume", "--run-dir"]).arg(&dir).args(long).output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "the second training ran: {err}");
    assert!(err.contains("is in use") && err.contains(&holder) && err.contains(&dir.display().to_string()), "{err}");
    first.kill().unwrap();
    first.wait().unwrap();
    let third =
        xtask().args(["train", "--resume", "--stop-after", "1", "--run-dir"]).arg(&dir).args(long).output().unwrap();
    assert!(third.status.success(), "{}", String::from_utf8_lossy(&third.stderr));
}

/// The README's first command twice in a row: the second reports the finished run.
#[test]
fn training_the_same_run_twice_reports_it_the_second_time() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let first = xtask().args(["train", "--run-dir"]).arg(&dir).args(SETTINGS).output().unwrap();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let model = std::fs::read(dir.join("model.safetensors")).unwrap();
    let second = xtask().args(["train", "--run-dir"]).arg(&dir).args(SETTINGS).output().unwrap();
    let out = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert!(out.contains("already holds this run, finished"), "{out}");
    assert!(out.contains("pgd-2 "), "the recorded evaluation is printed: {out}");
    assert_eq!(std::fs::read(dir.join("model.safetensors")).unwrap(), model, "nothing retrained");
    let other = xtask()
        .args(["train", "--run-dir"])
        .arg(&dir)
        .args(SETTINGS)
        .args(["--set", "train.lr=0.05"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("train.lr: 0.1 -> 0.05") && err.contains("--overwrite"), "{err}");
}
