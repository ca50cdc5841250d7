//! FGSM, PGD (CE / CW / DLR, untargeted or targeted, restarts) and MIM.

use candle_core::{Result, Tensor};

use crate::attack::{Attack, AttackResult, Tracker};
use crate::loss::Loss;
use crate::model::{fooled_by, loss_and_grad, misclassified, Model};
use crate::threat::{ascent_direction, project, start, Norm, RandomStart};

fn labels(y: &Tensor) -> Result<Vec<u32>> {
    y.to_vec1::<u32>()
}

/// FGSM: x_adv = clip_\[0, 1\](x + eps * sign(grad_x CE(f(x), y))).
#[derive(Clone, Debug)]
pub struct Fgsm {
    /// L-inf radius.
    pub eps: f64,
}

impl Attack for Fgsm {
    fn name(&self) -> String {
        "fgsm".into()
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, _seed: u64) -> Result<AttackResult> {
        let yv = labels(y)?;
        let step = loss_and_grad(model, x, y, &Loss::CrossEntropy)?;
        let mut track = Tracker::new(x, fooled_by(&step.logits, &yv)?);
        let adv = project(&(x + (step.grad.sign()? * self.eps)?)?, x, self.eps, Norm::Linf)?;
        track.update(&adv, &misclassified(model, &adv, &yv)?)?;
        track.finish(&adv)
    }
}

/// Projected gradient ascent on a loss (Madry et al. 2018):
/// x_{k+1} = P(x_k + alpha * d(grad)), d = sign (L-inf) or grad/||grad||_2 (L2),
/// P the projection on the eps-ball and the \[0, 1\] box. With `Loss::CwMargin { kappa: 50 }`
/// this is the CW-inf attack of SPEC section 6.
#[derive(Clone, Debug)]
pub struct Pgd {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Step size alpha.
    pub step_size: f64,
    /// Iterations.
    pub steps: usize,
    /// Independent restarts (each from its own random start); >= 1.
    pub restarts: usize,
    /// Start point.
    pub random_start: RandomStart,
    /// Objective (targeted losses carry their targets).
    pub loss: Loss,
}

impl Pgd {
    /// The paper's evaluation PGD-20: L-inf, eps, step 2/255, random start, CE.
    pub fn linf(eps: f64, step_size: f64, steps: usize) -> Self {
        Self {
            norm: Norm::Linf,
            eps,
            step_size,
            steps,
            restarts: 1,
            random_start: RandomStart::Uniform,
            loss: Loss::CrossEntropy,
        }
    }

    /// CW-inf: PGD on the CW margin loss with kappa (50 in SPEC).
    pub fn cw(eps: f64, step_size: f64, steps: usize, kappa: f64) -> Self {
        Self { loss: Loss::CwMargin { kappa }, ..Self::linf(eps, step_size, steps) }
    }

    /// Run without bookkeeping of successes: the final iterate of one restart.
    /// (Used inside adversarial training, where only the last point matters.)
    pub fn perturb(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<Tensor> {
        let mut x_adv = start(x, self.eps, self.norm, self.random_start, seed)?;
        for _ in 0..self.steps {
            let step = loss_and_grad(model, &x_adv, y, &self.loss)?;
            x_adv = project(
                &(&x_adv + (ascent_direction(&step.grad, self.norm)? * self.step_size)?)?,
                x,
                self.eps,
                self.norm,
            )?;
        }
        Ok(x_adv)
    }
}

impl Attack for Pgd {
    fn name(&self) -> String {
        match self.loss {
            Loss::CwMargin { .. } => format!("cw-{}", self.steps),
            Loss::CrossEntropy => format!("pgd-{}", self.steps),
            _ => format!("pgd-{}-{}", self.loss.name(), self.steps),
        }
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult> {
        let yv = labels(y)?;
        let mut track = Tracker::new(x, misclassified(model, x, &yv)?);
        let mut last = x.clone();
        for r in 0..self.restarts.max(1) {
            let mut x_adv = start(x, self.eps, self.norm, self.random_start, seed.wrapping_add(r as u64))?;
            for _ in 0..self.steps {
                let step = loss_and_grad(model, &x_adv, y, &self.loss)?;
                track.update(&x_adv, &fooled_by(&step.logits, &yv)?)?;
                x_adv = project(
                    &(&x_adv + (ascent_direction(&step.grad, self.norm)? * self.step_size)?)?,
                    x,
                    self.eps,
                    self.norm,
                )?;
            }
            track.update(&x_adv, &misclassified(model, &x_adv, &yv)?)?;
            last = x_adv;
            if track.success.iter().all(|&s| s) {
                break;
            }
        }
        track.finish(&last)
    }
}

/// Momentum iterative method (Dong et al. 2018), L-inf:
/// g_{k+1} = mu g_k + grad / mean|grad| (per example); x_{k+1} = P(x_k + alpha sign(g_{k+1})).
#[derive(Clone, Debug)]
pub struct Mim {
    /// L-inf radius.
    pub eps: f64,
    /// Step size alpha.
    pub step_size: f64,
    /// Iterations.
    pub steps: usize,
    /// Momentum decay mu (1.0 in SPEC).
    pub decay: f64,
    /// Start point.
    pub random_start: RandomStart,
}

impl Attack for Mim {
    fn name(&self) -> String {
        format!("mim-{}", self.steps)
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult> {
        let yv = labels(y)?;
        let mut track = Tracker::new(x, misclassified(model, x, &yv)?);
        let mut x_adv = start(x, self.eps, Norm::Linf, self.random_start, seed)?;
        let mut g = x.zeros_like()?;
        for _ in 0..self.steps {
            let step = loss_and_grad(model, &x_adv, y, &Loss::CrossEntropy)?;
            track.update(&x_adv, &fooled_by(&step.logits, &yv)?)?;
            let b = step.grad.dim(0)?;
            let mut shape = vec![1usize; step.grad.rank()];
            shape[0] = b;
            let mean_abs =
                step.grad.abs()?.flatten_from(1)?.mean_keepdim(1)?.reshape(shape)?.clamp(1e-12, f64::INFINITY)?;
            g = ((g * self.decay)? + step.grad.broadcast_div(&mean_abs)?)?;
            x_adv = project(&(&x_adv + (g.sign()? * self.step_size)?)?, x, self.eps, Norm::Linf)?;
        }
        track.update(&x_adv, &misclassified(model, &x_adv, &yv)?)?;
        track.finish(&x_adv)
    }
}
