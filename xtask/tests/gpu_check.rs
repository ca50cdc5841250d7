//! `cargo xtask gpu-check` on the CPU side: the CPU compared with itself passes every
//! check with zero error, and a perturbed copy fails them and exits non-zero. (The CUDA
//! side needs a GPU: `cargo xtask gpu-check` there, built with `--features cuda`.)

use std::process::Command;

fn gpu_check(extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["gpu-check", "--device", "cpu", "--models", "small-cnn", "--batch", "8"])
        .args(extra)
        .output()
        .expect("xtask runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn cpu_against_itself_passes_and_a_perturbed_copy_fails() {
    let (ok, text) = gpu_check(&[]);
    assert!(ok, "{text}");
    assert!(text.contains("all 7 checks within tolerance"), "{text}");
    for check in ["logits", "input gradient (rel. L2)", "after one SGD step", "PGD-20 robust accuracy"] {
        assert!(text.contains(&format!("| small-cnn | {check} | 0.00e0 |")), "{check}: {text}");
    }
    let (ok, text) = gpu_check(&["--perturb", "0.01"]);
    assert!(!ok, "a perturbed model must fail: {text}");
    assert!(text.contains("MISMATCH") && text.contains("checks mismatched between cpu and cpu"), "{text}");
}
