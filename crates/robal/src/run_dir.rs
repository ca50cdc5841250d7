//! A run folder: the names of the files a training run writes, the lock that lets one
//! process at a time work in it, and what it holds (nothing, an unfinished run, a
//! finished run), so that a new run never silently replaces an old one.
//!
//! The lock is an advisory `flock` on `run.lock` inside the folder, taken without
//! waiting: the kernel drops it when the holding process exits or is killed, so a
//! killed run never leaves a stale lock. The file's text (pid, host, purpose, start
//! time) only serves the error message of a process that finds it held.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::toml_leaves;
use crate::error::{Result, TrainError};

/// The folder of one training run and the names of its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

/// The lock file inside a run folder.
pub const LOCK_FILE: &str = "run.lock";
/// The config the run was started with (TOML).
pub const CONFIG_FILE: &str = "config.toml";
/// One JSON object per epoch and per quick evaluation.
pub const METRICS_FILE: &str = "metrics.jsonl";
/// Weights, BatchNorm statistics and objective state of the last completed epoch.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// The final model with its evaluation head.
pub const MODEL_FILE: &str = "model.safetensors";
/// The final quick evaluation; its presence marks a finished run.
pub const TRAIN_EVAL_FILE: &str = "train_eval.json";

/// What a run folder holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunState {
    /// No `config.toml`: nothing was started here.
    Empty,
    /// Started, not finished: `epochs_done` epochs checkpointed.
    Unfinished {
        /// Epochs in the last checkpoint (0 if none was written yet).
        epochs_done: u64,
    },
    /// Finished: the final model and its evaluation were written.
    Finished,
}

impl RunDir {
    /// The run folder at `path` (nothing is created).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.path.join(CONFIG_FILE)
    }

    /// `metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.path.join(METRICS_FILE)
    }

    /// `checkpoint.safetensors`.
    pub fn checkpoint(&self) -> PathBuf {
        self.path.join(CHECKPOINT_FILE)
    }

    /// `model.safetensors`.
    pub fn model(&self) -> PathBuf {
        self.path.join(MODEL_FILE)
    }

    /// `train_eval.json`.
    pub fn train_eval(&self) -> PathBuf {
        self.path.join(TRAIN_EVAL_FILE)
    }

    /// `optimizer-<epoch>.safetensors`: the SGD state saved with the checkpoint of `epoch`.
    pub fn optimizer(&self, epoch: usize) -> PathBuf {
        self.path.join(format!("optimizer-{epoch}.safetensors"))
    }

    /// What the folder holds. The checkpoint's epoch is read from its metadata
    /// header only (no tensors are loaded); an unreadable checkpoint counts as 0 epochs.
    pub fn state(&self) -> RunState {
        if !self.config().is_file() {
            return RunState::Empty;
        }
        if self.train_eval().is_file() && self.model().is_file() {
            return RunState::Finished;
        }
        let epochs_done = robal_models::checkpoint::read_metadata(&self.checkpoint())
            .ok()
            .and_then(|m| m.get("robal.epoch").and_then(|e| e.parse().ok()))
            .unwrap_or(0);
        RunState::Unfinished { epochs_done }
    }

    /// Take the folder's lock for `purpose` (e.g. "training"), creating the folder.
    /// Fails at once, naming the holder, when another process has it.
    pub fn lock(&self, purpose: &str) -> Result<RunLock> {
        std::fs::create_dir_all(&self.path).map_err(io(&self.path))?;
        let path = self.path.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                return Err(TrainError::Busy {
                    path: self.path.display().to_string(),
                    holder: if holder.is_empty() { "another process".into() } else { holder.to_string() },
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let text = format!("{purpose} by pid {} on {} since unix time {since}\n", std::process::id(), hostname());
        file.set_len(0).and_then(|_| file.write_all(text.as_bytes())).map_err(io(&path))?;
        Ok(RunLock { _file: file })
    }

    /// Move everything the folder holds (but its lock and earlier moved-aside runs)
    /// into a new subfolder `replaced-<unix time>[-n]`, and return that subfolder.
    /// Nothing is deleted; call with the lock held.
    pub fn move_aside(&self) -> Result<PathBuf> {
        self.move_aside_where(|_| true)
    }

    /// [`RunDir::move_aside`] for the entries whose file name `pick` accepts (an
    /// evaluation moves only its report files out of a run folder).
    pub fn move_aside_where(&self, pick: impl Fn(&str) -> bool) -> Result<PathBuf> {
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let mut aside = self.path.join(format!("replaced-{stamp}"));
        let mut n = 1;
        while aside.exists() {
            aside = self.path.join(format!("replaced-{stamp}-{n}"));
            n += 1;
        }
        std::fs::create_dir(&aside).map_err(io(&aside))?;
        for entry in std::fs::read_dir(&self.path).map_err(io(&self.path))? {
            let entry = entry.map_err(io(&self.path))?;
            let name = entry.file_name();
            let text = name.to_string_lossy();
            let keep = text == LOCK_FILE || text.starts_with("replaced-") || !pick(&text);
            if !keep {
                std::fs::rename(entry.path(), aside.join(&name)).map_err(io(&entry.path()))?;
            }
        }
        Ok(aside)
    }
}

/// The held lock of a run folder; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.display().to_string(), source }
}

/// The fields whose values differ between two configs (TOML texts), as
/// `key: old -> new` lines, keys dotted (`train.lr`), in key order.
pub fn config_differences(old: &str, new: &str) -> Vec<String> {
    let parse = |s: &str| -> BTreeMap<String, String> {
        s.parse::<toml::Table>()
            .map(|t| toml_leaves(&t).into_iter().map(|(k, v)| (k, v.to_string())).collect())
            .unwrap_or_default()
    };
    let (a, b) = (parse(old), parse(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
            format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
        })
        .collect()
}
