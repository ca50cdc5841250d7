//! MCAT's geometry term as a plug-in for any objective (METHODS.md section 9): the
//! outer loss gains beta_g R_ETF(W), W the head's class weights ([`etf_regularizer`]).
//! MCAT's code computes its manifold distance without gradient, so what trains is
//! PGD-AT plus this term; with `[etf]` in a config the term joins whatever
//! `train.mode` says.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{Method, Objective, StepContext, StepOutput};
use crate::error::Result;
use crate::losses::etf_regularizer;

/// `[etf]`: the weight beta_g of the ETF regulariser.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtfConfig {
    /// beta_g (1.0 in MCAT's code; its appendix sweeps about 1e-3 to 1e-2).
    pub weight: f64,
}

/// An objective whose outer loss is the wrapped one's plus beta_g R_ETF(W).
pub struct EtfRegularized {
    /// The objective being regularised.
    pub inner: Box<dyn Objective>,
    /// Its settings.
    pub config: EtfConfig,
}

impl Objective for EtfRegularized {
    fn method(&self) -> Method {
        self.inner.method()
    }

    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>> {
        self.inner.craft(ctx, x, y)
    }

    fn outer(&self, ctx: &StepContext, x: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput> {
        let mut out = self.inner.outer(ctx, x, y, x_adv)?;
        let w = ctx.model.head_weight();
        let r = etf_regularizer(w)?.to_dtype(out.loss.dtype())?;
        out.loss = (out.loss + (r * self.config.weight)?)?;
        Ok(out)
    }

    fn observe(&self, y: &Tensor, out: &StepOutput) -> Result<()> {
        self.inner.observe(y, out)
    }

    fn observe_after_update(&self, y: &Tensor, adv_logits: &Tensor) -> Result<()> {
        self.inner.observe_after_update(y, adv_logits)
    }

    fn end_epoch(&self) {
        self.inner.end_epoch()
    }

    fn state(&self) -> Option<String> {
        self.inner.state()
    }

    fn load_state(&self, state: &str) -> Result<()> {
        self.inner.load_state(state)
    }
}
