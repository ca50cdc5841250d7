//! SGD with momentum and weight decay (PyTorch's rule), and the learning-rate schedule.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use crate::error::Result;

/// SGD: v <- mu v + (g + wd p); p <- p - lr v. Momentum buffers are detached, so no
/// step keeps the previous step's graph alive.
pub struct Sgd {
    params: Vec<(String, Var)>,
    buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    weight_decay: f64,
}

impl Sgd {
    /// Optimise `params` (name, variable).
    pub fn new(params: Vec<(String, Var)>, momentum: f64, weight_decay: f64) -> Self {
        Self { params, buffers: BTreeMap::new(), momentum, weight_decay }
    }

    /// One update with learning rate `lr` from the gradients of `loss`.
    pub fn step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let grads = loss.backward()?;
        for (name, p) in &self.params {
            let Some(g) = grads.get(p.as_tensor()) else { continue };
            let g = (g.detach() + (p.as_tensor().detach() * self.weight_decay)?)?;
            let v = match self.buffers.get(name) {
                Some(b) => ((b * self.momentum)? + g)?,
                None => g,
            };
            p.set(&(p.as_tensor().detach() - (&v * lr)?)?)?;
            self.buffers.insert(name.clone(), v.detach());
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints).
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Restore momentum buffers.
    pub fn set_state(&mut self, state: BTreeMap<String, Tensor>) {
        self.buffers = state;
    }
}

/// Learning rate at `epoch` (0-based) and fractional progress `t` in [0,1) through it:
/// linear warm-up over `warmup` epochs, then `lr * gamma^(number of milestones <= epoch)`.
pub fn learning_rate(lr: f64, epoch: usize, t: f64, warmup: usize, milestones: &[usize], gamma: f64) -> f64 {
    if epoch < warmup {
        return lr * (epoch as f64 + t + 1e-9).min(warmup as f64) / warmup as f64;
    }
    lr * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32)
}
