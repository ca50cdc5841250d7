//! SGD with momentum and weight decay (PyTorch's rule), and the learning-rate schedule.

use std::collections::BTreeMap;

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor, Var};

use crate::error::Result;

/// SGD: v <- mu v + (g + wd p); p <- p - lr v. Momentum buffers are detached, so no
/// step keeps the previous step's graph alive. On the CPU (f32) both updates run in
/// place, one pass each, with no temporaries (PyTorch's in-place rule); elsewhere they
/// are tensor ops.
pub struct Sgd {
    params: Vec<(String, Var)>,
    buffers: BTreeMap<String, Tensor>,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
}

impl Sgd {
    /// Optimise `params` (name, variable).
    pub fn new(params: Vec<(String, Var)>, momentum: f64, weight_decay: f64) -> Self {
        Self { params, buffers: BTreeMap::new(), momentum, weight_decay, nesterov: false }
    }

    /// Nesterov momentum (PyTorch's rule): g' = g + wd p; v <- mu v + g';
    /// p <- p - lr (g' + mu v). The first step has v = g'.
    pub fn with_nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }

    /// One update with learning rate `lr` from the gradients of `loss`.
    pub fn step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        let grads = loss.backward()?;
        for (name, var) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let p = var.as_tensor();
            if !self.nesterov {
                if let Some(v) = self.buffers.get(name).filter(|v| in_place(&[p, g, v])) {
                    v.inplace_op3(g, p, &Momentum { momentum: self.momentum, weight_decay: self.weight_decay })?;
                    p.inplace_op2(v, &Descend { lr })?;
                    continue;
                }
            }
            // Nesterov, the first step (v = g + wd p, a fresh tensor) or a device without
            // the kernels.
            let (v, step) = self.velocity_and_step(name, p, &g.detach())?;
            if !self.nesterov && in_place(&[p, &v]) {
                p.inplace_op2(&v, &Descend { lr })?;
            } else {
                var.set(&(p.detach() - (step * lr)?)?)?;
            }
            self.buffers.insert(name.clone(), v.detach());
        }
        Ok(())
    }

    /// The new momentum buffer v' and the step direction d of parameter `name` (value
    /// `p`) for gradient `grad`: g' = grad + wd p; v' = mu v + g' (v' = g' before the
    /// first step); d = v', or g' + mu v' with Nesterov. The update is p <- p - lr d.
    fn velocity_and_step(&self, name: &str, p: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let g = (grad + (p.detach() * self.weight_decay)?)?;
        let v = match self.buffers.get(name) {
            Some(b) => ((b * self.momentum)? + &g)?,
            None => g.clone(),
        };
        let step = if self.nesterov { (&g + (&v * self.momentum)?)? } else { v.clone() };
        Ok((v, step))
    }

    /// The change p' - p = -lr d that one [`Sgd::step`] with gradient `grad` would make
    /// to the parameter `name` (value `p`), leaving the optimiser's state untouched
    /// (d as in [`Sgd::step`]: the momentum buffer, or g' + mu v' with Nesterov).
    pub fn trial_update(&self, name: &str, p: &Tensor, grad: &Tensor, lr: f64) -> Result<Tensor> {
        let (_, step) = self.velocity_and_step(name, p, &grad.detach())?;
        Ok((step * -lr)?)
    }

    /// Momentum buffers by parameter name (for checkpoints). They are updated in place
    /// by the next step: copy them to keep a snapshot.
    pub fn state(&self) -> &BTreeMap<String, Tensor> {
        &self.buffers
    }

    /// Restore momentum buffers (copied: later steps update them in place).
    pub fn set_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        self.buffers = state.into_iter().map(|(n, t)| Ok((n, t.detach().copy()?))).collect::<Result<_>>()?;
        Ok(())
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

/// **quirk** of the RoBal reference code's `adjust_learning_rate` (train.py), which runs
/// at the start of every epoch e = 1, 2, ... (1-based) and multiplies the *current* lr:
/// decay_e = gamma^(number of milestones m <= e), replaced by (e + 1) / warmup while
/// e < warmup; lr_e = lr * prod_{k=1..e} decay_k. With milestones (60, 75) the lr is 0.1
/// for e = 1..59, then 1e-2, 1e-3, 1e-4, ... one decade per epoch (two from 75): training
/// in effect stops after ~62 epochs. Returns lr at 0-based `epoch` (= e - 1), constant
/// through the epoch; `milestones` are the code's 1-based epoch numbers.
pub fn cumulative_learning_rate(lr: f64, epoch: usize, warmup: usize, milestones: &[usize], gamma: f64) -> f64 {
    (1..=epoch + 1).fold(lr, |lr, e| {
        let decay = if e < warmup {
            (e + 1) as f64 / warmup as f64
        } else {
            gamma.powi(milestones.iter().filter(|&&m| e >= m).count() as i32)
        };
        lr * decay
    })
}

/// Whether the in-place CPU kernels serve these tensors: f32, contiguous, on the CPU,
/// all of one shape.
fn in_place(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() && t.shape() == ts[0].shape())
}

/// The f32 elements of a contiguous operand of an in-place kernel.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => Err(candle_core::Error::Msg("sgd: expected contiguous f32 operands".into())),
    }
}

fn f32s_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => Err(candle_core::Error::Msg("sgd: expected contiguous f32 operands".into())),
    }
}

/// v <- mu v + (g + wd p), in place on v (operands v, g, p).
struct Momentum {
    momentum: f64,
    weight_decay: f64,
}

impl InplaceOp3 for Momentum {
    fn name(&self) -> &'static str {
        "robal-sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (mu, wd) = (self.momentum as f32, self.weight_decay as f32);
        let (g, p) = (f32s(s2, l2)?, f32s(s3, l3)?);
        let v = f32s_mut(s1, l1)?;
        for ((v, &g), &p) in v.iter_mut().zip(g).zip(p) {
            *v = *v * mu + (g + p * wd);
        }
        Ok(())
    }
}

/// p <- p - lr v, in place on p (operands p, v).
struct Descend {
    lr: f64,
}

impl InplaceOp2 for Descend {
    fn name(&self) -> &'static str {
        "robal-sgd-descend"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let lr = self.lr as f32;
        let v = f32s(s2, l2)?;
        let p = f32s_mut(s1, l1)?;
        for (p, &v) in p.iter_mut().zip(v) {
            *p -= v * lr;
        }
        Ok(())
    }
}
