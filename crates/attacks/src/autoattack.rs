//! AutoAttack (Croce & Hein 2020) as a composition: each attack runs only on the
//! points still robust after the previous ones, and the result records which
//! attack (if any) broke each point.

use candle_core::{Result, Tensor};

use crate::apgd::{Apgd, ApgdLoss};
use crate::attack::{Attack, AttackResult};
use crate::fab::FabTargeted;
use crate::model::{misclassified, Model};
use crate::square::Square;
use crate::subset::run_on_rows;
use crate::threat::Norm;

/// Which attacks the suite runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    /// The standard version: APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries).
    Standard,
    /// The reduced suite the RoBal paper reports: APGD-CE and APGD-T.
    ApgdCeT,
}

/// Per-example outcome of a suite.
#[derive(Clone, Debug)]
pub struct SuiteResult {
    /// Final adversarial images (the breaking attack's, else the clean input).
    pub adv: Tensor,
    /// `broken_by[i]`: `Some("clean")` if misclassified without attack, `Some(name)` of the
    /// first attack that broke it, or `None` if it stayed robust.
    pub broken_by: Vec<Option<String>>,
}

impl SuiteResult {
    /// Whether each point is still correctly classified after the whole suite.
    pub fn robust(&self) -> Vec<bool> {
        self.broken_by.iter().map(|b| b.is_none()).collect()
    }
}

/// AutoAttack with L-inf radius `eps`.
pub struct AutoAttack {
    /// The attacks, in order.
    pub attacks: Vec<Box<dyn Attack + Send + Sync>>,
    /// Suite name.
    pub suite: Suite,
}

impl AutoAttack {
    /// The attacks of `suite` at L-inf radius `eps`, with their standard settings.
    pub fn new(suite: Suite, eps: f64) -> Self {
        let mut attacks: Vec<Box<dyn Attack + Send + Sync>> = vec![
            Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::Ce)),
            Box::new(Apgd::standard(Norm::Linf, eps, ApgdLoss::TargetedDlr { targets: 9 })),
        ];
        if suite == Suite::Standard {
            attacks.push(Box::new(FabTargeted::standard(eps)));
            attacks.push(Box::new(Square::standard(eps)));
        }
        Self { attacks, suite }
    }

    /// Run the suite on a batch.
    pub fn evaluate(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<SuiteResult> {
        let yv: Vec<u32> = y.to_vec1()?;
        let mut broken_by: Vec<Option<String>> =
            misclassified(model, x, &yv)?.into_iter().map(|m| m.then(|| "clean".to_string())).collect();
        let mut adv = x.clone();
        for (k, attack) in self.attacks.iter().enumerate() {
            let active: Vec<bool> = broken_by.iter().map(|b| b.is_none()).collect();
            if !active.iter().any(|&a| a) {
                break;
            }
            let (new_adv, fooled) =
                run_on_rows(&active, x, y, &adv, |xs, ys| attack.run(model, xs, ys, seed.wrapping_add(k as u64)))?;
            adv = new_adv;
            for (b, f) in broken_by.iter_mut().zip(fooled) {
                if f && b.is_none() {
                    *b = Some(attack.name());
                }
            }
        }
        Ok(SuiteResult { adv, broken_by })
    }
}

impl Attack for AutoAttack {
    fn name(&self) -> String {
        match self.suite {
            Suite::Standard => "autoattack".into(),
            Suite::ApgdCeT => "aa-apgd-ce-t".into(),
        }
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult> {
        let r = self.evaluate(model, x, y, seed)?;
        Ok(AttackResult { success: r.broken_by.iter().map(|b| b.is_some()).collect(), adv: r.adv })
    }
}
