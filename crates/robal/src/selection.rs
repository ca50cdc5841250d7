//! Model selection without the test set: a validation split held out of the long-tailed
//! training set, and the checkpoint of the epoch with the best balanced PGD accuracy on it.
//!
//! The split takes, per class, floor(fraction n_c) training images (seeded by
//! `train.seed`, so the same run always holds out the same images); the model trains on
//! the rest, and its class counts (prior, margins, shot groups) are those of the rest.
//! Every `eval.every` epochs and at the last epoch, PGD (`eval.steps`, `eval.eps`) runs on
//! the whole validation split, or with `eval.selection_autoattack = N` AutoAttack's
//! APGD-CE + APGD-T on N evenly spread validation images (a cheaper worst case than the
//! full suite, stronger than PGD); the criterion is the class-mean (balanced) robust accuracy,
//! so that the tail classes count as much as the head. The best epoch's model, with its
//! evaluation head, goes to `best.safetensors` (metadata: epoch and value), atomically.

use std::path::Path;

use candle_core::Device;
use robal_attacks::Attack;
use robal_data::{Dataset, ImageSet, Selection};
use robal_models::checkpoint::{self, CheckpointInfo};
use robal_models::Classifier;
use serde::Serialize;

use crate::error::{invalid, Result};
use crate::evaluate::quick_eval;

/// Metadata key of `best.safetensors` with the criterion's value.
pub const BEST_VALUE_KEY: &str = "selection_value";

/// File name of the selected model in the run folder.
pub const BEST_FILE: &str = "best.safetensors";

/// Split `train` into (training, validation): floor(fraction n_c) images of each class
/// go to validation (none when `fraction` is 0).
pub fn split_validation(train: ImageSet, fraction: f64, seed: u64) -> Result<(ImageSet, Option<ImageSet>)> {
    if fraction <= 0.0 {
        return Ok((train, None));
    }
    let counts: Vec<usize> = train.label_counts().iter().map(|&n| (n as f64 * fraction).floor() as usize).collect();
    if counts.iter().all(|&n| n == 0) {
        return Err(invalid("data.validation", format!("{fraction} of the training counts holds out no image")));
    }
    let held = robal_data::select(train.labels(), &counts, Selection::Seeded { seed: seed ^ 0x7A11_DA7E })?;
    let mut is_held = vec![false; train.len()];
    for &i in &held {
        is_held[i] = true;
    }
    let kept: Vec<usize> = (0..train.len()).filter(|&i| !is_held[i]).collect();
    let validation = train.subset(&held)?;
    let rest = train.subset(&kept)?.counted_as_training()?;
    let validation = validation.with_classes(rest.classes().clone())?;
    Ok((rest, Some(validation)))
}

/// Which epoch was kept, and on what.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct SelectionReport {
    /// Epoch (1-based) of `best.safetensors`.
    pub epoch: usize,
    /// The criterion's value at that epoch.
    pub value: f64,
    /// What the criterion is.
    pub criterion: String,
}

/// What the kept epoch is best at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criterion {
    /// Class-mean robust accuracy on a validation split held out of training.
    BalancedValidation,
    /// Overall robust accuracy on the test set (MCAT's code, `eval.select_on_test`).
    OverallTest,
}

/// The best epoch so far.
pub struct BestModel {
    validation: ImageSet,
    attack: Box<dyn Attack + Send + Sync>,
    /// Validation images the criterion uses (0 = all).
    limit: usize,
    best: Option<(usize, f64)>,
    criterion: Criterion,
}

impl BestModel {
    /// Select on `validation` (the first `limit` of an evenly spread subset, 0 = all)
    /// with `attack`; `previous` is the best (epoch, value) of an interrupted run, read
    /// back from its `best.safetensors`.
    pub fn new(
        validation: ImageSet,
        attack: Box<dyn Attack + Send + Sync>,
        limit: usize,
        previous: Option<(usize, f64)>,
    ) -> Self {
        Self { validation, attack, limit, best: previous, criterion: Criterion::BalancedValidation }
    }

    /// Select on the overall accuracy under `attack` of the whole `test` set (MCAT's
    /// code: a quirk, `eval.select_on_test`); `previous` as in [`Self::new`].
    pub fn on_test(test: ImageSet, attack: Box<dyn Attack + Send + Sync>, previous: Option<(usize, f64)>) -> Self {
        Self { validation: test, attack, limit: 0, best: previous, criterion: Criterion::OverallTest }
    }

    /// The (epoch, value) recorded in a run folder's `best.safetensors`, if any.
    pub fn recorded(run_dir: &Path, device: &Device) -> Option<(usize, f64)> {
        let (_, info) = checkpoint::load(&run_dir.join(BEST_FILE), device).ok()?;
        Some((info.epoch as usize, info.extra.get(BEST_VALUE_KEY)?.parse().ok()?))
    }

    /// Evaluate `eval_model` (the model with its evaluation head) after `epoch` (1-based);
    /// keep it in `run_dir/best.safetensors` if it beats the best so far (ties keep the
    /// earlier epoch). Returns the criterion's value.
    pub fn consider(&mut self, eval_model: &Classifier, epoch: usize, run_dir: &Path, device: &Device) -> Result<f64> {
        let q = quick_eval(eval_model, &self.validation, self.attack.as_ref(), self.limit, 128, 0, device)?;
        let value = match self.criterion {
            Criterion::BalancedValidation => {
                let present: Vec<f64> = q.pgd.per_class.iter().copied().filter(|v| v.is_finite()).collect();
                present.iter().sum::<f64>() / present.len().max(1) as f64
            }
            Criterion::OverallTest => q.pgd.overall,
        };
        if self.best.is_none_or(|(_, b)| value > b) {
            let extra = [(BEST_VALUE_KEY.to_string(), value.to_string())].into_iter().collect();
            checkpoint::save(eval_model, &run_dir.join(BEST_FILE), &CheckpointInfo { epoch: epoch as u64, extra })?;
            self.best = Some((epoch, value));
        }
        Ok(value)
    }

    /// The kept epoch and what it was selected on.
    pub fn report(&self) -> Option<SelectionReport> {
        let n = self.validation.len();
        let criterion = match self.criterion {
            Criterion::BalancedValidation => format!(
                "balanced (class-mean) {} accuracy on {} of the {n} validation images held out of training",
                self.attack.name(),
                if self.limit == 0 { n } else { self.limit.min(n) },
            ),
            Criterion::OverallTest => format!(
                "overall {} accuracy on the {n} test images (MCAT's code; selected on the test set, so optimistic)",
                self.attack.name()
            ),
        };
        self.best.map(|(epoch, value)| SelectionReport { epoch, value, criterion: criterion.clone() })
    }
}
