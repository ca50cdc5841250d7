//! `cargo xtask preset show`: the resolved config, its quirks, and the learning rate per
//! epoch as the trainer counts epochs (0-based).

use std::path::Path;
use std::process::Command;

fn xtask(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_robal_schedule_collapses_after_epoch_59_as_the_reference_code_does() {
    let text = xtask(&["preset", "show", "cifar10-lt-robal-n", "--schedule"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 80);
    for (e, line) in lines.iter().enumerate().take(59) {
        assert_eq!(*line, format!("{e} 0.1"));
    }
    assert_eq!(lines[59], "59 0.01");
    assert_eq!(lines[60], "60 0.001");
    assert_eq!(lines[61], "61 0.0001");
    // Our own presets keep the plain step rule.
    let ours = xtask(&["preset", "show", "mnist-lt-robal", "--schedule"]);
    assert!(ours.contains("29 0.1\n30 0.01\n") && ours.contains("39 0.001"), "{ours}");
}

#[test]
fn show_prints_the_resolved_config_and_its_quirks() {
    let text = xtask(&["preset", "show", "cifar10-lt-robal-n"]);
    assert!(text.contains("lr_rule = \"cumulative\""), "{text}");
    assert!(text.contains("momentum = 0.9") && text.contains("[attack]"), "defaults filled in: {text}");
    assert!(text.contains("# quirks on:") && text.contains("train.bn_passes = \"reference\""), "{text}");
    let clean = xtask(&["preset", "show", "mnist-lt-robal"]);
    assert!(clean.contains("# quirks: none"), "{clean}");
    assert!(xtask(&["preset", "list"]).lines().any(|l| l == "fashion-mnist-lt-robal"));
}
