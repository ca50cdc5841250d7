//! TAET's second stage (METHODS.md section 4): HARL on per-example losses of
//! f(x_adv), x_adv = PGD on CE from x + 0.001 N(0, 1). The first stage (clean CE) is
//! the trainer's `train.clean_epochs`.

use candle_core::Tensor;

use super::{crafted, InnerAttack, Method, Objective, StepContext, StepOutput};
use crate::error::Result;
use crate::losses::harl;

/// TAET (HARL stage).
pub struct Taet {
    /// The inner attack (CE).
    pub attack: InnerAttack,
    /// HARL's weights of mean, variance and squared shares (0.1 each).
    pub weights: [f64; 3],
}

impl Objective for Taet {
    fn method(&self) -> Method {
        Method::Taet
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(self.attack.run(ctx, x, y)?))
    }

    fn outer(&self, ctx: &StepContext, _: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let x_adv = crafted(x_adv, self.method())?;
        let z = ctx.train_logits(x_adv)?;
        let per_example = ctx.loss.per_example(&z, y)?;
        let loss = harl(&per_example, y, z.dim(1)?, self.weights)?;
        Ok(StepOutput { loss, clean_logits: None, adv_logits: Some(z) })
    }
}
