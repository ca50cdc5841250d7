//! RoBal's training objective (SPEC section 5, "add_reg"):
//! beta_adv L(f(x_adv)) + beta_nat L(f(x)) + beta_reg KL(p(x) || p(x_adv)),
//! x_adv = PGD on CE of the raw logits, L RoBal's class-aware margin loss.

use candle_core::Tensor;

use super::{crafted, BnPasses, InnerAttack, Method, Objective, StepContext, StepOutput};
use crate::error::Result;
use crate::losses::trades_kl;

/// RoBal.
pub struct Robal {
    /// The inner attack (CE).
    pub attack: InnerAttack,
    /// Weight of the adversarial term.
    pub beta_adv: f64,
    /// Weight of the natural term.
    pub beta_nat: f64,
    /// Weight of the KL term (6 on CIFAR-10-LT).
    pub beta_reg: f64,
    /// Train-mode passes: adv, clean (`minimal`); adv, clean, clean, adv (`reference`:
    /// the outer loss, the natural term, then the KL term's own two passes).
    pub passes: BnPasses,
}

impl Objective for Robal {
    fn method(&self) -> Method {
        Method::Robal
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.attack.run(ctx, x, y)?))
    }

    fn outer(&self, ctx: &StepContext, x: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let x_adv = crafted(x_adv, self.method())?;
        let z_adv = ctx.train_logits(x_adv)?;
        let mut loss = (ctx.class_loss(&z_adv, y)? * self.beta_adv)?;
        let reference = self.passes == BnPasses::Reference;
        // The natural term's pass. The reference runs it even at beta_nat = 0 (its
        // `nat_loss` object is never None, train_modes.py:225-226).
        let z_nat = if self.beta_nat > 0.0 || reference {
            let zn = ctx.train_logits(x)?;
            if self.beta_nat > 0.0 {
                loss = (loss + (ctx.class_loss(&zn, y)? * self.beta_nat)?)?;
            }
            Some(zn)
        } else {
            None
        };
        if self.beta_reg > 0.0 {
            // KL(p(x) || p(x_adv)): on the passes already made (`minimal`), or on two
            // fresh ones, clean then adversarial, as the reference (:230-231).
            let (zn, z_kl) = match (&z_nat, reference) {
                (Some(zn), false) => (zn.clone(), z_adv.clone()),
                (None, false) => (ctx.train_logits(x)?, z_adv.clone()),
                (_, true) => (ctx.train_logits(x)?, ctx.train_logits(x_adv)?),
            };
            loss = (loss + (trades_kl(&zn, &z_kl)? * self.beta_reg)?)?;
            return Ok(StepOutput { loss, clean_logits: Some(zn), adv_logits: Some(z_adv) });
        }
        Ok(StepOutput { loss, clean_logits: z_nat, adv_logits: Some(z_adv) })
    }
}
