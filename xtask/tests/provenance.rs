//! The provenance tables (configs/provenance/*.tsv) against the presets: every traced
//! value equals the resolved preset's, every field of a paper preset is traced, and an
//! edit that changes an experiment without its trace fails naming preset, field and
//! source (the negative controls run on a copy of configs/).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn verify(configs: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.current_dir(root()).args(["preset", "verify"]);
    if let Some(c) = configs {
        cmd.arg("--configs").arg(c);
    }
    cmd.output().unwrap()
}

/// A presets folder to edit: the two CIFAR MCAT presets and their table, copied.
fn copy_configs() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = root().join("configs");
    std::fs::create_dir(tmp.path().join("provenance")).unwrap();
    for file in ["cifar10-lt-mcat.toml", "cifar100-lt-mcat.toml", "provenance/mcat.tsv"] {
        std::fs::copy(src.join(file), tmp.path().join(file)).unwrap();
    }
    tmp
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn every_paper_preset_is_traced_and_matches_its_table() {
    let out = verify(None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", stdout, String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("every value matches its preset"), "{stdout}");
}

#[test]
fn a_changed_value_names_the_preset_field_and_source() {
    let tmp = copy_configs();
    assert!(verify(Some(tmp.path())).status.success(), "the copy verifies before the edit");
    edit(&tmp.path().join("cifar10-lt-mcat.toml"), "lr = 0.1", "lr = 0.05");
    let out = verify(Some(tmp.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changed learning rate must fail");
    assert!(
        err.contains("cifar10-lt-mcat: train.lr = 0.05 in the preset, but the provenance table says 0.1")
            && err.contains("run.py:184"),
        "{err}"
    );
    assert!(err.contains("1 provenance problem"), "only the edited field: {err}");
}

#[test]
fn an_untraced_field_and_a_missing_row_fail() {
    let tmp = copy_configs();
    // A field the table does not know.
    edit(&tmp.path().join("cifar100-lt-mcat.toml"), "momentum = 0.9", "momentum = 0.9\nnesterov = true");
    // A row whose field the preset does not have.
    let table = tmp.path().join("provenance/mcat.tsv");
    let mut text = std::fs::read_to_string(&table).unwrap();
    text.push_str("cifar10-lt-mcat\ttrain.no_such_field\t1\tpaper: nowhere\t\n");
    std::fs::write(&table, text).unwrap();
    // A paper preset with no rows at all.
    std::fs::copy(tmp.path().join("cifar10-lt-mcat.toml"), tmp.path().join("cifar10-lt-untraced.toml")).unwrap();
    let out = verify(Some(tmp.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cifar100-lt-mcat: train.nesterov is set in") && err.contains("has no provenance row"),
        "{err}"
    );
    assert!(err.contains("cifar10-lt-mcat: field train.no_such_field is not in the resolved preset"), "{err}");
    assert!(err.contains("cifar10-lt-untraced: a paper preset with no provenance rows"), "{err}");
}

#[test]
fn show_sources_prints_each_field_beside_its_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(root())
        .args(["preset", "show", "cifar10-lt-mcat", "--sources"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("etf.weight = 1.0")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("run_grid.sh:46"), "{line}");
    assert!(text.contains("data.dir = \"data\"") && text.contains("(not part of the experiment)"), "{text}");
    assert!(!text.contains("NOT TRACED"), "{text}");
}
