//! REAT (METHODS.md section 3): inner PGD on RBL, the CE re-weighted by how often each
//! class was predicted for the adversarial training examples of the last epoch; outer
//! loss L(f(x_adv)) (the balanced softmax in the preset) + TAIL on the penultimate
//! features of x_adv.
//!
//! Note: with L-inf sign steps and the model in eval mode, a positive per-example weight
//! does not change the sign of that example's input gradient, so RBL's inner maximisation
//! takes the same steps as CE's (up to float rounding of near-zero gradients). The counts
//! are kept anyway, as in the official code, and saved with each checkpoint.

use std::sync::Mutex;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::{crafted, InnerAttack, Method, Objective, StepContext, StepOutput};
use crate::error::{invalid, Result};
use crate::losses::{rbl_weights, tail, TailReduction};

/// `[reat]` in a config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReatConfig {
    /// Weight of the TAIL term (1 in the official code).
    #[serde(default = "unit")]
    pub tail_weight: f64,
    /// Pair reduction of TAIL: `pairwise` (default) or `official` (the code's quirk).
    #[serde(default)]
    pub tail: TailReduction,
    /// Count a class predicted for no example as 1 (`true`, default) or as 0, which
    /// gives it a weight of ~1e5 before rescaling (`false`, the official code's quirk).
    #[serde(default = "yes")]
    pub clamp_counts: bool,
    /// Which adversarial logits the prediction counts a_c are taken from: those of the
    /// outer loss (`outer`, default, REAT's code) or those of the train-mode logging pass
    /// after the optimiser step (`after-update`, RobustLT's REAT; needs
    /// `train.log_passes = true`).
    #[serde(default)]
    pub count: PredictionCount,
}

/// Where REAT counts its adversarial predictions (`reat.count`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PredictionCount {
    /// argmax f(x_adv) of the outer loss's forward pass, before the update (REAT's code).
    #[default]
    Outer,
    /// argmax f(x_adv) of the logging pass after the update, train mode (RobustLT's
    /// `REAT.update`, core/methods/reat.py:40-55).
    AfterUpdate,
}

fn unit() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl Default for ReatConfig {
    fn default() -> Self {
        Self { tail_weight: 1.0, tail: TailReduction::Pairwise, clamp_counts: true, count: PredictionCount::Outer }
    }
}

/// Prediction counts a_c used this epoch, and those being counted for the next.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Counts {
    current: Vec<usize>,
    next: Vec<usize>,
}

/// REAT.
pub struct Reat {
    /// The inner attack (RBL).
    pub attack: InnerAttack,
    /// Settings.
    pub config: ReatConfig,
    counts: Mutex<Option<Counts>>,
}

impl Reat {
    /// REAT with its inner attack; a_c starts at n_c (the training counts).
    pub fn new(attack: InnerAttack, config: ReatConfig) -> Self {
        Self { attack, config, counts: Mutex::new(None) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Counts>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Add argmax z (B, C) to the counts of the next epoch.
    fn count(&self, z: &Tensor) -> Result<()> {
        let predicted = z.detach().argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let mut guard = self.lock();
        if let Some(c) = guard.as_mut() {
            for p in predicted {
                if let Some(slot) = c.next.get_mut(p as usize) {
                    *slot += 1;
                }
            }
        }
        Ok(())
    }

    /// The class weights of this epoch for training counts `n`.
    pub fn weights(&self, n: &[usize]) -> Vec<f64> {
        let mut guard = self.lock();
        let counts = guard.get_or_insert_with(|| Counts { current: n.to_vec(), next: vec![0; n.len()] });
        rbl_weights(n, &counts.current, self.config.clamp_counts)
    }
}

impl Objective for Reat {
    fn method(&self) -> Method {
        Method::Reat
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        let w = self.weights(ctx.loss.counts());
        Ok(Some(self.attack.run_weighted(ctx, x, y, Some(&w))?))
    }

    fn outer(&self, ctx: &StepContext, _: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let x_adv = crafted(x_adv, self.method())?;
        let h = ctx.model.features(x_adv, robal_models::Mode::Train)?;
        let z = ctx.model.logits_from_features(&h)?;
        let mut loss = ctx.class_loss(&z, y)?;
        if self.config.tail_weight != 0.0 {
            loss = (loss + (tail(&h, y, ctx.loss.counts(), self.config.tail)? * self.config.tail_weight)?)?;
        }
        Ok(StepOutput { loss, clean_logits: None, adv_logits: Some(z) })
    }

    fn observe(&self, _: &Tensor, out: &StepOutput) -> Result<()> {
        match (&out.adv_logits, self.config.count) {
            (Some(z), PredictionCount::Outer) => self.count(z),
            _ => Ok(()),
        }
    }

    fn observe_after_update(&self, _: &Tensor, adv_logits: &Tensor) -> Result<()> {
        match self.config.count {
            PredictionCount::AfterUpdate => self.count(adv_logits),
            PredictionCount::Outer => Ok(()),
        }
    }

    fn end_epoch(&self) {
        if let Some(c) = self.lock().as_mut() {
            c.current = std::mem::replace(&mut c.next, vec![0; c.current.len()]);
        }
    }

    fn state(&self) -> Option<String> {
        self.lock().as_ref().and_then(|c| serde_json::to_string(c).ok())
    }

    fn load_state(&self, state: &str) -> Result<()> {
        let c: Counts = serde_json::from_str(state)
            .map_err(|e| invalid("checkpoint objective_state", format!("not REAT's prediction counts: {e}")))?;
        *self.lock() = Some(c);
        Ok(())
    }
}
