//! Adversarial weight perturbation (Wu, Xia and Wang 2020; METHODS.md section 1).
//!
//! Each step: g_l = grad_w L_outer at the current weights (train mode, BatchNorm
//! running statistics left as they were: the official code steps a proxy copy),
//! v_l = ||w_l||_F / (||g_l||_F + 1e-20) g_l for each perturbed tensor l, w += gamma v;
//! then the loss, backward and SGD step at the perturbed point; then the perturbation
//! is taken off. Perturbed tensors: rank > 1 with "weight" in the name (conv and FC
//! weights); BatchNorm parameters and biases are left alone.
//!
//! The proxy's one SGD step on -L gives D_l = lr g_l, and v normalises D per tensor, so
//! the proxy learning rate cancels (up to the 1e-20). We take g directly.
//!
//! **quirk** of RobustLT's re-implementation ([`AwpProxy::Optimizer`]): there the proxy
//! is the model itself and its own optimiser, copied and put back after the step, so D_l
//! is the real optimiser's step on -L: g'_l = -g_l + wd w_l, b'_l = mu b_l + g'_l (b_l
//! the momentum buffer, b'_l = g'_l before the first step), D_l = -lr b'_l, or
//! -lr (g'_l + mu b'_l) with Nesterov. The momentum and weight decay bend D away from the
//! ascent direction; the optimiser's state and the weights are restored, but the
//! BatchNorm update of the pass that built L stays (it ran on the model).

use candle_core::{Tensor, Var};
use robal_models::TensorKind;
use serde::{Deserialize, Serialize};

use super::{Method, Objective, StepContext};
use crate::error::{invalid, Result};
use crate::optim::Sgd;

/// Where AWP's weight direction D comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AwpProxy {
    /// The official code (csdongxian/AWP): a plain SGD step of a proxy copy, D = lr g.
    #[default]
    Gradient,
    /// **quirk** of RobustLT's code: the real optimiser's step (momentum, weight decay,
    /// Nesterov) on -L, its state then restored; the proxy pass's BatchNorm update stays.
    Optimizer,
}

/// `[awp]` in a config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwpConfig {
    /// Relative size gamma of the perturbation (0.01 AT-AWP, 0.005 TRADES-AWP).
    pub gamma: f64,
    /// First epoch (0-based) with AWP (0 AT-AWP, 10 TRADES-AWP).
    #[serde(default)]
    pub from_epoch: usize,
    /// Where D comes from (`"gradient"`, the default, or RobustLT's `"optimizer"`).
    #[serde(default)]
    pub proxy: AwpProxy,
}

impl AwpConfig {
    /// Check the fields, naming them.
    pub fn validate(&self, method: Method) -> Result<()> {
        if !(self.gamma >= 0.0 && self.gamma.is_finite()) {
            return Err(invalid("awp.gamma", format!("{}: must be a finite number >= 0", self.gamma)));
        }
        if method == Method::Plain {
            return Err(invalid("awp", "perturbs the weights against an adversarial objective; train.mode is plain"));
        }
        Ok(())
    }
}

/// Whether AWP perturbs a tensor: rank > 1 and "weight" in its name.
pub fn is_perturbed(name: &str, t: &Tensor) -> bool {
    t.rank() > 1 && name.contains("weight")
}

/// v = ||w||_F / (||g||_F + 1e-20) g: g rescaled to w's norm.
pub fn direction(w: &Tensor, g: &Tensor) -> Result<Tensor> {
    let wn = w.sqr()?.sum_all()?.sqrt()?;
    let gn = (g.sqr()?.sum_all()?.sqrt()? + 1e-20)?;
    Ok(g.broadcast_mul(&wn.broadcast_div(&gn)?)?)
}

/// A perturbation in force: for each perturbed tensor, its variable, the weights
/// before and the weights right after perturbing.
pub struct WeightPerturbation {
    saved: Vec<(Var, Tensor, Tensor)>,
}

impl WeightPerturbation {
    /// Perturb the parameters `params` by gamma v, v from the gradients g of `loss`
    /// (built at the current weights): v = ||w|| / (||D|| + 1e-20) D with D = g, or with
    /// `optimizer = Some((sgd, lr))` the change D that `sgd` would make stepping on -g
    /// ([`AwpProxy::Optimizer`]; `sgd` is not changed). With [`AwpProxy::Gradient`] the
    /// caller keeps the BatchNorm running statistics that building `loss` moved out of
    /// the model: [`snapshot_buffers`] before, [`restore_buffers`] after.
    pub fn apply(params: &[(String, Var)], loss: &Tensor, gamma: f64, optimizer: Option<(&Sgd, f64)>) -> Result<Self> {
        let grads = loss.backward()?;
        let mut saved = Vec::new();
        for (name, var) in params {
            let w = var.as_tensor();
            if !is_perturbed(name, w) {
                continue;
            }
            let Some(g) = grads.get(w) else { continue };
            let before = w.detach().copy()?;
            let d = match optimizer {
                None => g.detach(),
                Some((sgd, lr)) => sgd.trial_update(name, &before, &g.detach().neg()?, lr)?,
            };
            let v = direction(&before, &d)?;
            var.set(&(&before + (v * gamma)?)?)?;
            saved.push((var.clone(), before, var.as_tensor().detach().copy()?));
        }
        Ok(Self { saved })
    }

    /// Take the perturbation off: w <- w_before + (w - w_perturbed), so the step
    /// taken at the perturbed point is kept and, without a step, the weights are
    /// bit-identical to before (also for -0.0).
    pub fn restore(self) -> Result<()> {
        for (var, before, perturbed) in self.saved {
            let update = (var.as_tensor().detach() - &perturbed)?;
            let unchanged = update.eq(0.0)?;
            var.set(&unchanged.where_cond(&before, &(&before + &update)?)?)?;
        }
        Ok(())
    }
}

/// AWP's probe before one training step of `method` on batch `x`, `y` (adversarial
/// examples `x_adv`): the outer loss at the current weights, then the perturbation of
/// `params` from its gradients ([`WeightPerturbation::apply`]; with
/// [`AwpProxy::Optimizer`] from the step `sgd` would take at learning rate `lr`). The
/// gradient proxy leaves the BatchNorm running statistics as they were; RobustLT's
/// optimizer proxy keeps the probe's update. The caller steps, then
/// [`WeightPerturbation::restore`]s.
#[allow(clippy::too_many_arguments)]
pub fn probe(
    awp: &AwpConfig,
    method: &dyn Objective,
    ctx: &StepContext,
    x: &Tensor,
    y: &Tensor,
    x_adv: Option<&Tensor>,
    params: &[(String, Var)],
    sgd: &Sgd,
    lr: f64,
) -> Result<WeightPerturbation> {
    let keep_statistics = awp.proxy == AwpProxy::Gradient;
    let bn = keep_statistics.then(|| snapshot_buffers(ctx.model)).transpose()?;
    let at_w = method.outer(ctx, x, y, x_adv)?;
    if let Some(bn) = bn {
        restore_buffers(bn)?;
    }
    let optimizer = (awp.proxy == AwpProxy::Optimizer).then_some((sgd, lr));
    WeightPerturbation::apply(params, &at_w.loss, awp.gamma, optimizer)
}

/// Copies of the BatchNorm running statistics (every buffer of the model).
pub fn snapshot_buffers(model: &robal_models::Classifier) -> Result<Vec<(Var, Tensor)>> {
    model.store().vars(TensorKind::Buffer).into_iter().map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?))).collect()
}

/// Put the buffers of a [`snapshot_buffers`] back.
pub fn restore_buffers(snapshot: Vec<(Var, Tensor)>) -> Result<()> {
    for (var, t) in snapshot {
        var.set(&t)?;
    }
    Ok(())
}
