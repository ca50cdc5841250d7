//! `cargo xtask study`: a tiny study (2 presets x 2 seeds, 2 epochs on 160 embedded
//! digits) run here, run again (nothing redone), killed with SIGKILL at several
//! moments and resumed (the same report), and run on a real one-node Slurm cluster as
//! an array job plus a merge job (the same report as here), also when Slurm requeues
//! one task and another is cancelled mid-run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.current_dir(root());
    c
}

/// A tiny plan writing into `out`.
fn plan(dir: &Path, out: &Path) -> PathBuf {
    let text = format!(
        r#"out = "{}"
presets = ["mnist-lt-pgd-at", "mnist-lt-trades"]
seeds = [0, 1]
set = ["train.epochs=2", "data.limit=160", "eval.limit=20", "attack.steps=1"]

[[eval]]
name = "quick"
attacks = "clean,pgd"
limit = 40
batch = 16

[slurm]
cpus = 1
time = "00:10:00"
mem = "1G"
"#,
        out.display()
    );
    let p = dir.join(format!("plan-{}.toml", out.file_name().unwrap().to_string_lossy()));
    std::fs::write(&p, text).unwrap();
    p
}

fn ok(out: Output) -> String {
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    text
}

fn study(plan: &Path) -> Command {
    let mut c = xtask();
    c.arg("study").arg(plan).env("RAYON_NUM_THREADS", "1");
    c
}

fn report(out: &Path) -> String {
    std::fs::read_to_string(out.join("report/study-quick.json")).unwrap()
}

/// The tiny study run here once, uninterrupted (its folder and log): the reference the
/// killed, requeued and Slurm runs are compared with.
fn reference() -> &'static (PathBuf, PathBuf, String) {
    static REF: std::sync::OnceLock<(PathBuf, PathBuf, String)> = std::sync::OnceLock::new();
    REF.get_or_init(|| {
        // Kept for the life of the test process.
        let tmp = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let out = tmp.path().join("local");
        let p = plan(tmp.path(), &out);
        let log = ok(study(&p).output().unwrap());
        (out, p, log)
    })
}

#[test]
fn a_study_runs_every_task_aggregates_and_does_nothing_twice() {
    let (out, p, log) = reference();
    assert!(log.contains("study task 4 of 4"), "{log}");
    let summary: serde_json::Value = serde_json::from_str(&report(out)).unwrap();
    let methods: Vec<&str> = summary.as_array().unwrap().iter().map(|m| m["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["mnist-lt-pgd-at", "mnist-lt-trades"]);
    assert_eq!(summary[0]["seeds"], serde_json::json!([0, 1]));
    // The aggregate is the mean of the two runs' reports.
    let acc = |seed: u64| {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(out.join(format!("mnist-lt-trades/seed-{seed}/eval-quick/report.json"))).unwrap(),
        )
        .unwrap();
        r["attacks"][1]["accuracy"].as_f64().unwrap()
    };
    let mean = summary[1]["figures"][1]["overall"]["mean"].as_f64().unwrap();
    assert!((mean - (acc(0) + acc(1)) / 2.0).abs() < 1e-12, "{mean} vs {} {}", acc(0), acc(1));
    for f in ["study-quick.md", "per-class-quick.svg", "per-class-quick.png", "curves.svg", "timings.md"] {
        assert!(out.join("report").join(f).is_file(), "{f} missing");
    }
    let model = out.join("mnist-lt-pgd-at/seed-1/model.safetensors");
    let before = std::fs::read(&model).unwrap();
    let again = ok(study(p).output().unwrap());
    assert_eq!(again.matches("evaluation quick done already").count(), 4, "{again}");
    assert_eq!(again.matches("trained").count(), 0, "nothing retrained: {again}");
    assert_eq!(std::fs::read(&model).unwrap(), before);
    let status = ok(study(p).arg("--status").output().unwrap());
    assert_eq!(status.matches("trained; quick done").count(), 4, "{status}");
}

/// SIGKILL at moments spread over the study (a fixed pseudo-random sequence, so a
/// failure replays), then a resume to the end: the report is the uninterrupted one.
#[test]
fn a_study_killed_at_random_moments_resumes_to_the_same_report() {
    let tmp = tempfile::tempdir().unwrap();
    let killed = tmp.path().join("killed");
    let p = plan(tmp.path(), &killed);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for round in 0..5 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let delay = Duration::from_millis(300 + state % 2500);
        let mut child =
            study(&p).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap();
        let status = child.wait().unwrap();
        eprintln!("round {round}: killed after {delay:?} ({status})");
    }
    ok(study(&p).output().unwrap());
    assert_eq!(report(&killed), report(&reference().0));
}

/// A real one-node Slurm (munged, slurmctld, slurmd on 127.0.0.1, started by
/// .ci/slurm-cluster.sh and stopped by PID): the study as an array job and a merge job
/// that waits for it gives the report the study gives here, also when Slurm requeues
/// one task and another is cancelled mid-run. CI installs Slurm; on a
/// machine without it the test says so and passes only outside CI.
#[test]
fn a_study_on_slurm_gives_the_local_report() {
    let script = root().join(".ci/slurm-cluster.sh");
    let have = Command::new("sh")
        .args(["-c", "command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs Slurm (.ci/run), but slurmctld/slurmd/sbatch/munged are missing"
        );
        eprintln!("SKIPPED: Slurm is not installed (apt-get install slurmctld slurmd slurm-client munge)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(&script, &tmp.path().join("cluster"));
    let (local, remote) = (&reference().0, tmp.path().join("slurm"));
    let p = plan(tmp.path(), &remote);
    let log = ok(study(&p).args(["--slurm", "--submit", "--wait"]).env("SLURM_CONF", &cluster.conf).output().unwrap());
    assert!(log.contains("submitted array job") && log.contains("has ended successfully"), "{log}");
    for k in 0..4 {
        let task_log = std::fs::read_to_string(remote.join(format!("slurm/task-{k}.log"))).unwrap_or_default();
        assert!(task_log.contains(&format!("task {k}:")), "array task {k} did not run: {task_log}");
    }
    assert_eq!(report(&remote), report(local), "the merged report differs from the local one");

    // A failing task fails the whole submission: the merge job never runs.
    let bad = tmp.path().join("bad");
    let p = plan(tmp.path(), &bad);
    let text = std::fs::read_to_string(&p).unwrap().replace("train.epochs=2", "train.lr=-1");
    std::fs::write(&p, text).unwrap();
    let out = study(&p).args(["--slurm", "--submit", "--wait"]).env("SLURM_CONF", &cluster.conf).output().unwrap();
    assert!(!out.status.success(), "a failed array must fail the submission");
    assert!(!bad.join("report").exists(), "the merge job ran after a failed array");

    // One array task killed and requeued by Slurm (`scontrol requeue`) and another
    // cancelled (`scancel`) while they train: the cancelled task fails the array, so the
    // merge never runs; resubmitting skips the finished tasks and resumes the cancelled
    // one. The report is still the uninterrupted local one.
    let remote = tmp.path().join("requeued");
    let p = plan(tmp.path(), &remote);
    let slurm = |cmd: &str, args: &[&str]| {
        let out = Command::new(cmd).args(args).env("SLURM_CONF", &cluster.conf).output().unwrap();
        assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let log = ok(study(&p).args(["--slurm", "--submit"]).env("SLURM_CONF", &cluster.conf).output().unwrap());
    let id = log.split("submitted array job ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().to_string();
    // Tasks in the order the plan lists them: (preset, seed) of task k.
    let dir = |k: usize| remote.join(["mnist-lt-pgd-at", "mnist-lt-trades"][k % 2]).join(format!("seed-{}", k / 2));
    // Caught in training: its first epoch's checkpoint is written, its evaluation is not.
    let mid_run = |k: usize| dir(k).join("checkpoint.safetensors").is_file() && !dir(k).join("eval-quick").exists();
    let catch = |tasks: &[usize]| {
        let start = std::time::Instant::now();
        loop {
            if let Some(&k) = tasks.iter().find(|&&k| mid_run(k)) {
                return k;
            }
            assert!(start.elapsed() < Duration::from_secs(300), "no task of {tasks:?} was caught mid-run");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let requeued = catch(&[0, 1]);
    slurm("scontrol", &["requeue", &format!("{id}_{requeued}")]);
    // Slurm holds a requeued job back ~2 minutes (EligibleTime); let it go now.
    slurm("scontrol", &["update", &format!("jobid={id}_{requeued}"), "StartTime=now"]);
    let shown = slurm("scontrol", &["show", "job", &format!("{id}_{requeued}")]);
    assert!(shown.contains("Restarts=1"), "{shown}");
    let cancelled = catch(&[2, 3]);
    slurm("scancel", &[&format!("{id}_{cancelled}")]);
    // Wait until the first submission has left the queue (its merge job is cancelled).
    let start = std::time::Instant::now();
    while !slurm("squeue", &["-h", "-o", "%i"]).trim().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(300), "the jobs never left the queue");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!remote.join("report").exists(), "the merge ran although task {cancelled} was cancelled");
    let task_log = std::fs::read_to_string(remote.join(format!("slurm/task-{requeued}.log"))).unwrap();
    assert!(task_log.contains("(continuing)"), "the requeued task did not resume its run: {task_log}");
    assert!(dir(requeued).join("eval-quick/report.json").is_file(), "the requeued task did not finish");
    assert!(!dir(cancelled).join("eval-quick/report.json").exists());

    let log = ok(study(&p).args(["--slurm", "--submit", "--wait"]).env("SLURM_CONF", &cluster.conf).output().unwrap());
    assert!(log.contains("has ended successfully"), "{log}");
    let task_log = std::fs::read_to_string(remote.join(format!("slurm/task-{cancelled}.log"))).unwrap();
    assert!(task_log.contains("(continuing)"), "the cancelled task did not resume: {task_log}");
    assert_eq!(report(&remote), report(local), "the report after the kills differs from the local one");
}

/// The cluster of one test; stopped (by PID) when dropped, even when the test fails.
struct Cluster {
    script: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
}

impl Cluster {
    fn start(script: &Path, dir: &Path) -> Self {
        let out = Command::new("bash").arg(script).arg("start").arg(dir).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let cluster = Self { script: script.to_path_buf(), dir: dir.to_path_buf(), conf: dir.join("slurm.conf") };
        assert!(out.status.success(), "the cluster did not start:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("SLURM_CONF={}", cluster.conf.display())), "{stdout}");
        cluster
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(&self.script).arg("stop").arg(&self.dir).status();
    }
}
