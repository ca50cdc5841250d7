//! Evaluations that outlive a process: `cargo xtask eval` killed with SIGKILL in the
//! middle of APGD-T and resumed with `--resume`, and the same evaluation as two
//! `--shard K/2` runs combined by `cargo xtask merge`, both give the uninterrupted
//! run's report.json byte for byte apart from timings.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    c
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// report.json with every `seconds` and `img_per_s` field removed, re-serialised.
fn untimed(path: &Path) -> String {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("seconds");
                m.remove("img_per_s");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = json(path);
    strip(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

/// The smallest possible run on the embedded set, trained once for both tests.
fn train() -> &'static Path {
    static RUN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    RUN.get_or_init(|| {
        // Kept for the life of the test process.
        let root = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        train_into(root.path())
    })
}

fn train_into(root: &Path) -> PathBuf {
    let run = root.join("run");
    ok(&xtask()
        .args(["train", "--run-dir"])
        .arg(&run)
        .args(["--epochs", "1", "--set", "data.limit=256", "--set", "train.batch_size=32", "--set", "attack.steps=1"])
        .args(["--set", "eval.limit=8", "--set", "eval.steps=1", "--set", "train.milestones=[]"])
        .output()
        .unwrap());
    run
}

fn eval(run: &Path, out: &Path) -> Command {
    let mut c = xtask();
    c.arg("eval").arg(run).args(["--limit", "48", "--batch", "8", "--attacks", "pgd,apgd-t", "--steps", "5"]);
    c.args(["--audit-limit", "16", "--state-every", "0", "--out"]).arg(out);
    c
}

/// Progress of APGD-T in a state file: (images done, images in all), if it has started.
fn apgd_t_progress(state: &Path) -> Option<(usize, usize)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(state).ok()?).ok()?;
    let v: Value = serde_json::from_str(v["content"].as_str()?).ok()?; // sealed: {"sha256", "content": text}
    let n = v["key"]["labels"].as_array()?.len();
    let o = v["outcomes"].as_array()?.iter().find(|o| o["spec"] == "ApgdT")?;
    Some((o["predicted"].as_array()?.len(), n))
}

#[test]
fn killed_evaluation_resumes_and_shards_merge_to_the_uninterrupted_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train();
    let whole = tmp.path().join("whole");
    ok(&eval(run, &whole).output().unwrap());
    assert!(!whole.join("eval_state.json").exists(), "a finished evaluation removes its state");
    let reference = untimed(&whole.join("report.json"));

    // SIGKILL once APGD-T has saved some batches and not all.
    let killed = tmp.path().join("killed");
    let mut child =
        eval(run, &killed).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let state = killed.join("eval_state.json");
    let started = Instant::now();
    let at = loop {
        if let Some((done, n)) = apgd_t_progress(&state) {
            if done > 0 && done < n {
                child.kill().unwrap(); // SIGKILL on Unix
                break done;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the evaluation finished before it could be killed mid-APGD-T");
        assert!(started.elapsed() < Duration::from_secs(300), "APGD-T never started");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.wait().unwrap();
    assert!(!killed.join("report.json").exists());
    let (done, n) = apgd_t_progress(&state).unwrap();
    assert!(done >= at && done < n, "the state on disk is the partial one: {done} of {n}");
    let partial = tmp.path().join("partial_state.json");
    std::fs::copy(&state, &partial).unwrap();
    let stdout = ok(&eval(run, &killed).arg("--resume").output().unwrap());
    assert!(stdout.contains("| apgd-t |"), "{stdout}");
    assert_eq!(untimed(&killed.join("report.json")), reference, "resumed report differs");
    assert_eq!(
        std::fs::read(killed.join("model_info.json")).unwrap(),
        std::fs::read(whole.join("model_info.json")).unwrap()
    );
    // The run folder moved (a study renamed, a results folder reorganised): the saved
    // progress still belongs to the same model, so it resumes rather than being refused.
    let moved_run = tmp.path().join("moved-run");
    std::fs::create_dir(&moved_run).unwrap();
    for f in ["model.safetensors", "config.toml"] {
        std::fs::copy(run.join(f), moved_run.join(f)).unwrap();
    }
    let moved = tmp.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    std::fs::copy(&partial, moved.join("eval_state.json")).unwrap();
    let out = eval(&moved_run, &moved).arg("--resume").output().unwrap();
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("resuming from") && err.contains("attacks begun"), "{err}");
    let pathless = |p: &Path| {
        let mut v: Value = serde_json::from_str(&untimed(&p.join("report.json"))).unwrap();
        v.as_object_mut().unwrap().remove("checkpoint");
        v
    };
    assert_eq!(pathless(&moved), pathless(&whole), "resumed after the move differs");
    // Killed while writing the report (everything but report.json, which is written
    // last): the folder holds no finished evaluation, so running again redoes it.
    std::fs::remove_file(moved.join("report.json")).unwrap();
    assert!(moved.join("eval_spec.json").is_file() && moved.join("report.md").is_file());
    ok(&eval(&moved_run, &moved).output().unwrap());
    assert_eq!(pathless(&moved), pathless(&whole));
    // Other options (--limit) into this folder: refused while it holds the finished
    // report (the folder rule: eval_spec.json), and, with only a state file left, the
    // state resumed with other options is refused by name.
    std::fs::copy(&partial, &state).unwrap();
    let other = || {
        xtask()
            .arg("eval")
            .arg(run)
            .args(["--limit", "40", "--batch", "8", "--attacks", "pgd,apgd-t", "--steps", "5", "--resume", "--out"])
            .arg(&killed)
            .output()
            .unwrap()
    };
    let out = other();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already holds the report of another evaluation"), "{err}");
    std::fs::remove_file(killed.join("report.json")).unwrap();
    let out = other();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("eval_state.json") && err.contains("another data set or --limit"), "{err}");

    // Two shards and a merge.
    let shards = tmp.path().join("shards");
    for k in ["1/2", "2/2"] {
        let stdout = ok(&eval(run, &shards).args(["--shard", k]).output().unwrap());
        assert!(stdout.contains("cargo xtask merge"), "{stdout}");
    }
    assert!(shards.join("shard-1-of-2.json").is_file() && !shards.join("report.json").exists());
    let stdout = ok(&xtask().arg("merge").arg(&shards).output().unwrap());
    assert!(stdout.contains("merged 2 shards: 48 images"), "{stdout}");
    assert_eq!(untimed(&shards.join("report.json")), reference, "merged report differs");

    // The model card beside the report.
    let info = json(&whole.join("model_info.json"));
    assert_eq!(info["threat_model"], "Linf");
    assert_eq!(info["number_test_points"], 48);
    let r = json(&whole.join("report.json"));
    assert_eq!(info["clean_acc"], format!("{:.2}", 100.0 * r["attacks"][0]["accuracy"].as_f64().unwrap()));
    assert!(info["autoattack_acc"].is_null(), "no AutoAttack in this suite: {info}");
}

#[test]
fn the_long_tailed_test_profile_and_bad_shards_are_handled() {
    let tmp = tempfile::tempdir().unwrap();
    let run = train();
    let out = tmp.path().join("lt");
    let stdout = ok(&xtask()
        .arg("eval")
        .arg(run)
        .args(["--test-profile", "lt", "--attacks", "fgsm", "--no-audit", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    assert!(stdout.contains("long-tailed like training"), "{stdout}");
    // int(m r^(c/9)) images of class c: m the smallest per-class test count, r the
    // training imbalance min/max of the run's counts.
    let r = json(&out.join("report.json"));
    let train: Vec<f64> = r["train_counts"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let ratio = train.iter().cloned().fold(f64::MAX, f64::min) / train.iter().cloned().fold(0.0, f64::max);
    let test = robal_data::load_embedded("mnist-lt", robal_data::Split::Test).unwrap();
    let mut per_class = [0usize; 10];
    robal_data::Dataset::labels(&test).iter().for_each(|&l| per_class[l as usize] += 1);
    let m = *per_class.iter().min().unwrap() as f64;
    let want: usize = (0..10).map(|c| (m * ratio.powf(c as f64 / 9.0)) as usize).sum();
    assert!(ratio < 0.5, "the embedded set is long-tailed: {train:?}");
    assert_eq!(r["images"].as_u64().unwrap() as usize, want);
    for (args, want) in [(&["--shard", "3/2"][..], "--shard"), (&["--test-profile", "tail"][..], "--test-profile")] {
        let o = xtask().arg("eval").arg(run).args(args).output().unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want), "{err}");
    }
    let o = xtask().arg("merge").arg(tmp.path()).output().unwrap();
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("no shard-K-of-N.json"));
}
