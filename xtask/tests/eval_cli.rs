//! `cargo xtask eval` end to end: a tiny model trained for a few steps on the real
//! CIFAR-10 records of `../shared/data/cifar-10-partial`, evaluated with the full default
//! suite (and the standard AutoAttack), must produce a well-formed report, plots and
//! audit; bad input must be named.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use robal_data::Dataset;
use serde_json::Value;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

fn shared_cifar(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ROBAL_CIFAR10_PARTIAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/cifar-10-partial"));
    if dir.join("test_batch_first1017.bin").is_file() {
        Some(dir)
    } else {
        eprintln!("SKIPPED {test}: real CIFAR-10 records not found at {} (set ROBAL_CIFAR10_PARTIAL)", dir.display());
        None
    }
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Train the small CNN with PGD-AT for one short epoch on a long-tailed subset of the
/// 1,017 real training records; returns the run folder.
fn train_tiny(root: &Path, cifar: &Path) -> PathBuf {
    let run = root.join("run");
    let train_file = format!("data.train_file={:?}", cifar.join("data_batch_1_first1017.bin").display().to_string());
    let test_file = format!("data.test_file={:?}", cifar.join("test_batch_first1017.bin").display().to_string());
    let out = xtask()
        .args(["train", "--preset", "cifar10-lt-pgd-at", "--run-dir"])
        .arg(&run)
        .args(["--epochs", "2", "--set", "train.milestones=[1]", "--set", "model.arch=\"small-cnn\""])
        .args(["--set", "train.batch_size=32", "--set", "attack.steps=1", "--set", "eval.limit=16"])
        .args(["--set", "eval.steps=2", "--set", "eval.every=1", "--set", "eval.quick_limit=16"])
        .args(["--set", &train_file, "--set", &test_file])
        .output()
        .unwrap();
    ok(&out);
    assert!(run.join("model.safetensors").is_file() && run.join("metrics.jsonl").is_file());
    run
}

fn assert_png(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    assert!(bytes.len() > 5_000, "{} is suspiciously small", path.display());
}

#[test]
fn tiny_cifar_model_gets_a_full_report() {
    let Some(cifar) = shared_cifar("tiny_cifar_model_gets_a_full_report") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let run = train_tiny(tmp.path(), &cifar);

    // The default suite on 40 test images of the set the model was trained on (read from
    // the checkpoint's own config), written into the run folder.
    let stdout = ok(&xtask()
        .arg("eval")
        .arg(&run)
        .args(["--limit", "30", "--batch", "15", "--audit-limit", "15", "--steps", "5"])
        .output()
        .unwrap());
    for row in ["| clean |", "| fgsm |", "| pgd-5 |", "| mim-5 |", "| cw-5 |", "| worst-case |"] {
        assert!(stdout.contains(row), "no {row} row in:\n{stdout}");
    }
    let r = json(&run.join("report.json"));
    assert_eq!(r["images"], 30);
    let attacks = r["attacks"].as_array().unwrap();
    let names: Vec<&str> = attacks.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(names[0], "clean");
    let labels: Vec<u32> =
        robal_data::cifar::read_batch_file(cifar.join("test_batch_first1017.bin"), robal_data::Cifar::Cifar10)
            .unwrap()
            .labels()
            .to_vec();
    let picked: Vec<u32> = (0..30).map(|i| labels[i * 1017 / 30]).collect();
    let mut worst = vec![true; 30];
    for a in attacks.iter().chain(std::iter::once(&r["worst_case"])) {
        let correct: Vec<bool> = a["correct"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
        assert_eq!(correct.len(), 30);
        // accuracy and per-class recall agree with the per-example flags.
        let acc = correct.iter().filter(|&&c| c).count() as f64 / 30.0;
        assert!((a["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12, "{}", a["name"]);
        let per_class = a["per_class"].as_array().unwrap();
        assert_eq!(per_class.len(), 10);
        for (c, v) in per_class.iter().enumerate() {
            let members: Vec<bool> = (0..30).filter(|&i| picked[i] == c as u32).map(|i| correct[i]).collect();
            let want = members.iter().filter(|&&x| x).count() as f64 / members.len() as f64;
            assert!((v.as_f64().unwrap() - want).abs() < 1e-12, "{} class {c}", a["name"]);
        }
        if a["name"] != "worst-case" {
            worst.iter_mut().zip(&correct).for_each(|(w, c)| *w &= c);
        }
        // Attacks never raise accuracy above clean.
        assert!(a["accuracy"].as_f64().unwrap() <= r["attacks"][0]["accuracy"].as_f64().unwrap() + 1e-12);
    }
    let wc: Vec<bool> = r["worst_case"]["correct"].as_array().unwrap().iter().map(|v| v.as_bool().unwrap()).collect();
    assert_eq!(wc, worst, "worst case = survives every attack");
    assert!(r["audit"]["flags"].is_array());
    assert_eq!(r["audit"]["images"], 15);
    assert_eq!(r["audit"]["scale_sweep"].as_array().unwrap().len(), 5);
    let md = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(md.contains("## Audit") && md.contains("## Per class"), "{md}");
    for png in ["per_class.png", "curves.png"] {
        assert_png(&run.join(png));
    }
    assert!(std::fs::read_to_string(run.join("per_class.svg")).unwrap().starts_with("<svg"));

    // Any CIFAR batch file, deterministic PGD (no random start), the full AutoAttack and
    // post-hoc boundary adjustment, written to --out: two runs agree exactly.
    let bin = format!("cifar10-bin:{}", cifar.join("test_batch_first1017.bin").display());
    let args = |out: &Path| {
        let mut c = xtask();
        c.arg("eval").arg(run.join("model.safetensors")).args(["--data", &bin, "--limit", "8", "--batch", "8"]);
        c.args(["--attacks", "pgd,aa", "--random-start", "off", "--steps", "5", "--no-audit"]);
        c.args(["--head", "posthoc", "--tau-p", "1.5", "--out"]).arg(out);
        c
    };
    let (o1, o2) = (tmp.path().join("o1"), tmp.path().join("o2"));
    let stdout = ok(&args(&o1).output().unwrap());
    assert!(stdout.contains("post-hoc tau_p=1.5"), "{stdout}");
    ok(&args(&o2).output().unwrap());
    let (a, b) = (json(&o1.join("report.json")), json(&o2.join("report.json")));
    let names: Vec<&str> = a["attacks"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names[0], "clean");
    assert_eq!(names.len(), 3, "{names:?}");
    // Timings differ between runs; everything else must not.
    let untimed = |r: &Value| -> Vec<Value> {
        let mut v = r["attacks"].as_array().unwrap().clone();
        for a in &mut v {
            let a = a.as_object_mut().unwrap();
            a.remove("seconds");
            a.remove("img_per_s");
        }
        v
    };
    assert_eq!(untimed(&a), untimed(&b));
    assert_eq!(a["worst_case"]["correct"], b["worst_case"]["correct"]);

    // Two evaluated runs side by side.
    let cmp = tmp.path().join("cmp");
    let stdout = ok(&xtask().arg("report").arg(&run).arg(&o1).arg("--out").arg(&cmp).output().unwrap());
    assert!(stdout.contains("| run |") && stdout.contains("worst case"), "{stdout}");
    assert!(cmp.join("comparison.md").is_file());
    assert_png(&cmp.join("per_class_worst.png"));
}

#[test]
fn bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nope.safetensors");
    let err = failed(&xtask().arg("eval").arg(&missing).output().unwrap());
    assert!(err.contains("nope.safetensors") && err.contains("not found"), "{err}");

    let pt = tmp.path().join("x.pt");
    std::fs::write(&pt, b"not a pickle").unwrap();
    let err = failed(&xtask().arg("eval").arg(&pt).args(["--arch", "wrn-10-1"]).output().unwrap());
    assert!(err.contains("x.pt") && err.contains("not a readable PyTorch checkpoint"), "{err}");

    // A truncated checkpoint.
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let err = failed(&xtask().arg("eval").arg(&bad).output().unwrap());
    assert!(err.contains("bad.safetensors"), "{err}");

    // A model that has a checkpoint: train the smallest possible run on the embedded set.
    let run = tmp.path().join("run");
    ok(&xtask()
        .args(["train", "--run-dir"])
        .arg(&run)
        .args(["--epochs", "1", "--set", "data.limit=64", "--set", "train.batch_size=32", "--set", "attack.steps=1"])
        .args(["--set", "eval.limit=8", "--set", "eval.steps=1", "--set", "train.milestones=[]"])
        .output()
        .unwrap());
    let err = failed(&xtask().arg("eval").arg(&run).args(["--attacks", "pgd,foo"]).output().unwrap());
    assert!(err.contains("--attacks") && err.contains("\"foo\""), "{err}");
    let err = failed(&xtask().arg("eval").arg(&run).args(["--head", "posthoc"]).output().unwrap());
    assert!(err.contains("--tau-p"), "{err}");
    let err = failed(&xtask().arg("eval").arg(&run).args(["--data", "cifar10"]).output().unwrap());
    assert!(err.contains("--data"), "{err}");
    let err = failed(&xtask().arg("eval").arg(&run).args(["--random-start", "maybe"]).output().unwrap());
    assert!(err.contains("--random-start"), "{err}");
    for (flag, value) in [("--eps", "-0.1"), ("--steps", "0"), ("--step-size", "0")] {
        let err = failed(&xtask().arg("eval").arg(&run).arg(format!("{flag}={value}")).output().unwrap());
        assert!(err.contains(flag), "{err}");
    }
    // MNIST-LT has 10 classes and 1 channel: a 100-class CIFAR file is refused by its class count.
    let c100 = tmp.path().join("c100.bin");
    let mut rec = vec![0u8; 2 + 3072];
    rec[1] = 5;
    std::fs::write(&c100, &rec).unwrap();
    let err = failed(
        &xtask().arg("eval").arg(&run).args(["--data", &format!("cifar100-bin:{}", c100.display())]).output().unwrap(),
    );
    assert!(err.contains("100 classes") && err.contains("predicts 10"), "{err}");
    // The same weights as a foreign file (--arch): channels (1) and classes (10) are read
    // from the tensors, so no --in-channels/--num-classes is needed; a flag that says
    // otherwise is refused naming the tensor.
    let weights = run.join("model.safetensors").display().to_string();
    let foreign = tmp.path().join("foreign");
    // `cargo xtask eval` on the foreign file, with the given extra flags.
    let eval_foreign = |extra: &[&str]| {
        xtask()
            .args(["eval", &weights, "--arch", "small-cnn", "--head", "cosine", "--data", "mnist-lt"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out_dir = foreign.display().to_string();
    let stdout = ok(&eval_foreign(&["--limit", "8", "--attacks", "clean", "--no-audit", "--out", &out_dir]));
    assert!(stdout.contains("| clean |"), "{stdout}");
    assert_eq!(json(&foreign.join("report.json"))["attacks"][0]["per_class"].as_array().unwrap().len(), 10);
    let err = failed(&eval_foreign(&["--in-channels", "3"]));
    assert!(err.contains("--in-channels 3 contradicts") && err.contains("has 1"), "{err}");
    let err = failed(&eval_foreign(&["--num-classes", "7"]));
    assert!(err.contains("head.weight has 10"), "{err}");
    // report on a folder never evaluated.
    let err = failed(&xtask().arg("report").arg(tmp.path()).output().unwrap());
    assert!(err.contains("report.json"), "{err}");
}

#[test]
fn reference_pytorch_checkpoint_is_evaluated_with_architecture_flags() {
    let Some(cifar) = shared_cifar("reference_pytorch_checkpoint_is_evaluated_with_architecture_flags") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/models/tests/fixtures/reference_wrn10_1_cosine.pt");
    let bin = format!("cifar10-bin:{}", cifar.join("test_batch_first1017.bin").display());
    let stdout = ok(&xtask()
        .arg("eval")
        .arg(&pt)
        .args(["--arch", "wrn-10-1", "--head", "cosine", "--scale", "10", "--gamma", "0.03125"])
        .args(["--data", &bin, "--limit", "16", "--attacks", "fgsm", "--no-audit", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap());
    assert!(stdout.contains("cosine s=10 gamma=0.03125"), "{stdout}");
    let r = json(&tmp.path().join("report.json"));
    assert_eq!(r["images"], 16);
    // No training counts in a PyTorch state_dict: the report still has every class.
    assert_eq!(r["attacks"][0]["per_class"].as_array().unwrap().len(), 10);
    assert_eq!(r["attacks"][1]["name"], "fgsm");
    // The same kind of file in PyTorch's legacy format loads, with a notice that
    // nothing could be checked.
    let legacy =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/models/tests/fixtures/reference_wrn10_1_fc_legacy.pt");
    let out = xtask()
        .arg("eval")
        .arg(&legacy)
        .args(["--arch", "wrn-10-1", "--data", &bin, "--limit", "16", "--attacks", "clean", "--no-audit", "--out"])
        .arg(tmp.path().join("legacy"))
        .output()
        .unwrap();
    let text = ok(&out) + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("legacy format") && text.contains("no checksum"), "{text}");
    assert_eq!(json(&tmp.path().join("legacy/report.json"))["images"], 16);
    // Post-hoc adjustment needs the training counts, which this file does not carry.
    let out = xtask()
        .arg("eval")
        .arg(&pt)
        .args(["--arch", "wrn-10-1", "--head", "cosine", "--num-classes", "10", "--data", &bin, "--tau-p", "1.5"])
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(err.contains("--tau-p"), "{err}");
}

/// An output folder holding a report: the same evaluation is reported (nothing
/// recomputed), another one is refused naming the choices, and `--overwrite` moves the
/// old report aside before writing the new one.
#[test]
fn a_folder_holding_a_report_is_reported_refused_or_moved_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    ok(&xtask()
        .args(["train", "--preset", "mnist-lt-pgd-at", "--epochs", "1", "--run-dir"])
        .arg(&run)
        .args(["--set", "data.limit=64", "--set", "attack.steps=1", "--set", "eval.limit=8"])
        .output()
        .unwrap());
    let eval = |extra: &[&str]| {
        let mut c = xtask();
        c.arg("eval").arg(&run).args(["--attacks", "clean,pgd", "--steps", "2", "--no-audit"]).args(extra);
        c.output().unwrap()
    };
    ok(&eval(&["--limit", "20"]));
    let report = std::fs::read(run.join("report.json")).unwrap();
    let again = ok(&eval(&["--limit", "20"]));
    assert!(again.contains("already holds this evaluation") && again.contains("| pgd-2 |"), "{again}");
    assert_eq!(std::fs::read(run.join("report.json")).unwrap(), report, "nothing recomputed");
    let err = failed(&eval(&["--limit", "10"]));
    assert!(err.contains("another evaluation") && err.contains("--overwrite"), "{err}");
    assert_eq!(std::fs::read(run.join("report.json")).unwrap(), report, "a refused evaluation writes nothing");
    ok(&eval(&["--limit", "10", "--overwrite"]));
    assert_eq!(json(&run.join("report.json"))["images"], 10);
    let aside: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read(aside[0].join("report.json")).unwrap(), report, "the old report is kept");
}
