//! Classification metrics from a confusion matrix: per-class recall, precision
//! and F1, balanced accuracy, and group means (shot groups; ten groups of ten
//! classes for 100-class sets).

use robal_data::ShotGroup;
use serde::{Deserialize, Serialize};

/// Counts `m[t][p]` of examples with true class `t` predicted as `p`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// Row-major `num_classes x num_classes` counts.
    pub counts: Vec<Vec<u64>>,
}

/// Per-class metrics. For class c with confusion matrix m:
/// `recall_c = m[c][c] / sum_p m[c][p]`, `precision_c = m[c][c] / sum_t m[t][c]`,
/// F1_c = 2 P R / (P + R). A ratio with a zero denominator is 0 (sklearn's
/// `zero_division=0`), except recall of a class absent from the test set, which is NaN
/// and skipped by every mean.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Recall (per-class accuracy) of each class.
    #[serde(with = "crate::nan::many")]
    pub recall: Vec<f64>,
    /// Precision of each class.
    #[serde(with = "crate::nan::many")]
    pub precision: Vec<f64>,
    /// F1 of each class.
    #[serde(with = "crate::nan::many")]
    pub f1: Vec<f64>,
    /// Test examples of each class.
    pub support: Vec<u64>,
}

impl Confusion {
    /// Build from labels and predictions (equal lengths, values below `num_classes`).
    pub fn new(num_classes: usize, labels: &[u32], predicted: &[u32]) -> Self {
        let mut counts = vec![vec![0u64; num_classes]; num_classes];
        for (&t, &p) in labels.iter().zip(predicted) {
            counts[t as usize][p as usize] += 1;
        }
        Self { counts }
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.counts.len()
    }

    /// Overall accuracy: trace / total.
    pub fn accuracy(&self) -> f64 {
        let total: u64 = self.counts.iter().flatten().sum();
        let hit: u64 = (0..self.num_classes()).map(|c| self.counts[c][c]).sum();
        ratio(hit, total)
    }

    /// Recall, precision and F1 of every class.
    pub fn class_metrics(&self) -> ClassMetrics {
        let k = self.num_classes();
        let support: Vec<u64> = self.counts.iter().map(|r| r.iter().sum()).collect();
        let predicted: Vec<u64> = (0..k).map(|p| self.counts.iter().map(|r| r[p]).sum()).collect();
        let recall: Vec<f64> =
            (0..k).map(|c| if support[c] == 0 { f64::NAN } else { ratio(self.counts[c][c], support[c]) }).collect();
        let precision: Vec<f64> = (0..k).map(|c| ratio(self.counts[c][c], predicted[c])).collect();
        let f1 = recall
            .iter()
            .zip(&precision)
            .map(|(&r, &p)| if r.is_nan() || r + p == 0.0 { 0.0 } else { 2.0 * p * r / (p + r) })
            .collect();
        ClassMetrics { recall, precision, f1, support }
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

pub use robal_data::mean_present;

/// Balanced accuracy: the mean recall over the classes present in the test set.
pub fn balanced_accuracy(recall: &[f64]) -> f64 {
    mean_present(recall.iter().copied())
}

/// A named group of classes and the mean recall over its present classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupMean {
    /// `many`, `medium`, `few`, or `classes 0-9` etc.
    pub name: String,
    /// Class indices in the group.
    pub classes: Vec<usize>,
    /// Mean recall over the group's present classes.
    #[serde(with = "crate::nan::one")]
    pub mean: f64,
}

/// Shot groups by training count (many > 100, 20..=100 medium, few < 20), those
/// with at least one class.
pub fn shot_groups(recall: &[f64], train_counts: &[usize]) -> Vec<GroupMean> {
    ShotGroup::means(recall, train_counts)
        .into_iter()
        .map(|(g, classes, mean)| GroupMean { name: g.name().to_string(), classes, mean })
        .collect()
}

/// For sets of 100 classes or more (classes sorted by training count, as the
/// long-tailed sets are): ten groups of consecutive classes, `num_classes / 10` each.
/// Empty for fewer than 100 classes.
pub fn decile_groups(recall: &[f64]) -> Vec<GroupMean> {
    let k = recall.len();
    if k < 100 {
        return Vec::new();
    }
    (0..10)
        .map(|g| {
            let classes: Vec<usize> = (g * k / 10..(g + 1) * k / 10).collect();
            GroupMean {
                name: format!("classes {}-{}", classes[0], classes[classes.len() - 1]),
                mean: mean_present(classes.iter().map(|&c| recall[c])),
                classes,
            }
        })
        .collect()
}
