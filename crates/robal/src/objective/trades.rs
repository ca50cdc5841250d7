//! TRADES (Zhang et al. 2019): L(f(x)) + beta KL(p(x) || p(x_adv)), x_adv maximising the KL.

use candle_core::Tensor;

use super::{crafted, BnPasses, InnerAttack, Method, Objective, StepContext, StepOutput};
use crate::error::Result;
use crate::losses::trades_kl;

/// TRADES.
pub struct Trades {
    /// The inner attack (KL).
    pub attack: InnerAttack,
    /// beta (6).
    pub beta: f64,
    /// Train-mode passes: clean, adv (`minimal`); clean, adv, clean (`reference`).
    pub passes: BnPasses,
}

impl Objective for Trades {
    fn method(&self) -> Method {
        Method::Trades
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.attack.run(ctx, x, y)?))
    }

    fn outer(&self, ctx: &StepContext, x: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let x_adv = crafted(x_adv, self.method())?;
        let (z_nat, z_adv) = if self.passes == BnPasses::AdvFirst {
            let z_adv = ctx.train_logits(x_adv)?;
            (ctx.train_logits(x)?, z_adv)
        } else {
            let z_nat = ctx.train_logits(x)?;
            (z_nat, ctx.train_logits(x_adv)?)
        };
        // The reference computes the KL term from a third (clean) pass: same values in
        // train mode, one more update of the running statistics.
        let z_kl = match self.passes {
            BnPasses::Minimal | BnPasses::AdvFirst => z_nat.clone(),
            BnPasses::Reference => ctx.train_logits(x)?,
        };
        let loss = (ctx.class_loss(&z_nat, y)? + (trades_kl(&z_kl, &z_adv)? * self.beta)?)?;
        Ok(StepOutput { loss, clean_logits: Some(z_nat), adv_logits: Some(z_adv) })
    }
}
