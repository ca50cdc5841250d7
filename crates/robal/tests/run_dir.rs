//! A run folder is never silently replaced: a finished identical run is reported, any
//! other run in the folder is refused (naming what it holds and how the configs
//! differ), `overwrite` moves the old run aside, and the folder's lock admits one
//! holder at a time.

use std::path::{Path, PathBuf};

use candle_core::Device;
use robal::run_dir::config_differences;
use robal::train::{train, RunOptions};
use robal::{RunDir, RunState, TrainConfig, TrainError};

fn preset(extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> =
        ["data.limit=64", "train.batch_size=32", "attack.steps=1", "eval.limit=16", "eval.steps=1", "train.epochs=2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-lt-pgd-at.toml");
    TrainConfig::load(&path, &o).unwrap()
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions { run_dir: dir.to_path_buf(), resume: false, progress: false, stop_after: None, overwrite: false }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file() && e.file_name() != "run.lock")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn a_finished_run_is_reported_not_retrained_and_another_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = preset(&[]);
    let first = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
    assert!(!first.finished_before);
    assert_eq!(RunDir::new(dir.path()).state(), RunState::Finished);
    let before = snapshot(dir.path());

    // The same config again: the recorded evaluation, nothing written.
    let again = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
    assert!(again.finished_before);
    assert_eq!(again.epochs_run, 0);
    assert_eq!(again.eval.clean.overall, first.eval.clean.overall);
    assert_eq!(again.eval.pgd.per_class, first.eval.pgd.per_class);
    assert_eq!(snapshot(dir.path()), before);

    // Another config: refused, naming the folder, what it holds, the difference and the choices.
    let other = preset(&["train.lr=0.02"]);
    let e = train(&other, &opts(dir.path()), &Device::Cpu).unwrap_err();
    assert!(matches!(e, TrainError::RunExists { .. }), "{e}");
    let msg = e.to_string();
    for part in
        [&dir.path().display().to_string(), "finished, 2 epochs", "train.lr: 0.1 -> 0.02", "--resume", "--overwrite"]
    {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    assert_eq!(snapshot(dir.path()), before, "a refused run leaves the folder as it was");

    // --overwrite moves the old run aside, whole, and starts over.
    let replaced = train(&other, &RunOptions { overwrite: true, ..opts(dir.path()) }, &Device::Cpu).unwrap();
    assert_eq!(replaced.epochs_run, 2);
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(snapshot(&aside[0]), before, "the old run is kept intact");
    assert!(std::fs::read_to_string(dir.path().join("config.toml")).unwrap().contains("lr = 0.02"));
}

#[test]
fn an_unfinished_run_is_refused_without_resume_and_continued_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = preset(&[]);
    train(&cfg, &RunOptions { stop_after: Some(1), ..opts(dir.path()) }, &Device::Cpu).unwrap();
    assert_eq!(RunDir::new(dir.path()).state(), RunState::Unfinished { epochs_done: 1 });
    let msg = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap_err().to_string();
    assert!(msg.contains("unfinished, 1 of 2 epochs checkpointed"), "{msg}");
    assert!(!msg.contains("another config"), "same config, no differences listed: {msg}");
    let rest = train(&cfg, &RunOptions { resume: true, ..opts(dir.path()) }, &Device::Cpu).unwrap();
    assert_eq!(rest.epochs_run, 1);
    // Resuming a finished run reports it.
    let done = train(&cfg, &RunOptions { resume: true, ..opts(dir.path()) }, &Device::Cpu).unwrap();
    assert!(done.finished_before);
}

#[test]
fn the_lock_admits_one_holder_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::new(dir.path().join("run"));
    let held = run.lock("training").unwrap();
    let e = run.lock("evaluation").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TrainError::Busy { .. }), "{msg}");
    assert!(msg.contains(&format!("training by pid {}", std::process::id())) && msg.contains("in use"), "{msg}");
    // Training into the held folder is refused before anything is read or written.
    let e = train(&preset(&[]), &opts(run.path()), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("in use"), "{e}");
    assert!(!run.config().exists());
    drop(held);
    let again = run.lock("evaluation").unwrap();
    drop(again);
}

#[test]
fn config_differences_name_each_changed_field() {
    let a = "[train]\nlr = 0.1\nepochs = 2\n[data]\nname = \"mnist-lt\"\n";
    let b = "[train]\nlr = 0.05\nepochs = 2\nseed = 3\n[data]\nname = \"mnist-lt\"\n";
    assert_eq!(config_differences(a, b), vec!["train.lr: 0.1 -> 0.05".to_string(), "train.seed: (absent) -> 3".into()]);
    assert!(config_differences(a, a).is_empty());
}
