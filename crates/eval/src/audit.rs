//! The robustness audit: automated checks that a robust-accuracy number can be
//! trusted (the RoBal paper's observation 2, and the usual gradient-masking signs).
//!
//! | check | fires when |
//! |---|---|
//! | `ce_vs_margin` | CE-PGD robust accuracy exceeds the best (lowest) margin-based attack (CW, APGD-DLR/-T, AutoAttack) by more than `threshold` |
//! | `logit_scale` | PGD-CE on logits `10^k z`, k in {-2,-1,0,1,2}: some k != 0 gives robust accuracy more than `threshold` below k = 0 (clean accuracy is scale-invariant, so any gain of the model's own scale is "fake") |
//! | `zero_gradients` | more than `zero_grad_share` of the examples have an input gradient of CE that is exactly zero |
//! | `steps_no_fall` | robust accuracy after `steps` PGD steps is not below that after one step of size eps (while the one-step accuracy is above `threshold`) |
//! | `eps_no_fall` | robust accuracy at 4 eps is not below that at eps (while the latter is above `threshold`) |
//! | `not_converged` | 4x the steps lowers PGD robust accuracy by more than `threshold`: the reported figure is too high |
//!
//! All sweeps run on the first `limit` examples given, with PGD on cross-entropy.

use candle_core::Tensor;
use robal_attacks::{model::loss_and_grad, Attack, Loss, Model, ScaledLogits};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::suite::{AttackOutcome, AttackSettings, AttackSpec};

/// Thresholds of the audit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Accuracy gap, in percentage points, that counts as a discrepancy (2).
    pub threshold: f64,
    /// Share of examples with an all-zero input gradient that is suspicious (0.05).
    pub zero_grad_share: f64,
    /// Examples used by the sweeps (0 = all given).
    pub limit: usize,
    /// Batch size of the sweeps.
    pub batch: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { threshold: 2.0, zero_grad_share: 0.05, limit: 100, batch: 128 }
    }
}

/// A check that fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Check name (`ce_vs_margin`, `logit_scale`, ...).
    pub check: String,
    /// What was seen and what it suggests.
    pub message: String,
}

/// Everything the audit measured, and the flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// Checks that fired (empty when the evaluation looks sound).
    pub flags: Vec<Flag>,
    /// Examples used by the sweeps.
    pub images: usize,
    /// (logit factor, clean accuracy, PGD robust accuracy) per factor.
    pub scale_sweep: Vec<(f64, f64, f64)>,
    /// Share of examples with an all-zero CE input gradient.
    pub zero_grad_share: f64,
    /// (PGD steps, robust accuracy): one step of size eps, `steps`, 4x `steps`.
    pub steps_sweep: Vec<(usize, f64)>,
    /// (eps, robust accuracy) at eps, 2 eps, 4 eps (step size scaled alike).
    pub eps_sweep: Vec<(f64, f64)>,
}

fn accuracy(flags: &[bool]) -> f64 {
    flags.iter().filter(|&&c| c).count() as f64 / flags.len().max(1) as f64
}

/// Robust accuracy of `attack` on (x, y), in batches.
fn robust_accuracy(
    model: &dyn Model,
    attack: &dyn Attack,
    x: &Tensor,
    y: &Tensor,
    batch: usize,
    seed: u64,
) -> Result<f64> {
    let n = x.dim(0)?;
    let mut robust = Vec::with_capacity(n);
    for (k, start) in (0..n).step_by(batch).enumerate() {
        let len = batch.min(n - start);
        let r = attack.run(model, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?, seed.wrapping_add(k as u64))?;
        robust.extend(r.success.iter().map(|s| !s));
    }
    Ok(accuracy(&robust))
}

/// The gap check on the suite's results alone (no extra attacks).
pub fn check_ce_vs_margin(outcomes: &[AttackOutcome], threshold: f64) -> Option<Flag> {
    let acc = |o: &AttackOutcome| accuracy(&o.correct);
    let pgd = outcomes.iter().find(|o| o.spec == AttackSpec::Pgd)?;
    let best = outcomes.iter().filter(|o| o.spec.is_margin_based()).min_by(|a, b| acc(a).total_cmp(&acc(b)))?;
    let gap = 100.0 * (acc(pgd) - acc(best));
    (gap > threshold).then(|| Flag {
        check: "ce_vs_margin".into(),
        message: format!(
            "{} robust accuracy {:.1}% is {gap:.1} points above {} ({:.1}%): likely logit-scale gradient masking; trust the margin-based figure",
            pgd.name,
            100.0 * acc(pgd),
            best.name,
            100.0 * acc(best)
        ),
    })
}

/// Run every check on `x`, `y` (the first `config.limit` rows are used by the sweeps),
/// given the suite's outcomes on the full set.
pub fn audit(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    outcomes: &[AttackOutcome],
    settings: &AttackSettings,
    config: &AuditConfig,
) -> Result<AuditResult> {
    let t = config.threshold;
    let n = if config.limit == 0 { x.dim(0)? } else { config.limit.min(x.dim(0)?) };
    let (x, y) = (x.narrow(0, 0, n)?, y.narrow(0, 0, n)?);
    let batch = config.batch.max(1);
    let seed = settings.seed;
    let mut r = AuditResult { images: n, ..Default::default() };
    r.flags.extend(check_ce_vs_margin(outcomes, t));

    // Logit-scale sweep.
    let pgd = settings.pgd();
    for k in -2i32..=2 {
        let factor = 10f64.powi(k);
        let scaled = ScaledLogits { model, scale: factor };
        let clean = accuracy(
            &robal_attacks::model::predict(&scaled, &x)?
                .iter()
                .zip(y.to_vec1::<u32>()?)
                .map(|(p, l)| *p == l)
                .collect::<Vec<_>>(),
        );
        r.scale_sweep.push((factor, clean, robust_accuracy(&scaled, &pgd, &x, &y, batch, seed)?));
    }
    let own = r.scale_sweep[2].2;
    if let Some(&(f, _, low)) = r.scale_sweep.iter().min_by(|a, b| a.2.total_cmp(&b.2)) {
        if 100.0 * (own - low) > t {
            let clean: Vec<String> = r.scale_sweep.iter().map(|s| format!("{:.1}", 100.0 * s.1)).collect();
            r.flags.push(Flag {
                check: "logit_scale".into(),
                message: format!(
                    "PGD robust accuracy {:.1}% at the model's own logit scale drops to {:.1}% with logits x{f:e} while clean accuracy stays flat ({}%): the paper's fake-gain signature",
                    100.0 * own,
                    100.0 * low,
                    clean.join("/")
                ),
            });
        }
    }

    // Zero input gradients.
    let mut zero = 0usize;
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let g = loss_and_grad(model, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?, &Loss::CrossEntropy)?.grad;
        let norms: Vec<f32> = g.abs()?.flatten_from(1)?.max(1)?.to_vec1()?;
        zero += norms.iter().filter(|&&v| v == 0.0).count();
    }
    r.zero_grad_share = zero as f64 / n.max(1) as f64;
    if r.zero_grad_share > config.zero_grad_share {
        r.flags.push(Flag {
            check: "zero_gradients".into(),
            message: format!(
                "{:.1}% of the examples have an exactly zero input gradient of CE: gradient-based attacks cannot move them (saturated softmax or a non-differentiable layer)",
                100.0 * r.zero_grad_share
            ),
        });
    }

    // Steps: one step of size eps, the configured steps, 4x the steps.
    let one = robal_attacks::Pgd { steps: 1, step_size: settings.eps, ..pgd.clone() };
    let many = robal_attacks::Pgd { steps: 4 * settings.steps, ..pgd.clone() };
    let (a1, a_s, a4) =
        (robust_accuracy(model, &one, &x, &y, batch, seed)?, own, robust_accuracy(model, &many, &x, &y, batch, seed)?);
    r.steps_sweep = vec![(1, a1), (settings.steps, a_s), (4 * settings.steps, a4)];
    if 100.0 * a1 > t && a_s >= a1 {
        r.flags.push(Flag {
            check: "steps_no_fall".into(),
            message: format!(
                "PGD-{} robust accuracy {:.1}% is no lower than one step's {:.1}%: the iterations make no progress (masked or noisy gradients)",
                settings.steps,
                100.0 * a_s,
                100.0 * a1
            ),
        });
    }
    if 100.0 * (a_s - a4) > t {
        r.flags.push(Flag {
            check: "not_converged".into(),
            message: format!(
                "PGD-{} robust accuracy {:.1}% falls to {:.1}% with {} steps: the attack has not converged and the reported figure is too high",
                settings.steps,
                100.0 * a_s,
                100.0 * a4,
                4 * settings.steps
            ),
        });
    }

    // Radius: eps, 2 eps, 4 eps with proportional step sizes.
    r.eps_sweep.push((settings.eps, own));
    for m in [2.0, 4.0] {
        let wide = robal_attacks::Pgd { eps: m * settings.eps, step_size: m * settings.step_size, ..pgd.clone() };
        r.eps_sweep.push((m * settings.eps, robust_accuracy(model, &wide, &x, &y, batch, seed)?));
    }
    let a_wide = r.eps_sweep[2].1;
    if 100.0 * own > t && a_wide >= own {
        r.flags.push(Flag {
            check: "eps_no_fall".into(),
            message: format!(
                "robust accuracy {:.1}% at eps {:.4} is no lower at 4x eps ({:.1}%): the attack is not working (gradient masking)",
                100.0 * own,
                settings.eps,
                100.0 * a_wide
            ),
        });
    }
    Ok(r)
}
