//! The attack suite of an evaluation (SPEC section 6): which attacks, their
//! settings, and running them batch by batch over a test set.

use std::time::Instant;

use candle_core::{Device, Tensor};
use robal_attacks::{
    model::predict, Apgd, ApgdLoss, Attack, AutoAttack, FabTargeted, Fgsm, Mim, Model, Norm, Pgd, RandomStart, Square,
    Suite,
};
use robal_data::{Dataset, ImageSet, Loader, LoaderConfig};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};

/// One entry of an attack list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttackSpec {
    /// No attack: clean accuracy.
    Clean,
    /// FGSM at eps.
    Fgsm,
    /// PGD on cross-entropy (`steps` steps of `step_size`).
    Pgd,
    /// MIM, decay 1.
    Mim,
    /// CW-inf: PGD on the margin loss, kappa 50.
    Cw,
    /// The paper's AutoAttack subset: APGD-CE then APGD-T.
    AutoAttackPaper,
    /// Standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square.
    AutoAttack,
    /// APGD on cross-entropy alone.
    ApgdCe,
    /// APGD on the DLR loss (untargeted).
    ApgdDlr,
    /// APGD on the targeted DLR loss, 9 targets.
    ApgdT,
    /// FAB-T, 9 targets.
    FabT,
    /// Square attack, 5000 queries.
    Square,
}

const NAMES: [(&str, AttackSpec); 12] = [
    ("clean", AttackSpec::Clean),
    ("fgsm", AttackSpec::Fgsm),
    ("pgd", AttackSpec::Pgd),
    ("mim", AttackSpec::Mim),
    ("cw", AttackSpec::Cw),
    ("aa-paper", AttackSpec::AutoAttackPaper),
    ("aa", AttackSpec::AutoAttack),
    ("apgd-ce", AttackSpec::ApgdCe),
    ("apgd-dlr", AttackSpec::ApgdDlr),
    ("apgd-t", AttackSpec::ApgdT),
    ("fab-t", AttackSpec::FabT),
    ("square", AttackSpec::Square),
];

/// The default list: clean, FGSM, PGD, MIM, CW and the paper's AutoAttack subset.
pub const DEFAULT_ATTACKS: [AttackSpec; 6] = [
    AttackSpec::Clean,
    AttackSpec::Fgsm,
    AttackSpec::Pgd,
    AttackSpec::Mim,
    AttackSpec::Cw,
    AttackSpec::AutoAttackPaper,
];

impl AttackSpec {
    /// Parse a comma-separated list: names from `clean, fgsm, pgd, mim, cw, aa-paper, aa,
    /// apgd-ce, apgd-dlr, apgd-t, fab-t, square`, or `default`. Clean always comes first.
    pub fn parse_list(list: &str) -> Result<Vec<AttackSpec>> {
        let mut out = vec![AttackSpec::Clean];
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let specs: Vec<AttackSpec> = if item == "default" {
                DEFAULT_ATTACKS.to_vec()
            } else {
                let spec =
                    NAMES.iter().find(|(n, _)| *n == item).map(|(_, s)| *s).ok_or_else(|| EvalError::Invalid {
                        what: "--attacks".into(),
                        reason: format!(
                            "unknown attack {item:?}; expected default or a list of {}",
                            NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                        ),
                    })?;
                vec![spec]
            };
            for s in specs {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        Ok(out)
    }

    /// Short name (the `--attacks` token).
    pub fn token(self) -> &'static str {
        NAMES.iter().find(|(_, s)| *s == self).map(|(n, _)| *n).unwrap_or("?")
    }

    /// Whether the attack optimises a logit-scale-invariant objective (margin, DLR),
    /// the reference against which CE-based PGD is audited.
    pub fn is_margin_based(self) -> bool {
        matches!(
            self,
            AttackSpec::Cw
                | AttackSpec::ApgdDlr
                | AttackSpec::ApgdT
                | AttackSpec::AutoAttackPaper
                | AttackSpec::AutoAttack
                | AttackSpec::FabT
                | AttackSpec::Square
        )
    }
}

/// Threat model and step settings shared by the suite (SPEC: eps 8/255, 20 steps of 2/255).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackSettings {
    /// L-inf radius.
    pub eps: f64,
    /// Iterations of PGD, MIM and CW.
    pub steps: usize,
    /// Step size of PGD, MIM and CW.
    pub step_size: f64,
    /// Random start of PGD, MIM and CW (uniform in the ball, or off for deterministic runs).
    pub random_start: bool,
    /// CW margin kappa (50).
    pub kappa: f64,
    /// Base seed; batch k uses `seed + k`.
    pub seed: u64,
}

impl Default for AttackSettings {
    fn default() -> Self {
        Self { eps: 8.0 / 255.0, steps: 20, step_size: 2.0 / 255.0, random_start: true, kappa: 50.0, seed: 0 }
    }
}

impl AttackSettings {
    /// Check the settings, naming the flag at fault: eps >= 0, step size > 0 (both
    /// finite), at least one step.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, reason: String| Err(EvalError::Invalid { what: what.into(), reason });
        if !self.eps.is_finite() || self.eps < 0.0 {
            return bad("--eps", format!("{}: expected a finite radius >= 0 (e.g. 0.0314 for 8/255)", self.eps));
        }
        if !self.step_size.is_finite() || self.step_size <= 0.0 {
            return bad("--step-size", format!("{}: expected a finite step > 0", self.step_size));
        }
        if self.steps == 0 {
            return bad("--steps", "0: expected at least 1".into());
        }
        Ok(())
    }

    /// PGD on cross-entropy with these settings.
    pub fn pgd(&self) -> Pgd {
        Pgd {
            random_start: if self.random_start { RandomStart::Uniform } else { RandomStart::Off },
            ..Pgd::linf(self.eps, self.step_size, self.steps)
        }
    }

    /// The attack an entry stands for (`None` for clean).
    pub fn build(&self, spec: AttackSpec) -> Option<Box<dyn Attack + Send + Sync>> {
        let start = if self.random_start { RandomStart::Uniform } else { RandomStart::Off };
        let eps = self.eps;
        Some(match spec {
            AttackSpec::Clean => return None,
            AttackSpec::Fgsm => Box::new(Fgsm { eps }),
            AttackSpec::Pgd => Box::new(self.pgd()),
            AttackSpec::Mim => {
                Box::new(Mim { eps, step_size: self.step_size, steps: self.steps, decay: 1.0, random_start: start })
            }
            AttackSpec::Cw => {
                Box::new(Pgd { random_start: start, ..Pgd::cw(eps, self.step_size, self.steps, self.kappa) })
            }
            AttackSpec::AutoAttackPaper => Box::new(AutoAttack::new(Suite::ApgdCeT, eps)),
            AttackSpec::AutoAttack => Box::new(AutoAttack::new(Suite::Standard, eps)),
            AttackSpec::ApgdCe => Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce)),
            AttackSpec::ApgdDlr => Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Dlr)),
            AttackSpec::ApgdT => Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::TargetedDlr { targets: 9 })),
            AttackSpec::FabT => Box::new(FabTargeted::standard(eps)),
            AttackSpec::Square => Box::new(Square::standard(eps)),
        })
    }
}

/// What one attack did to every test example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackOutcome {
    /// The list entry.
    pub spec: AttackSpec,
    /// Display name, e.g. `pgd-20`.
    pub name: String,
    /// Prediction on the attacked image of each example.
    pub predicted: Vec<u32>,
    /// `correct[i]`: example i is still classified correctly.
    pub correct: Vec<bool>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Run each attack over `set` in batches of `batch` on `device`, with a progress bar per
/// attack when `progress` is set.
pub fn run_suite(
    model: &dyn Model,
    set: &ImageSet,
    specs: &[AttackSpec],
    settings: &AttackSettings,
    batch: usize,
    device: &Device,
    progress: bool,
) -> Result<Vec<AttackOutcome>> {
    let loader = Loader::new(std::sync::Arc::new(set.clone()), LoaderConfig::eval(batch.max(1)), device.clone())?;
    let labels = set.labels();
    let mut out = Vec::new();
    for &spec in specs {
        let attack = settings.build(spec);
        let name = attack.as_ref().map(|a| a.name()).unwrap_or_else(|| "clean".into());
        let bar = crate::progress::bar(set.len() as u64, &name, progress);
        let started = Instant::now();
        let mut predicted = Vec::with_capacity(set.len());
        for (k, b) in loader.epoch(0).enumerate() {
            let b = b?;
            let images: Tensor = match &attack {
                None => b.images.clone(),
                Some(a) => a.run(model, &b.images, &b.labels, settings.seed.wrapping_add(k as u64))?.adv,
            };
            predicted.extend(predict(model, &images)?);
            bar.inc(b.labels.dim(0)? as u64);
        }
        bar.finish_and_clear();
        let correct = predicted.iter().zip(labels).map(|(p, l)| p == l).collect();
        out.push(AttackOutcome { spec, name, predicted, correct, seconds: started.elapsed().as_secs_f64() });
    }
    Ok(out)
}
