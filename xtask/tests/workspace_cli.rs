//! `cargo xtask` from any folder: presets come from the workspace root, and an unknown
//! preset name is an error that lists the presets.

use std::process::Command;

#[test]
fn unknown_preset_lists_the_presets_from_any_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["train", "--preset", "mnist-lt-robl"])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--preset \"mnist-lt-robl\": no such preset"), "{err}");
    for preset in ["mnist-lt-robal", "mnist-lt-pgd-at", "cifar10-lt-robal-n", "cifar10-lt-taet"] {
        assert!(err.contains(preset), "{preset} missing from: {err}");
    }
}
