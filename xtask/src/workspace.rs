//! Paths resolved from the workspace root, so that `cargo xtask` works from any folder
//! of the workspace: presets from `<root>/configs`, runs under `<root>/runs`, and a
//! relative path that does not exist from the current folder is tried from the root.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The workspace root: the nearest folder at or above the current one that holds
/// `xtask/Cargo.toml` and `configs/`, else the folder above `xtask/` where this binary
/// was built. Looking from the current folder first lets a binary built in one checkout
/// run in another (a release binary carried to a GPU machine beside a copy of the repo).
pub fn root() -> PathBuf {
    let is_root = |d: &Path| d.join("xtask/Cargo.toml").is_file() && d.join("configs").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(found) = cwd.ancestors().find(|d| is_root(d)) {
            return found.to_path_buf();
        }
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Preset names in `<root>/configs`, sorted.
pub fn presets() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("configs"))
        .map(|d| {
            d.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".toml").map(str::to_string)).collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The file of preset `name`, or an error listing the presets.
pub fn preset(name: &str) -> Result<PathBuf> {
    let path = root().join("configs").join(format!("{name}.toml"));
    if path.is_file() {
        return Ok(path);
    }
    bail!(
        "--preset {name:?}: no such preset in {}; presets: {}",
        root().join("configs").display(),
        presets().join(", ")
    )
}

/// `path` as given if it exists (or is absolute), else from the workspace root if it
/// exists there, else as given (so that the caller's error names the path the user typed).
pub fn resolve(path: &Path) -> PathBuf {
    if path.is_absolute() || path.exists() {
        return path.to_path_buf();
    }
    let from_root = root().join(path);
    if from_root.exists() {
        from_root
    } else {
        path.to_path_buf()
    }
}

/// The default run folder of a preset: `<root>/runs/<name>`.
pub fn run_dir(name: &str) -> PathBuf {
    root().join("runs").join(name)
}
