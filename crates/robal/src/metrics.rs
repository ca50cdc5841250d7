//! The lines of a run's `metrics.jsonl`, typed: what the trainer writes and what the
//! curves, the study's timings and resume read back, one definition for all of them.
//!
//! Each line is one JSON object. Its keys are written in sorted order (the records go
//! through [`serde_json::Value`], whose objects are sorted), so the files are the same
//! bytes the untyped writer produced and old files read back unchanged.

use serde::{Deserialize, Serialize};

use crate::config::Stage2Kind;
use crate::error::{invalid, Result};
use crate::evaluate::QuickEval;

/// One training epoch: its loss and batch accuracies, learning rate and time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpochRecord {
    /// Accuracy of the training batches' adversarial inputs, if the method crafts them.
    pub adv_batch_acc: Option<f64>,
    /// Accuracy of the training batches' clean inputs, if the method's step sees them.
    pub clean_batch_acc: Option<f64>,
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Training images per second over the epoch.
    pub img_per_s: f64,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Learning rate at the epoch's start.
    pub lr: f64,
    /// Wall-clock seconds of the epoch.
    pub seconds: f64,
}

/// The model-selection score of an epoch; exactly one field is set (which one says what
/// was scored).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectionRecord {
    /// Epoch number, 1-based.
    pub epoch: usize,
    /// Overall PGD accuracy on the test set (`eval.select_on_test`, the papers' practice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_overall_pgd: Option<f64>,
    /// Balanced AutoAttack accuracy on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_balanced_autoattack: Option<f64>,
    /// Balanced PGD accuracy on the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_balanced_pgd: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricsRecord {
    /// An epoch of the second stage (re-sampling fine-tuning, LWS).
    Stage2 {
        /// Epoch number within the second stage, 1-based.
        epoch: usize,
        /// Mean loss over the epoch's steps.
        loss: f64,
        /// Which second stage.
        stage2: Stage2Kind,
    },
    /// The periodic quick evaluation after an epoch.
    QuickEval {
        /// Epoch number, 1-based.
        epoch: usize,
        /// Clean and PGD accuracy on the test images.
        quick_eval: QuickEval,
    },
    /// A training epoch.
    Epoch(EpochRecord),
    /// The selection score of an epoch.
    Selection(SelectionRecord),
}

impl MetricsRecord {
    /// The epoch the line belongs to.
    pub fn epoch(&self) -> usize {
        match self {
            MetricsRecord::Stage2 { epoch, .. } | MetricsRecord::QuickEval { epoch, .. } => *epoch,
            MetricsRecord::Epoch(r) => r.epoch,
            MetricsRecord::Selection(r) => r.epoch,
        }
    }

    /// The line as written: one JSON object, keys sorted, no newline.
    pub fn to_line(&self) -> Result<String> {
        let value = serde_json::to_value(self).map_err(|e| invalid("metrics record", e.to_string()))?;
        Ok(value.to_string())
    }

    /// Every line of `text` that parses as a record, in order (lines of other shapes,
    /// from a newer writer, say, are skipped).
    pub fn parse_all(text: &str) -> Vec<MetricsRecord> {
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

/// The epoch a metrics line names, whatever its other fields (a line of a shape this
/// version does not know, or one a kill left half-formed but parseable, still has one):
/// what resume uses to drop the lines of epochs after the checkpoint.
pub fn line_epoch(line: &str) -> Option<usize> {
    #[derive(Deserialize)]
    struct EpochOnly {
        epoch: Option<usize>,
    }
    serde_json::from_str::<EpochOnly>(line).ok()?.epoch
}
