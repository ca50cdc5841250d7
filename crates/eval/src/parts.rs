//! Evaluations that outlive a process: the per-example outcomes of a run as a value
//! ([`Evaluation`]) that a shard writes and [`merge`] combines, the state file that
//! `--resume` continues from, and the fixed partition of a test set into shards.
//!
//! Why merged == unsharded: a shard is a contiguous run of whole batches, and batch k
//! of the full set is attacked with seed `seed + k` whichever process runs it, so every
//! example sees exactly the computation it would see in one run. The audit's sweeps and
//! the entry checks run on the first images of the full set, by shard 1 only.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::{AuditConfig, AuditResult};
use crate::error::{file_err, EvalError, Result};
use crate::report::Report;
use crate::runtime::square_after_gradient;
use crate::suite::{AttackOutcome, AttackSettings, AttackSpec};

/// Shard `index` of `count` (1-based), `1/1` for a whole run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which part, 1..=count.
    pub index: usize,
    /// Parts in all.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Self { index: 1, count: 1 }
    }
}

impl Shard {
    /// Parse `K/N` (1 <= K <= N), e.g. `--shard 3/8`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || EvalError::Invalid {
            what: "--shard".into(),
            reason: format!("{s:?}: expected K/N with 1 <= K <= N, e.g. 3/8"),
        };
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) =
            (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if index == 0 || index > count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether this is the whole set.
    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// This shard's images `[start, end)` of `total`, and its first batch: batches
    /// `B = ceil(total / batch)` split as `[(K-1) B / N, K B / N)`.
    pub fn range(&self, total: usize, batch: usize) -> (usize, usize, usize) {
        let batch = batch.max(1);
        let batches = total.div_ceil(batch);
        let first = (self.index - 1) * batches / self.count;
        let last = self.index * batches / self.count;
        (first * batch, (last * batch).min(total), first)
    }

    /// `shard-K-of-N.json`, the file a shard writes its [`Evaluation`] to.
    pub fn file_name(&self) -> String {
        format!("shard-{}-of-{}.json", self.index, self.count)
    }

    /// The state file of this part in `dir`.
    pub fn state_path(&self, dir: &Path) -> PathBuf {
        if self.is_whole() {
            dir.join("eval_state.json")
        } else {
            dir.join(format!("eval_state-{}-of-{}.json", self.index, self.count))
        }
    }
}

/// Everything a report is built from: what was evaluated and how, and the per-example
/// outcomes of one part (or of all of it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The checkpoint evaluated, as the user named it (for the report).
    pub checkpoint: String,
    /// The model evaluated, by what it computes ([`robal_models::checkpoint::model_digest`]):
    /// shards agree on it wherever each found its copy of the checkpoint.
    #[serde(default)]
    pub model: String,
    /// Data set description.
    pub data: String,
    /// Head used.
    pub head: String,
    /// Attack settings.
    pub settings: AttackSettings,
    /// Attack list, clean first.
    pub attacks: Vec<AttackSpec>,
    /// Batch size (it fixes the batches, and with them the seeds).
    pub batch: usize,
    /// Class names.
    pub class_names: Vec<String>,
    /// Training images per class.
    pub train_counts: Vec<usize>,
    /// Images of the whole test set (all shards).
    pub total_images: usize,
    /// Which part this is.
    pub shard: Shard,
    /// Labels of this part's images.
    pub labels: Vec<u32>,
    /// Per-example outcomes of each attack on this part.
    pub outcomes: Vec<AttackOutcome>,
    /// The audit's sweeps and the entry checks (shard 1 only); the checks that read the
    /// outcomes (`ce_vs_margin`, `square_after_gradient`) are added by [`Evaluation::report`].
    pub audit: AuditResult,
    /// The audit's thresholds, or `None` when its sweeps were skipped.
    pub audit_config: Option<AuditConfig>,
}

impl Evaluation {
    /// The report: metrics of every attack, the worst case, and the audit completed
    /// with the checks on the outcomes of the whole set.
    pub fn report(&self) -> Report {
        let mut audit = self.audit.clone();
        let config = self.audit_config.unwrap_or_default();
        if let Some(c) = square_after_gradient(&self.outcomes) {
            audit.push(c);
        }
        audit.push_ce_vs_margin(&self.outcomes, &config);
        Report::build(
            &self.checkpoint,
            &self.data,
            &self.head,
            self.settings,
            self.class_names.clone(),
            self.train_counts.clone(),
            &self.labels,
            &self.outcomes,
            audit,
        )
    }

    /// The options that must agree between the parts of one evaluation.
    fn key(&self) -> impl PartialEq + '_ {
        (
            (&self.model, &self.data, &self.head, &self.attacks, self.batch),
            (serde_json::to_string(&self.settings).ok(), &self.class_names, &self.train_counts, self.total_images),
            self.shard.count,
        )
    }

    /// Read a shard file (sealed: a damaged one is refused, naming the file).
    pub fn load(path: &Path) -> Result<Self> {
        crate::sealed::load(path, "shard file")
    }

    /// Write it to `path`, sealed with its SHA-256, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::sealed::save(self, path)
    }
}

/// Combine the shards of one evaluation (any order) into the evaluation of the whole
/// set: per-example outcomes concatenated in shard order, times added up, the audit
/// of shard 1. Every shard 1..=N must be there once, made with the same options.
pub fn merge(mut parts: Vec<Evaluation>) -> Result<Evaluation> {
    let bad = |reason: String| EvalError::Invalid { what: "merge".into(), reason };
    let first = parts.first().ok_or_else(|| bad("no shard files given".into()))?;
    let count = first.shard.count;
    if let Some(p) = parts.iter().find(|p| p.key() != first.key()) {
        return Err(bad(format!(
            "shard {}/{} was evaluated with other options than shard {}/{} (checkpoint, data, attacks, settings, batch or shard count differ)",
            p.shard.index, p.shard.count, first.shard.index, first.shard.count
        )));
    }
    parts.sort_by_key(|p| p.shard.index);
    let have: Vec<usize> = parts.iter().map(|p| p.shard.index).collect();
    if have != (1..=count).collect::<Vec<_>>() {
        return Err(bad(format!("expected shards 1..={count} once each, found {have:?}")));
    }
    let mut whole = parts[0].clone();
    whole.shard = Shard::default();
    for p in &parts[1..] {
        whole.labels.extend(&p.labels);
        for (w, o) in whole.outcomes.iter_mut().zip(&p.outcomes) {
            w.predicted.extend(&o.predicted);
            w.correct.extend(&o.correct);
            w.broken_by.extend(o.broken_by.iter().cloned());
            w.seconds += o.seconds;
        }
    }
    if whole.labels.len() != whole.total_images {
        return Err(bad(format!("the shards hold {} of {} images", whole.labels.len(), whole.total_images)));
    }
    Ok(whole)
}

/// What a state file was made for: resuming with other options is refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateKey {
    /// The model evaluated, by what it computes ([`robal_models::checkpoint::model_digest`]),
    /// not by its path: a moved run folder resumes, a retrained one does not.
    #[serde(default)]
    pub model: String,
    /// Data set description.
    pub data: String,
    /// Attack list.
    pub attacks: Vec<AttackSpec>,
    /// Attack settings.
    pub settings: AttackSettings,
    /// Batch size.
    pub batch: usize,
    /// The part evaluated.
    pub shard: Shard,
    /// Labels of the images of the part (so a changed `--limit` or data set is caught).
    pub labels: Vec<u32>,
}

impl StateKey {
    /// What differs from `other`, named as the user knows it (empty when they are equal).
    pub fn differences(&self, other: &StateKey) -> Vec<&'static str> {
        let mut d = Vec::new();
        if self.model != other.model {
            d.push("model (other weights or head)");
        }
        if self.data != other.data || self.labels != other.labels {
            d.push("data set or --limit");
        }
        if self.attacks != other.attacks {
            d.push("attack list");
        }
        if self.settings != other.settings {
            d.push("attack settings");
        }
        if self.batch != other.batch {
            d.push("batch size");
        }
        if self.shard != other.shard {
            d.push("shard");
        }
        d
    }
}

/// The progress of an evaluation, saved while it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// What it is the state of.
    pub key: StateKey,
    /// Outcomes so far, the last one possibly partial.
    pub outcomes: Vec<AttackOutcome>,
}

impl State {
    /// Read the state at `path` (sealed: a damaged one is refused) and check it was made
    /// for `key`; `None` if there is none.
    pub fn load(path: &Path, key: &StateKey) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let state: State = crate::sealed::load(path, "state file")?;
        let differ = state.key.differences(key);
        if !differ.is_empty() {
            return Err(file_err(
                path,
                format!(
                    "was saved by an evaluation with another {}; run without --resume to start over (or remove this file)",
                    differ.join(", ")
                ),
            ));
        }
        Ok(Some(state))
    }

    /// Write it to `path`, sealed with its SHA-256, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::sealed::save(self, path)
    }
}
