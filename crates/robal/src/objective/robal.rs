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
    /// Train-mode passes: adv, clean (`minimal`); adv, clean, adv (`reference`).
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
        let mut z_nat = None;
        if self.beta_nat > 0.0 || self.beta_reg > 0.0 {
            let zn = ctx.train_logits(x)?;
            if self.beta_nat > 0.0 {
                loss = (loss + (ctx.class_loss(&zn, y)? * self.beta_nat)?)?;
            }
            if self.beta_reg > 0.0 {
                let z_kl = match self.passes {
                    BnPasses::Minimal => z_adv.clone(),
                    BnPasses::Reference => ctx.train_logits(x_adv)?,
                };
                loss = (loss + (trades_kl(&zn, &z_kl)? * self.beta_reg)?)?;
            }
            z_nat = Some(zn);
        }
        Ok(StepOutput { loss, clean_logits: z_nat, adv_logits: Some(z_adv) })
    }
}
