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
        let groups = [ShotGroup::Many, ShotGroup::Medium, ShotGroup::Few]
            .iter()
            .filter_map(|&g| {
                let members: Vec<f64> = (0..c)
                    .filter(|&k| ShotGroup::of_count(train_counts[k]) == g && tot[k] > 0)
                    .map(|k| per_class[k])
                    .collect();
                (!members.is_empty())
                    .then(|| (g.name().to_string(), members.iter().sum::<f64>() / members.len() as f64))
            })
            .collect();
        let overall = correct.iter().filter(|&&v| v).count() as f64 / correct.len().max(1) as f64;
        Self { overall, per_class, groups }
    }
}

/// Clean and PGD results on a test set.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
