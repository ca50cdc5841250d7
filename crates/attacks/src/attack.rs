//! The attack interface.

use candle_core::{Result, Tensor};

use crate::model::Model;

/// Adversarial images for a batch and whether each one fools the model.
#[derive(Clone, Debug)]
pub struct AttackResult {
    /// Adversarial images (B, C, H, W), inside the eps-ball around x and the \[0, 1\] box.
    pub adv: Tensor,
    /// `success[i]`: the model misclassifies `adv[i]` (prediction != label). A point
    /// the model already misclassifies counts as a success (adv = x if nothing better).
    pub success: Vec<bool>,
}

/// A white-box attack on a batch. Deterministic for a given `seed`; never changes the model.
pub trait Attack {
    /// Name for reports, e.g. `pgd-20`.
    fn name(&self) -> String;
    /// Attack images `x` (B, C, H, W) in \[0, 1\] with labels `y` (B,) u32.
    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult>;
}

/// Running per-example record of the first misclassifying iterate ("adv") seen.
pub(crate) struct Tracker {
    pub adv: Tensor,
    pub success: Vec<bool>,
}

impl Tracker {
    /// Start from the clean input: points already misclassified are successes.
    pub fn new(x: &Tensor, fooled: Vec<bool>) -> Self {
        Self { adv: x.clone(), success: fooled }
    }

    /// Keep `candidate[i]` for every i not yet fooled that `fooled[i]` says is fooled now.
    pub fn update(&mut self, candidate: &Tensor, fooled: &[bool]) -> Result<()> {
        let newly: Vec<bool> = self.success.iter().zip(fooled).map(|(s, f)| !s && *f).collect();
        if newly.iter().any(|&v| v) {
            self.adv = crate::model::select_rows(&newly, candidate, &self.adv)?;
            for (s, n) in self.success.iter_mut().zip(&newly) {
                *s |= n;
            }
        }
        Ok(())
    }

    /// Final images: the fooling iterate where one was found, else `fallback`.
    pub fn finish(self, fallback: &Tensor) -> Result<AttackResult> {
        let adv = crate::model::select_rows(&self.success, &self.adv, fallback)?;
        Ok(AttackResult { adv, success: self.success })
    }
}
