//! The inner maximisation of adversarial training: L-inf PGD with the model in
//! evaluation mode (BatchNorm running statistics; `attack.batch_norm` can switch to batch
//! statistics, with or without running-statistic updates), optionally with per-example radii
//! (RobustLT's class budgets):
//! x_{k+1} = clip_\[0,1\](x + clip_\[-eps_i, eps_i\](x_k + alpha_i sign(grad) - x)),
//! eps_i = eps f_{y_i}, alpha_i = alpha f_{y_i}.

use candle_core::{Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use robal_attacks::model::loss_and_grad;
use robal_attacks::threat::{project, start, uniform_like, Norm, RandomStart};
use robal_attacks::{Loss, Model};
use robal_models::Mode;
use serde::{Deserialize, Serialize};

use super::{per_example, StepContext};
use crate::error::Result;
use crate::losses::{rbl, trades_kl};

/// What the inner attack ascends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerLoss {
    /// CE of the raw logits (PGD-AT, RoBal, TAET, AT-BSL).
    CrossEntropy,
    /// KL(p(x) || p(x_adv)) against the clean prediction (TRADES).
    TradesKl,
}

/// BatchNorm during the training attack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackBatchNorm {
    /// Running statistics (evaluation mode): the attack changes nothing.
    #[default]
    Eval,
    /// Each attack batch's own statistics, running statistics left as they were
    /// (RobustLT's shared attack).
    Batch,
    /// **quirk** of AT-AWP's code: train mode, so every attack step also moves the
    /// running statistics.
    Train,
    /// **quirk** of AT-AWP's CIFAR-10 script: as `train`, except the first batch of every
    /// epoch after the first, attacked in eval mode (the previous epoch's test loop leaves
    /// the model in eval mode, and `model.train()` only follows the attack).
    TrainExceptEpochStart,
}

impl AttackBatchNorm {
    /// Whether the attack of a step runs in train mode (`epoch_start`: the step is the
    /// first of an epoch after the first).
    pub fn train_mode(&self, epoch_start: bool) -> bool {
        match self {
            AttackBatchNorm::Eval => false,
            AttackBatchNorm::Batch | AttackBatchNorm::Train => true,
            AttackBatchNorm::TrainExceptEpochStart => !epoch_start,
        }
    }
}

impl AttackBatchNorm {
    /// Whether this is the default, `eval` (configs leave it unwritten then).
    pub fn is_default(&self) -> bool {
        *self == AttackBatchNorm::Eval
    }
}

/// Start point of the training attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackStart {
    /// From the clean input.
    Off,
    /// x + U\[-eps, eps\] (the standard).
    Uniform,
    /// **quirk** of the RoBal reference code: x + eps U\[0, 1).
    OneSided,
    /// x + 0.001 N(0, 1) (TRADES, AT-BSL, TAET).
    Normal,
}

/// L-inf PGD for training.
#[derive(Clone, Debug)]
pub struct InnerAttack {
    /// Radius eps.
    pub eps: f64,
    /// Step size alpha.
    pub step_size: f64,
    /// Steps.
    pub steps: usize,
    /// Start point.
    pub start: AttackStart,
    /// Objective.
    pub loss: InnerLoss,
    /// With class budgets: draw the uniform start in the shared eps-ball, not eps_i's
    /// (RobustLT's **quirk**).
    pub shared_start: bool,
    /// BatchNorm statistics of the attack's forward passes.
    pub batch_norm: AttackBatchNorm,
}

/// The classifier as the attack sees it: logits in evaluation or train mode.
struct AttackView<'a>(&'a robal_models::Classifier, Mode);

impl Model for AttackView<'_> {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(x, self.1).map_err(candle_core::Error::wrap)
    }
}

impl InnerAttack {
    /// Adversarial examples for (x, y); per-example radii from `ctx.budget`, the start
    /// from `ctx.start` if given, else drawn from `ctx.seed` as `self.start` says.
    pub fn run(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        self.run_weighted(ctx, x, y, None)
    }

    /// [`Self::run`] with CE re-weighted by class, sum_i w_{y_i} CE_i / sum_i w_{y_i}
    /// (REAT's RBL), when `class_weights` is given and the loss is CE.
    pub fn run_weighted(
        &self,
        ctx: &StepContext,
        x: &Tensor,
        y: &Tensor,
        class_weights: Option<&[f64]>,
    ) -> Result<Tensor> {
        let radius = match ctx.budget {
            Some(f) => Some(per_example(f, y)?),
            None => None,
        };
        let mode = if self.batch_norm.train_mode(ctx.epoch_start) { Mode::Train } else { Mode::Eval };
        // Batch statistics without updates: the running statistics are put back after.
        let running = match self.batch_norm {
            AttackBatchNorm::Batch => Some(super::awp::snapshot_buffers(ctx.model)?),
            _ => None,
        };
        let model = AttackView(ctx.model, mode);
        let z_nat = match self.loss {
            InnerLoss::TradesKl => Some(ctx.model.forward(x, mode)?.detach()),
            InnerLoss::CrossEntropy => None,
        };
        let mut x_adv = match ctx.start {
            Some(given) => given.clone(),
            None => self.start(x, radius.as_ref(), ctx.seed)?,
        };
        for _ in 0..self.steps {
            let grad = match (&z_nat, class_weights) {
                (None, None) => loss_and_grad(&model, &x_adv, y, &Loss::CrossEntropy)?.grad,
                (None, Some(w)) => input_gradient(&model, &x_adv, |z| rbl(&z, y, w))?,
                (Some(z_nat), _) => input_gradient(&model, &x_adv, |z| trades_kl(z_nat, &z))?,
            };
            x_adv = match &radius {
                None => project(&(&x_adv + (grad.sign()? * self.step_size)?)?, x, self.eps, Norm::Linf)?,
                Some(f) => {
                    let stepped = (&x_adv + grad.sign()?.broadcast_mul(&(f * self.step_size)?)?)?;
                    project_per_example(&stepped, x, &(f * self.eps)?)?
                }
            };
        }
        if self.steps == 0 {
            // The start itself may leave the ball or the box (the normal start).
            x_adv = match &radius {
                None => project(&x_adv, x, self.eps, Norm::Linf)?,
                Some(f) => project_per_example(&x_adv, x, &(f * self.eps)?)?,
            };
        }
        if let Some(snapshot) = running {
            super::awp::restore_buffers(snapshot)?;
        }
        Ok(x_adv)
    }

    fn start(&self, x: &Tensor, radius: Option<&Tensor>, seed: u64) -> Result<Tensor> {
        let radius = radius.filter(|_| !self.shared_start);
        Ok(match (self.start, radius) {
            (AttackStart::Off, _) => x.clone(),
            (AttackStart::Normal, _) => (x + (standard_normal_like(x, seed)? * 0.001)?)?,
            (AttackStart::Uniform, None) => start(x, self.eps, Norm::Linf, RandomStart::Uniform, seed)?,
            (AttackStart::OneSided, None) => start(x, self.eps, Norm::Linf, RandomStart::OneSidedReference, seed)?,
            (AttackStart::Uniform, Some(f)) => {
                let u = uniform_like(x, -1.0, 1.0, seed)?;
                (x + u.broadcast_mul(&(f * self.eps)?)?)?.clamp(0.0, 1.0)?
            }
            (AttackStart::OneSided, Some(f)) => {
                let eps_i = (f * self.eps)?;
                let u = uniform_like(x, 0.0, 1.0, seed)?;
                project_per_example(&(x + u.broadcast_mul(&eps_i)?)?, x, &eps_i)?
            }
        })
    }
}

/// d loss(f(x_adv)) / d x_adv, model in eval mode (zeros where the loss does not depend on it).
fn input_gradient(
    model: &AttackView,
    x_adv: &Tensor,
    loss: impl FnOnce(Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor> {
    let v = Var::from_tensor(&x_adv.detach())?;
    let l = loss(model.0.forward(v.as_tensor(), model.1)?)?;
    Ok(match l.backward()?.get(v.as_tensor()) {
        Some(g) => g.detach(),
        None => x_adv.zeros_like()?,
    })
}

/// clip_\[0,1\](x + clip(x_adv - x, -eps_i, eps_i)) with eps_i of shape (B, 1, 1, 1).
pub(crate) fn project_per_example(x_adv: &Tensor, x: &Tensor, eps_i: &Tensor) -> Result<Tensor> {
    let delta = (x_adv - x)?.broadcast_minimum(eps_i)?.broadcast_maximum(&eps_i.neg()?)?;
    Ok((x + delta)?.clamp(0.0, 1.0)?)
}

/// N(0, 1) noise with x's shape from `seed`.
fn standard_normal_like(x: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..x.elem_count())
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            z as f32
        })
        .collect();
    Ok(Tensor::from_vec(v, x.shape(), x.device())?)
}
