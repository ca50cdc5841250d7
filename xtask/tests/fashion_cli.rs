//! Fashion-MNIST-LT end to end from Debian's `dataset-fashion-mnist` (CI installs it;
//! elsewhere the tests say they were skipped, and fail under CI if it is missing):
//! `cargo xtask data info` prints the long tail, and every `fashion-mnist-lt-*` preset
//! trains briefly on a slice of it.

use std::path::Path;
use std::process::Command;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

fn installed() -> bool {
    if Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI installs dataset-fashion-mnist (.ci/run), but it is missing");
    eprintln!("SKIPPED: apt-get install dataset-fashion-mnist to run the Fashion-MNIST-LT tests");
    false
}

#[test]
fn data_info_prints_the_long_tail() {
    if !installed() {
        return;
    }
    let out = xtask().args(["data", "info", "fashion-mnist-lt"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("16796 images of shape"), "{text}");
    assert!(text.contains("T-shirt/top") && text.contains("6000") && text.contains("Ankle boot"), "{text}");
    assert!(text.contains("imbalance ratio n_min/n_max = 0.0200"), "{text}");
    let test = xtask().args(["data", "info", "fashion-mnist-lt", "--split", "test"]).output().unwrap();
    assert!(String::from_utf8_lossy(&test.stdout).contains("10000 images"));
    let missing = xtask().args(["data", "info", "fashion-mnist-lt:/nonexistent"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && err.contains("apt-get install dataset-fashion-mnist"), "{err}");
}

#[test]
fn every_fashion_preset_trains_on_a_slice() {
    if !installed() {
        return;
    }
    let presets: Vec<String> = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string))
        .filter(|n| n.starts_with("fashion-mnist-lt-"))
        .collect();
    assert!(presets.len() >= 8, "{presets:?}");
    let tmp = tempfile::tempdir().unwrap();
    for p in presets {
        let out = xtask()
            .args(["train", "--preset", &p, "--epochs", "1", "--run-dir"])
            .arg(tmp.path().join(&p))
            .args(["--set", "data.limit=256", "--set", "eval.limit=20", "--set", "eval.every=0"])
            .args(["--set", "train.clean_epochs=0", "--set", "attack.steps=1"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{p}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("20 images evaluated") && text.contains("class 9"), "{p}: {text}");
    }
}
