//! PGD adversarial training (Madry et al. 2018): L(f(x_adv)), x_adv = PGD on CE.
//! With the balanced softmax as L (`loss.kind = "logit-adjusted"`, tau = 1) this is AT-BSL.

use candle_core::Tensor;

use super::{crafted, InnerAttack, Method, Objective, StepContext, StepOutput};
use crate::error::Result;

/// PGD-AT.
pub struct PgdAt {
    /// The inner attack (CE).
    pub attack: InnerAttack,
}

impl Objective for PgdAt {
    fn method(&self) -> Method {
        Method::PgdAt
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.attack.run(ctx, x, y)?))
    }

    fn outer(&self, ctx: &StepContext, _: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let x_adv = crafted(x_adv, self.method())?;
        let z = ctx.train_logits(x_adv)?;
        Ok(StepOutput { loss: ctx.class_loss(&z, y)?, clean_logits: None, adv_logits: Some(z) })
    }
}
