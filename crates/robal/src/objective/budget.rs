//! RobustLT's per-class perturbation budgets (METHODS.md section 5).

use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// Per-class radii eps_c = eps ((1 - alpha) + tau g_c), g_c = sqrt(ln(n_max / n_c)),
/// tau = alpha / sum_c pi_c g_c (so that sum_c pi_c eps_c = eps), grown over a warm-up
/// s(e) = min((e - 1) / (beta E), 1) (e 1-based; beta <= 0: no warm-up). An example of
/// class y is attacked with radius s eps_y and step alpha s eps_y / eps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassBudget {
    /// Share of the budget redistributed by class (0.3 on CIFAR-10-LT).
    pub alpha: f64,
    /// Warm-up length as a fraction of the epochs (0.8 on CIFAR-10-LT).
    pub beta: f64,
    /// **quirk** of RobustLT's code: the uniform start is drawn in the shared eps-ball,
    /// not in eps_y's.
    #[serde(default)]
    pub shared_start: bool,
}

impl ClassBudget {
    /// Check ranges, naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(invalid("attack.class_budget.alpha", format!("{}: expected a value in [0, 1]", self.alpha)));
        }
        if !self.beta.is_finite() {
            return Err(invalid("attack.class_budget.beta", format!("{} is not finite", self.beta)));
        }
        Ok(())
    }

    /// tau = alpha / sum_c pi_c g_c (0 when every class has the same count).
    pub fn tau(&self, counts: &[usize]) -> f64 {
        let total: usize = counts.iter().sum();
        let weighted: f64 = counts.iter().zip(Self::g(counts)).map(|(&n, g)| n as f64 / total.max(1) as f64 * g).sum();
        if weighted > 0.0 {
            self.alpha / weighted
        } else {
            0.0
        }
    }

    /// eps_c / eps per class, before the warm-up. With equal counts every factor is 1.
    pub fn factors(&self, counts: &[usize]) -> Vec<f64> {
        let tau = self.tau(counts);
        if tau == 0.0 {
            return vec![1.0; counts.len()];
        }
        Self::g(counts).into_iter().map(|g| (1.0 - self.alpha) + tau * g).collect()
    }

    /// The warm-up factor s at epoch `epoch` (0-based) of `epochs`.
    pub fn warmup(&self, epoch: usize, epochs: usize) -> f64 {
        if self.beta <= 0.0 {
            return 1.0;
        }
        (epoch as f64 / (self.beta * epochs as f64)).min(1.0)
    }

    /// The factors of epoch `epoch`: s eps_c / eps.
    pub fn at_epoch(&self, counts: &[usize], epoch: usize, epochs: usize) -> Vec<f64> {
        let s = self.warmup(epoch, epochs);
        self.factors(counts).into_iter().map(|f| s * f).collect()
    }

    fn g(counts: &[usize]) -> Vec<f64> {
        let n_max = counts.iter().copied().max().unwrap_or(1) as f64;
        counts.iter().map(|&n| (n_max / n.max(1) as f64).ln().max(0.0).sqrt()).collect()
    }
}
