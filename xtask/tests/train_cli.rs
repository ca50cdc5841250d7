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

/// A write that fails (here a file-size limit, `ulimit -f`, which root cannot bypass as
/// it can a read-only folder) is an error naming the file, leaves no partial file, keeps
/// the last good checkpoint, and a resume finishes the run with the uninterrupted run's
/// weights. The limit is chosen from the uninterrupted run's files so that the momentum
/// and checkpoint files fit and the final model (a little larger: it carries the eval
/// head and the config) does not; the test checks that this is so.
#[test]
fn a_failed_write_keeps_the_last_good_state_and_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let out = xtask().args(["train", "--run-dir"]).arg(&a).args(SETTINGS).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let model = size(&a.join("model.safetensors"));
    let largest_other = size(&a.join("checkpoint.safetensors")).max(size(&a.join("optimizer-6.safetensors")));
    let limit_kib = (model - 1) / 1024; // bash's ulimit -f counts 1024-byte blocks
    assert!(
        largest_other <= limit_kib * 1024,
        "the checkpoint ({largest_other} B) must fit under the limit ({limit_kib} KiB) that the model ({model} B) exceeds"
    );

    let script = format!(
        "ulimit -f {limit_kib} && exec \"$0\" train --run-dir {} {}",
        b.display(),
        SETTINGS.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(" ")
    );
    let out = Command::new("bash")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["-c", &script, env!("CARGO_BIN_EXE_xtask")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "an error exit, not a signal: {err}");
    assert!(err.contains("model.safetensors") && err.contains("File too large"), "{err}");
    let left: Vec<String> =
        std::fs::read_dir(&b).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!left.iter().any(|n| n.contains(".tmp")), "a partial file was left: {left:?}");
    assert!(!b.join("model.safetensors").exists());
    assert_eq!(
        weights(&a.join("checkpoint.safetensors")),
        weights(&b.join("checkpoint.safetensors")),
        "the last good checkpoint is intact"
    );

    let out = xtask().args(["train", "--resume", "--run-dir"]).arg(&b).args(SETTINGS).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(weights(&a.join("model.safetensors")), weights(&b.join("model.safetensors")));
}
