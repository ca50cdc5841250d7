//! The attack suite of an evaluation (SPEC section 6): which attacks, their
//! settings, and running them batch by batch over a test set.

use std::time::{Duration, Instant};

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

/// One row of the attack registry [`ATTACKS`].
pub struct AttackEntry {
    /// The list entry it describes.
    pub spec: AttackSpec,
    /// Its `--attacks` token.
    pub token: &'static str,
    /// Whether it optimises a logit-scale-invariant objective (margin, DLR): the
    /// reference against which CE-based PGD is audited.
    pub margin_based: bool,
    /// For AutoAttack entries, the suite run through [`AutoAttack::evaluate`] so that the
    /// report can say which attack broke each point.
    pub autoattack: Option<Suite>,
    /// The attack with these settings (`None` for clean).
    pub build: fn(&AttackSettings) -> Option<Box<dyn Attack + Send + Sync>>,
}

/// The attack registry: adding an attack is its file in robal-attacks, a variant of
/// [`AttackSpec`] and one row here (the registry test then runs it on a tiny model).
pub static ATTACKS: [AttackEntry; 12] = [
    AttackEntry { spec: AttackSpec::Clean, token: "clean", margin_based: false, autoattack: None, build: |_| None },
    AttackEntry {
        spec: AttackSpec::Fgsm,
        token: "fgsm",
        margin_based: false,
        autoattack: None,
        build: |s| Some(Box::new(Fgsm { eps: s.eps })),
    },
    AttackEntry {
        spec: AttackSpec::Pgd,
        token: "pgd",
        margin_based: false,
        autoattack: None,
        build: |s| Some(Box::new(s.pgd())),
    },
    AttackEntry {
        spec: AttackSpec::Mim,
        token: "mim",
        margin_based: false,
        autoattack: None,
        build: |s| {
            Some(Box::new(Mim {
                eps: s.eps,
                step_size: s.step_size,
                steps: s.steps,
                decay: 1.0,
                random_start: s.start(),
            }))
        },
    },
    AttackEntry {
        spec: AttackSpec::Cw,
        token: "cw",
        margin_based: true,
        autoattack: None,
        build: |s| Some(Box::new(Pgd { random_start: s.start(), ..Pgd::cw(s.eps, s.step_size, s.steps, s.kappa) })),
    },
    AttackEntry {
        spec: AttackSpec::AutoAttackPaper,
        token: "aa-paper",
        margin_based: true,
        autoattack: Some(Suite::ApgdCeT),
        build: |s| Some(Box::new(AutoAttack::new(Suite::ApgdCeT, s.eps))),
    },
    AttackEntry {
        spec: AttackSpec::AutoAttack,
        token: "aa",
        margin_based: true,
        autoattack: Some(Suite::Standard),
        build: |s| Some(Box::new(AutoAttack::new(Suite::Standard, s.eps))),
    },
    AttackEntry {
        spec: AttackSpec::ApgdCe,
        token: "apgd-ce",
        margin_based: false,
        autoattack: None,
        build: |s| Some(Box::new(Apgd::standard(Norm::Linf, s.eps, ApgdLoss::Ce))),
    },
    AttackEntry {
        spec: AttackSpec::ApgdDlr,
        token: "apgd-dlr",
        margin_based: true,
        autoattack: None,
        build: |s| Some(Box::new(Apgd::standard(Norm::Linf, s.eps, ApgdLoss::Dlr))),
    },
    AttackEntry {
        spec: AttackSpec::ApgdT,
        token: "apgd-t",
        margin_based: true,
        autoattack: None,
        build: |s| Some(Box::new(Apgd::standard(Norm::Linf, s.eps, ApgdLoss::TargetedDlr { targets: 9 }))),
    },
    AttackEntry {
        spec: AttackSpec::FabT,
        token: "fab-t",
        margin_based: true,
        autoattack: None,
        build: |s| Some(Box::new(FabTargeted::standard(s.eps))),
    },
    AttackEntry {
        spec: AttackSpec::Square,
        token: "square",
        margin_based: true,
        autoattack: None,
        build: |s| Some(Box::new(Square::standard(s.eps))),
    },
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
    /// Parse a comma-separated list: tokens of [`ATTACKS`] (`clean, fgsm, pgd, mim, cw,
    /// aa-paper, aa, apgd-ce, apgd-dlr, apgd-t, fab-t, square`), or `default`. Clean
    /// always comes first.
    pub fn parse_list(list: &str) -> Result<Vec<AttackSpec>> {
        let mut out = vec![AttackSpec::Clean];
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let specs: Vec<AttackSpec> = if item == "default" {
                DEFAULT_ATTACKS.to_vec()
            } else {
                let spec =
                    ATTACKS.iter().find(|e| e.token == item).map(|e| e.spec).ok_or_else(|| EvalError::Invalid {
                        what: "--attacks".into(),
                        reason: format!(
                            "unknown attack {item:?}; expected default or a list of {}",
                            ATTACKS.iter().map(|e| e.token).collect::<Vec<_>>().join(", ")
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

    /// Its row of [`ATTACKS`] (every variant has one: the registry test checks it).
    pub fn entry(self) -> Option<&'static AttackEntry> {
        ATTACKS.iter().find(|e| e.spec == self)
    }

    /// Short name (the `--attacks` token).
    pub fn token(self) -> &'static str {
        self.entry().map(|e| e.token).unwrap_or("?")
    }

    /// Whether the attack optimises a logit-scale-invariant objective (margin, DLR),
    /// the reference against which CE-based PGD is audited.
    pub fn is_margin_based(self) -> bool {
        self.entry().is_some_and(|e| e.margin_based)
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

    /// The random start of PGD, MIM and CW: uniform in the ball, or none.
    fn start(&self) -> RandomStart {
        if self.random_start {
            RandomStart::Uniform
        } else {
            RandomStart::Off
        }
    }

    /// PGD on cross-entropy with these settings.
    pub fn pgd(&self) -> Pgd {
        Pgd { random_start: self.start(), ..Pgd::linf(self.eps, self.step_size, self.steps) }
    }

    /// The AutoAttack an entry stands for, run through [`AutoAttack::evaluate`] so that
    /// the report can say which attack broke each point (`None` for other entries).
    pub fn autoattack(&self, spec: AttackSpec) -> Option<AutoAttack> {
        spec.entry()?.autoattack.map(|suite| AutoAttack::new(suite, self.eps))
    }

    /// The attack an entry stands for (`None` for clean).
    pub fn build(&self, spec: AttackSpec) -> Option<Box<dyn Attack + Send + Sync>> {
        (spec.entry()?.build)(self)
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
    /// AutoAttack entries: `"clean"`, the name of the attack that first broke each
    /// example, or `None` if it stayed robust (empty for other entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broken_by: Vec<Option<String>>,
}

/// How a suite run saves and resumes its progress (see [`run_suite_with`]).
pub struct Progress<'a> {
    /// Global index of the first batch of `set` (a shard's offset): batch k is
    /// attacked with seed `settings.seed + first_batch + k`, so a shard computes
    /// exactly what the unsharded run computes for the same images.
    pub first_batch: usize,
    /// Outcomes from an interrupted run, in suite order: complete ones are kept, a
    /// partial last one (fewer predictions than images, a whole number of batches)
    /// continues where it stopped.
    pub resume: Vec<AttackOutcome>,
    /// Least time between two calls of `save` within an attack (each attack's end
    /// always saves).
    pub every: Duration,
    /// Called with the outcomes so far, the last one possibly partial.
    pub save: &'a mut dyn FnMut(&[AttackOutcome]) -> Result<()>,
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
    let mut ignore = |_: &[AttackOutcome]| Ok(());
    let p = Progress { first_batch: 0, resume: Vec::new(), every: Duration::MAX, save: &mut ignore };
    run_suite_with(model, set, specs, settings, batch, device, progress, p)
}

fn resume_error(reason: String) -> EvalError {
    EvalError::Invalid { what: "--resume".into(), reason }
}

/// [`run_suite`] that saves its progress through `p.save` and continues from `p.resume`;
/// the outcomes are identical to an uninterrupted run's (per-batch seeds), apart from
/// `seconds`, which adds up the time of every session.
#[allow(clippy::too_many_arguments)]
pub fn run_suite_with(
    model: &dyn Model,
    set: &ImageSet,
    specs: &[AttackSpec],
    settings: &AttackSettings,
    batch: usize,
    device: &Device,
    progress: bool,
    p: Progress<'_>,
) -> Result<Vec<AttackOutcome>> {
    let batch = batch.max(1);
    let loader = Loader::new(std::sync::Arc::new(set.clone()), LoaderConfig::eval(batch), device.clone())?;
    let labels = set.labels();
    let n = set.len();
    if p.resume.len() > specs.len() || p.resume.iter().zip(specs).any(|(o, s)| o.spec != *s) {
        return Err(resume_error("the saved outcomes were made with another attack list".into()));
    }
    let mut out: Vec<AttackOutcome> = Vec::new();
    let mut resume = p.resume.into_iter();
    for &spec in specs {
        let composite = settings.autoattack(spec);
        let attack = settings.build(spec);
        let name = attack.as_ref().map(|a| a.name()).unwrap_or_else(|| "clean".into());
        let mut current = resume.next().unwrap_or(AttackOutcome {
            spec,
            name: name.clone(),
            predicted: Vec::with_capacity(n),
            correct: Vec::new(),
            seconds: 0.0,
            broken_by: Vec::new(),
        });
        let done = current.predicted.len();
        if done > n || (done < n && !done.is_multiple_of(batch)) {
            return Err(resume_error(format!(
                "the saved {} outcomes cover {done} of {n} images, not a whole number of batches of {batch}",
                current.name
            )));
        }
        if done < n {
            let bar = crate::progress::bar(n as u64, &name, progress);
            bar.set_position(done as u64);
            let mut started = Instant::now();
            let mut last_save = Instant::now();
            for (k, b) in loader.epoch(0).enumerate().skip(done / batch) {
                let b = b?;
                let seed = settings.seed.wrapping_add((p.first_batch + k) as u64);
                let images: Tensor = match (&composite, &attack) {
                    (Some(aa), _) => {
                        let r = aa.evaluate(model, &b.images, &b.labels, seed)?;
                        current.broken_by.extend(r.broken_by);
                        r.adv
                    }
                    (None, None) => b.images.clone(),
                    (None, Some(a)) => a.run(model, &b.images, &b.labels, seed)?.adv,
                };
                current.predicted.extend(predict(model, &images)?);
                bar.inc(b.labels.dim(0)? as u64);
                let last = current.predicted.len() == n;
                if last || last_save.elapsed() >= p.every {
                    current.seconds += started.elapsed().as_secs_f64();
                    started = Instant::now();
                    if last {
                        current.correct = current.predicted.iter().zip(labels).map(|(p, l)| p == l).collect();
                    }
                    out.push(current);
                    (p.save)(&out)?;
                    current = out.pop().ok_or_else(|| resume_error("lost the current outcome".into()))?;
                    last_save = Instant::now();
                }
            }
            bar.finish_and_clear();
        }
        current.correct = current.predicted.iter().zip(labels).map(|(p, l)| p == l).collect();
        out.push(current);
    }
    Ok(out)
}
