//! Standard training: L(f(x)).

use candle_core::Tensor;

use super::{Method, Objective, StepContext, StepOutput};
use crate::error::Result;

/// Standard training on clean inputs (also TAET's first stage).
pub struct Plain;

impl Objective for Plain {
    fn method(&self) -> Method {
        Method::Plain
    }

    fn craft(&self, _: &StepContext, _: &Tensor, _: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    fn outer(&self, ctx: &StepContext, x: &Tensor, y: &Tensor, _: Option<&Tensor>) -> Result<StepOutput> {
        let z = ctx.train_logits(x)?;
        Ok(StepOutput { loss: ctx.class_loss(&z, y)?, clean_logits: Some(z), adv_logits: None })
    }
}
