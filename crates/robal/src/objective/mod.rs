//! Training objectives, one file per method. Each supplies a step: which inputs the
//! outer loss sees ([`Objective::craft`], the inner maximisation with the model in
//! evaluation mode) and the outer loss on them ([`Objective::outer`], train mode).
//! The trainer ([`crate::train`]) owns data, schedule, checkpoints, metrics and AWP,
//! and knows no method by name.
//!
//! | method | inner attack (craft) | outer loss |
//! |---|---|---|
//! | [`Plain`] | none | L(f(x)) |
//! | [`PgdAt`] | PGD on CE | L(f(x_adv)) |
//! | [`Trades`] | PGD on KL(p(x) \|\| p(x')) | L(f(x)) + beta KL(p(x) \|\| p(x_adv)) |
//! | [`Robal`] | PGD on CE | beta_adv L(f(x_adv)) + beta_nat L(f(x)) + beta_reg KL |
//! | [`Taet`] | PGD on CE | HARL of per-example L(f(x_adv)) ([`crate::losses::harl`]) |
//! | [`Reat`] | PGD on RBL | L(f(x_adv)) + TAIL(h(x_adv)) ([`crate::losses::tail`]) |
//!
//! L is the configured [`crate::losses::TrainLoss`] (CE, balanced softmax, RoBal's margin
//! loss, ...) with the configured class weights. AT-BSL is [`PgdAt`] with the balanced
//! softmax; RobustLT's per-class budgets ([`ClassBudget`]) and AWP ([`awp`]) plug into
//! every method, and so does MCAT's ETF regulariser on the head ([`EtfRegularized`]).
//! A config becomes its objective through [`crate::config::TrainConfig::objective`]:
//! the objectives (and their settings types) import nothing from the config module.

pub mod awp;
mod budget;
mod etf;
mod inner;
mod pgd_at;
mod plain;
mod reat;
mod robal;
mod taet;
mod trades;

use candle_core::Tensor;
use robal_models::{Classifier, Mode};
use serde::{Deserialize, Serialize};

pub use awp::{AwpConfig, AwpProxy, WeightPerturbation};
pub use budget::ClassBudget;
pub use etf::{EtfConfig, EtfRegularized};
pub use inner::{AttackBatchNorm, AttackStart, InnerAttack, InnerLoss};
pub use pgd_at::PgdAt;
pub use plain::Plain;
pub use reat::{PredictionCount, Reat, ReatConfig};
pub use robal::Robal;
pub use taet::Taet;
pub use trades::Trades;

use crate::error::Result;
use crate::losses::{TrainLoss, WeightedMean};

/// The training method (`train.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Standard training on clean inputs.
    Plain,
    /// Madry et al.'s adversarial training (AT-BSL with `loss.kind = "logit-adjusted"`, tau 1).
    PgdAt,
    /// TRADES (Zhang et al. 2019).
    Trades,
    /// RoBal (Wu et al. 2021), SPEC section 5.
    Robal,
    /// TAET's second stage (HARL); the clean first stage is `train.clean_epochs`.
    Taet,
    /// REAT: RBL inner loss, L + TAIL outer loss (`[reat]`).
    Reat,
}

impl Method {
    /// Every method, as the table above lists them. A new method is its file, a variant,
    /// its arm in `TrainConfig::objective` and its place here; the objectives test then
    /// builds it from a config and runs one step (`tests/objectives.rs`).
    pub const ALL: [Method; 6] =
        [Method::Plain, Method::PgdAt, Method::Trades, Method::Robal, Method::Taet, Method::Reat];
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Plain => "plain",
            Method::PgdAt => "pgd-at",
            Method::Trades => "trades",
            Method::Robal => "robal",
            Method::Taet => "taet",
            Method::Reat => "reat",
        })
    }
}

/// How many train-mode forward passes a step makes, which decides how often the
/// BatchNorm running statistics move (gradients are the same either way, since in
/// train mode BatchNorm normalises by the batch's own statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BnPasses {
    /// One pass per distinct input: RoBal adv, clean; TRADES clean, adv.
    #[default]
    Minimal,
    /// The reference code's passes: RoBal adv, clean (its natural term, run even at
    /// beta_nat = 0), then clean and adv again for the KL term; TRADES clean, adv,
    /// clean again for the KL term.
    Reference,
    /// **quirk** of TRADES-AWP's loop: TRADES on adv, then clean (RoBal: as `minimal`).
    /// With `train.extra_passes` after the outer loss on clean it is the code's adv,
    /// clean, clean.
    AdvFirst,
}

/// What a step knows besides the batch.
pub struct StepContext<'a> {
    /// The model being trained.
    pub model: &'a Classifier,
    /// The configured loss L.
    pub loss: &'a TrainLoss,
    /// Class weights of this epoch and their averaging, if re-weighting is on.
    pub weights: Option<(&'a [f64], WeightedMean)>,
    /// Seed of this step's random starts.
    pub seed: u64,
    /// Per-class radius factors eps_c / eps of this epoch (RobustLT), if on.
    pub budget: Option<&'a [f64]>,
    /// The inner attack's start point, used as given (no projection), instead of one
    /// drawn from `seed`: replays another implementation's random stream (the
    /// PyTorch trajectory test does). `None` in training.
    pub start: Option<&'a Tensor>,
    /// The step is the first of an epoch after the first (AT-AWP's CIFAR-10 script attacks
    /// it in eval mode: `attack.batch_norm = "train-except-epoch-start"`).
    pub epoch_start: bool,
}

impl StepContext<'_> {
    /// L on logits z, weighted and averaged as configured.
    pub fn class_loss(&self, z: &Tensor, y: &Tensor) -> Result<Tensor> {
        let (w, avg) = match self.weights {
            Some((w, a)) => (Some(w), a),
            None => (None, WeightedMean::Weights),
        };
        Ok(self.loss.forward_averaged(z, y, w, avg)?)
    }

    /// Train-mode logits.
    pub fn train_logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.model.forward(x, Mode::Train)?)
    }
}

/// A step's loss and the logits it used (for batch accuracies).
pub struct StepOutput {
    /// The scalar to minimise.
    pub loss: Tensor,
    /// Logits of clean inputs, if the step computed them.
    pub clean_logits: Option<Tensor>,
    /// Logits of adversarial inputs, if the step computed them.
    pub adv_logits: Option<Tensor>,
}

/// One training method.
pub trait Objective {
    /// Which method.
    fn method(&self) -> Method;

    /// The inputs of the outer loss besides x (adversarial examples), model in eval mode.
    fn craft(&self, ctx: &StepContext, x: &Tensor, y: &Tensor) -> Result<Option<Tensor>>;

    /// The outer loss at the crafted inputs, model in train mode.
    fn outer(&self, ctx: &StepContext, x: &Tensor, y: &Tensor, x_adv: Option<&Tensor>) -> Result<StepOutput>;

    /// See a finished step (labels and what [`Objective::outer`] returned).
    fn observe(&self, _y: &Tensor, _out: &StepOutput) -> Result<()> {
        Ok(())
    }

    /// See the logits of the adversarial examples after the update: the train-mode
    /// logging pass of `train.log_passes`, when the step made one.
    fn observe_after_update(&self, _y: &Tensor, _adv_logits: &Tensor) -> Result<()> {
        Ok(())
    }

    /// The epoch is over.
    fn end_epoch(&self) {}

    /// State carried from epoch to epoch, saved with each checkpoint (JSON).
    fn state(&self) -> Option<String> {
        None
    }

    /// Restore a [`Objective::state`] on resume.
    fn load_state(&self, _state: &str) -> Result<()> {
        Ok(())
    }
}

/// The crafted inputs an adversarial objective's outer loss needs; an error naming the
/// method if the trainer called it without them.
pub(crate) fn crafted(x_adv: Option<&Tensor>, method: Method) -> Result<&Tensor> {
    x_adv.ok_or_else(|| crate::error::invalid("objective", format!("{method} step called without adversarial inputs")))
}

/// A method's per-example radius factors for labels `y`, as a (B, 1, 1, 1) tensor.
pub(crate) fn per_example(factors: &[f64], y: &Tensor) -> Result<Tensor> {
    let f: Vec<f32> = factors.iter().map(|&v| v as f32).collect();
    let t = Tensor::from_vec(f, factors.len(), y.device())?.index_select(y, 0)?;
    Ok(t.reshape((y.dim(0)?, 1, 1, 1))?)
}
