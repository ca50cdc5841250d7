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

use candle_core::{Tensor, Var};
use robal_models::TensorKind;
use serde::{Deserialize, Serialize};

use super::Method;
use crate::error::{invalid, Result};

/// `[awp]` in a config.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwpConfig {
    /// Relative size gamma of the perturbation (0.01 AT-AWP, 0.005 TRADES-AWP).
    pub gamma: f64,
    /// First epoch (0-based) with AWP (0 AT-AWP, 10 TRADES-AWP).
    #[serde(default)]
    pub from_epoch: usize,
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
    /// Perturb the parameters `params` by gamma v, v from the gradients of `loss`
    /// (built at the current weights). The caller keeps the BatchNorm running statistics
    /// that building `loss` moved out of the model: [`snapshot_buffers`] before,
    /// [`restore_buffers`] after.
    pub fn apply(params: &[(String, Var)], loss: &Tensor, gamma: f64) -> Result<Self> {
        let grads = loss.backward()?;
        let mut saved = Vec::new();
        for (name, var) in params {
            let w = var.as_tensor();
            if !is_perturbed(name, w) {
                continue;
            }
            let Some(g) = grads.get(w) else { continue };
            let before = w.detach().copy()?;
            let v = direction(&before, &g.detach())?;
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
