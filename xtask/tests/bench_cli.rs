//! `cargo xtask bench` runs every step kind once and reports images/s as JSON (the
//! numbers themselves are measured, not asserted: benchmarks are not timing tests).

use std::process::Command;

#[test]
fn every_step_including_whole_method_steps_reports_images_per_second() {
    let steps = "attack,train,infer,pgd-at,trades,robal,reat,taet,pgd-at-awp,trades-awp";
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--no-pytorch", "--json", "--model", "small-cnn", "--step", steps])
        .args(["--batch", "8", "--infer-batch", "8", "--seconds", "0", "--iters", "1"])
        .output()
        .expect("xtask runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> =
        text.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen: Vec<&str> = rows.iter().map(|r| r["step"].as_str().unwrap()).collect();
    assert_eq!(seen, steps.split(',').collect::<Vec<_>>());
    for r in &rows {
        let rate = r["img_per_s"].as_f64().unwrap();
        assert!(rate.is_finite() && rate > 0.0, "{r}");
    }
}

#[test]
fn an_unknown_step_is_named_with_the_known_ones() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--no-pytorch", "--model", "small-cnn", "--step", "madry"])
        .output()
        .expect("xtask runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--step \"madry\"") && err.contains("robal, reat, taet, pgd-at-awp, trades-awp"), "{err}");
}
