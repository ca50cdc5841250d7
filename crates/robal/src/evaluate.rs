//! The evaluation used during and after training: clean and PGD accuracy, per class
//! and per shot group (the full suite and audit live in robal-eval).

use candle_core::{Device, Tensor};
use robal_attacks::{Attack, Model};
use robal_data::{Dataset, ImageSet, Loader, LoaderConfig, ShotGroup};
use robal_models::{Classifier, Mode};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A [`Classifier`] seen by attacks: evaluation mode, differentiable in the input.
pub struct EvalModel<'a>(pub &'a Classifier);

impl Model for EvalModel<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(x, Mode::Eval).map_err(candle_core::Error::wrap)
    }
}

/// Accuracy overall, per class (recall) and per shot group. A class absent from the
/// test images has recall NaN, written as JSON `null` and read back as NaN.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Accuracy {
    /// Overall accuracy.
    #[serde(deserialize_with = "null_as_nan")]
    pub overall: f64,
    /// Recall of each class, in class order.
    #[serde(deserialize_with = "nulls_as_nan")]
    pub per_class: Vec<f64>,
    /// Mean recall over the classes of each shot group (many, medium, few), if any.
    #[serde(deserialize_with = "groups_null_as_nan")]
    pub groups: Vec<(String, f64)>,
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nulls_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?.into_iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn groups_null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(String, f64)>, D::Error> {
    Ok(Vec::<(String, Option<f64>)>::deserialize(d)?.into_iter().map(|(g, v)| (g, v.unwrap_or(f64::NAN))).collect())
}

impl Accuracy {
    /// From per-example correctness flags and labels.
    pub fn from_flags(correct: &[bool], labels: &[u32], train_counts: &[usize]) -> Self {
        let c = train_counts.len();
        let (mut hit, mut tot) = (vec![0usize; c], vec![0usize; c]);
        for (&ok, &l) in correct.iter().zip(labels) {
            tot[l as usize] += 1;
            hit[l as usize] += ok as usize;
        }
        let per_class: Vec<f64> =
            hit.iter().zip(&tot).map(|(&h, &t)| if t > 0 { h as f64 / t as f64 } else { f64::NAN }).collect();
        // Groups none of whose classes is in the test set are left out.
        let groups = ShotGroup::means(&per_class, train_counts)
            .into_iter()
            .filter(|(_, _, mean)| !mean.is_nan())
            .map(|(g, _, mean)| (g.name().to_string(), mean))
            .collect();
        let overall = correct.iter().filter(|&&v| v).count() as f64 / correct.len().max(1) as f64;
        Self { overall, per_class, groups }
    }
}

/// Clean and PGD results on a test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuickEval {
    /// Images evaluated.
    pub images: usize,
    /// Clean accuracy.
    pub clean: Accuracy,
    /// PGD accuracy.
    pub pgd: Accuracy,
    /// The attack, e.g. `pgd-20`.
    pub attack: String,
}

/// Evaluate `model` on `limit` test images (0 = all), spread evenly over the set:
/// clean accuracy, and accuracy under `attack` (e.g. PGD-20).
pub fn quick_eval(
    model: &Classifier,
    test: &ImageSet,
    attack: &dyn Attack,
    limit: usize,
    batch: usize,
    seed: u64,
    device: &Device,
) -> Result<QuickEval> {
    let n = if limit == 0 { test.len() } else { limit.min(test.len()) };
    // An evenly spread, class-interleaved subset so a limit keeps every class.
    let idx: Vec<usize> = (0..n).map(|i| i * test.len() / n).collect();
    let subset = std::sync::Arc::new(test.subset(&idx)?);
    let loader = Loader::new(subset.clone(), LoaderConfig::eval(batch), device.clone())?;
    let pgd = attack;
    let view = EvalModel(model);
    let (mut clean, mut robust) = (Vec::new(), Vec::new());
    for (k, b) in loader.epoch(0).enumerate() {
        let b = b?;
        let y: Vec<u32> = b.labels.to_vec1()?;
        let pred = robal_attacks::model::predict(&view, &b.images)?;
        clean.extend(pred.iter().zip(&y).map(|(p, l)| p == l));
        let r = pgd.run(&view, &b.images, &b.labels, seed.wrapping_add(k as u64))?;
        robust.extend(r.success.iter().map(|s| !s));
    }
    let counts = test.classes().train_counts();
    Ok(QuickEval {
        images: n,
        clean: Accuracy::from_flags(&clean, subset.labels(), counts),
        pgd: Accuracy::from_flags(&robust, subset.labels(), counts),
        attack: pgd.name(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_from_flags_by_hand() {
        // Classes with 300 / 50 / 5 training images (many, medium, few); the test set
        // has two images of class 0 (one right), three of class 1 (two right) and none of
        // class 2, whose group is therefore left out.
        let labels = [0, 1, 0, 1, 1];
        let correct = [true, true, false, false, true];
        let a = Accuracy::from_flags(&correct, &labels, &[300, 50, 5]);
        assert_eq!(a.overall, 0.6);
        assert_eq!(&a.per_class[..2], &[0.5, 2.0 / 3.0]);
        assert!(a.per_class[2].is_nan());
        assert_eq!(a.groups, vec![("many".to_string(), 0.5), ("medium".to_string(), 2.0 / 3.0)]);
    }
}
