//! Auto-PGD (Croce & Hein, ICML 2020): step-size-free PGD with momentum 0.75,
//! step halving at checkpoints under the rho = 0.75 oscillation condition or
//! stagnation, restarts from the best point, and per-example best tracking.

use candle_core::{DType, Result, Tensor};

use crate::attack::{Attack, AttackResult, Tracker};
use crate::loss::Loss;
use crate::model::{fooled_by, loss_and_grad, misclassified, select_rows, Model};
use crate::subset::run_on_rows;
use crate::threat::{ascent_direction, project, start, Norm, RandomStart};

/// Which objective APGD maximises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApgdLoss {
    /// Cross-entropy (APGD-CE).
    Ce,
    /// Difference of logits ratio (APGD-DLR).
    Dlr,
    /// Targeted DLR against each of the `targets` highest-scoring wrong classes in turn (APGD-T).
    TargetedDlr {
        /// Number of target classes (9 in AutoAttack's standard suite).
        targets: usize,
    },
}

/// APGD settings.
#[derive(Clone, Debug)]
pub struct Apgd {
    /// Threat model.
    pub norm: Norm,
    /// Radius.
    pub eps: f64,
    /// Iterations per run (100).
    pub steps: usize,
    /// Restarts (per target for the targeted version).
    pub restarts: usize,
    /// Objective.
    pub loss: ApgdLoss,
    /// Oscillation threshold rho (0.75).
    pub rho: f64,
}

impl Apgd {
    /// AutoAttack's standard settings: 100 iterations, 1 restart, rho 0.75.
    pub fn standard(norm: Norm, eps: f64, loss: ApgdLoss) -> Self {
        Self { norm, eps, steps: 100, restarts: 1, loss, rho: 0.75 }
    }

    /// One run of `steps` iterations on the whole batch for `loss`.
    fn once(
        &self,
        model: &dyn Model,
        x: &Tensor,
        y: &Tensor,
        yv: &[u32],
        loss: &Loss,
        seed: u64,
    ) -> Result<AttackResult> {
        let n = self.steps.max(1);
        let n2 = ((0.22 * n as f64) as usize).max(1);
        let n_min = ((0.06 * n as f64) as usize).max(1);
        let decr = ((0.03 * n as f64) as usize).max(1);
        let b = yv.len();
        let mut x_adv = start(x, self.eps, self.norm, RandomStart::Uniform, seed)?;
        let first = loss_and_grad(model, &x_adv, y, loss)?;
        let mut track = Tracker::new(x, misclassified(model, x, yv)?);
        track.update(&x_adv, &fooled_by(&first.logits, yv)?)?;
        let (mut grad, mut grad_best, mut x_best) = (first.grad.clone(), first.grad, x_adv.clone());
        let mut loss_best = first.loss.clone();
        let mut prev_loss = first.loss;
        let mut step_size = vec![(2.0 * self.eps) as f32; b];
        let mut x_old = x_adv.clone();
        let (mut k, mut counter, mut increases) = (n2, 0usize, vec![0usize; b]);
        let mut best_at_check = loss_best.clone();
        let mut reduced_at_check = vec![true; b];
        for i in 0..n {
            let a = if i > 0 { 0.75 } else { 1.0 };
            let momentum = (&x_adv - &x_old)?;
            x_old = x_adv.clone();
            let eta = Tensor::from_vec(step_size.clone(), per_row_shape(x), x.device())?;
            let z =
                project(&(&x_adv + ascent_direction(&grad, self.norm)?.broadcast_mul(&eta)?)?, x, self.eps, self.norm)?;
            x_adv = project(&((&x_adv + ((z - &x_adv)? * a)?)? + (momentum * (1.0 - a))?)?, x, self.eps, self.norm)?;
            let st = loss_and_grad(model, &x_adv, y, loss)?;
            track.update(&x_adv, &fooled_by(&st.logits, yv)?)?;
            grad = st.grad;
            let better: Vec<bool> = st.loss.iter().zip(&loss_best).map(|(l, b)| l > b).collect();
            for e in 0..b {
                increases[e] += (st.loss[e] > prev_loss[e]) as usize;
                if better[e] {
                    loss_best[e] = st.loss[e];
                }
            }
            if better.iter().any(|&v| v) {
                x_best = select_rows(&better, &x_adv, &x_best)?;
                grad_best = select_rows(&better, &grad, &grad_best)?;
            }
            prev_loss = st.loss;
            counter += 1;
            if counter == k {
                // Halve the step where the loss rose in at most rho*k of the last k steps, or
                // where the step was not halved last time and the best loss did not improve.
                let halve: Vec<bool> = (0..b)
                    .map(|e| {
                        (increases[e] as f64) <= self.rho * k as f64
                            || (!reduced_at_check[e] && best_at_check[e] >= loss_best[e])
                    })
                    .collect();
                for e in 0..b {
                    if halve[e] {
                        step_size[e] /= 2.0;
                    }
                }
                if halve.iter().any(|&v| v) {
                    x_adv = select_rows(&halve, &x_best, &x_adv)?;
                    grad = select_rows(&halve, &grad_best, &grad)?;
                }
                reduced_at_check = halve;
                best_at_check = loss_best.clone();
                increases.iter_mut().for_each(|c| *c = 0);
                k = k.saturating_sub(decr).max(n_min);
                counter = 0;
            }
        }
        track.update(&x_best, &misclassified(model, &x_best, yv)?)?;
        track.finish(&x_best)
    }
}

fn per_row_shape(x: &Tensor) -> Vec<usize> {
    let mut s = vec![1usize; x.rank()];
    s[0] = x.dims()[0];
    s
}

impl Attack for Apgd {
    fn name(&self) -> String {
        match self.loss {
            ApgdLoss::Ce => "apgd-ce".into(),
            ApgdLoss::Dlr => "apgd-dlr".into(),
            ApgdLoss::TargetedDlr { .. } => "apgd-t".into(),
        }
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult> {
        let yv: Vec<u32> = y.to_vec1()?;
        let mut success = misclassified(model, x, &yv)?;
        let mut adv = x.clone();
        let runs: Vec<Option<usize>> = match self.loss {
            ApgdLoss::TargetedDlr { targets } => (0..targets).map(Some).collect(),
            _ => vec![None],
        };
        // Targets are ranked once, on the clean logits: the r-th highest-scoring class, r = 2, 3, ...
        let order = model.logits(&x.detach())?.arg_sort_last_dim(false)?;
        for (run, target_rank) in runs.into_iter().enumerate() {
            if let Some(r) = target_rank {
                if r + 1 >= order.dim(1)? {
                    break;
                }
            }
            for restart in 0..self.restarts.max(1) {
                let active: Vec<bool> = success.iter().map(|s| !s).collect();
                if !active.iter().any(|&a| a) {
                    break;
                }
                let run_seed = seed.wrapping_add((run * 1000 + restart) as u64);
                let order_rows = order.clone();
                let (new_adv, fooled) = run_on_rows(&active, x, y, &adv, |xs, ys| {
                    let ysv: Vec<u32> = ys.to_vec1()?;
                    let loss = match (self.loss, target_rank) {
                        (ApgdLoss::Ce, _) => Loss::CrossEntropy,
                        (ApgdLoss::Dlr, _) => Loss::Dlr,
                        (ApgdLoss::TargetedDlr { .. }, Some(r)) => {
                            let (_, idx) = crate::subset::indices(&active, x)?;
                            let targets = order_rows
                                .index_select(&idx, 0)?
                                .narrow(1, r + 1, 1)?
                                .squeeze(1)?
                                .to_dtype(DType::U32)?;
                            Loss::TargetedDlr { targets }
                        }
                        (ApgdLoss::TargetedDlr { .. }, None) => Loss::Dlr,
                    };
                    self.once(model, xs, ys, &ysv, &loss, run_seed)
                })?;
                adv = new_adv;
                for (s, f) in success.iter_mut().zip(fooled) {
                    *s |= f;
                }
            }
        }
        Ok(AttackResult { adv, success })
    }
}
