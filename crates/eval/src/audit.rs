//! The robustness audit: checks that a robust-accuracy number can be trusted (the
//! RoBal paper's observation 2, and the usual gradient-masking signs), each a
//! statistical statement over per-example outcomes with the numbers behind it.
//!
//! Two attacks on the same examples are compared by their discordant pairs with an
//! exact one-sided McNemar test ([`crate::stats::Paired`]); a difference counts when it
//! is significant at `1 - confidence` **and** larger than `threshold` points (the
//! effect size). Verdicts:
//!
//! | check | verdict | when |
//! |---|---|---|
//! | `ce_vs_margin` | info | the best margin attack (CW, APGD-DLR/-T, AutoAttack, FAB-T, Square) is significantly stronger than CE-PGD: report the margin figure. This is the usual gap on healthy models. |
//! | `ce_vs_margin` | warning | the same, corroborated by `logit_scale`, `zero_gradients` or `steps_no_fall`: gradient masking |
//! | `logit_scale` | warning | PGD-CE on logits `10^k z` (k in -2..2) is significantly stronger at some k != 0 than at k = 0 (Bonferroni over the 4 factors); clean accuracy is scale-invariant, so the model's own scale hides robustness that is not there |
//! | `zero_gradients` | warning | the share of examples with an exactly zero CE input gradient is significantly above `zero_grad_share` (exact binomial test) |
//! | `steps_no_fall` | warning | PGD with `steps` steps breaks no more examples than one step of size eps (while one step leaves more than `threshold`% robust) |
//! | `eps_no_fall` | warning | PGD at 4 eps breaks no more examples than at eps (while more than `threshold`% are robust at eps) |
//! | `not_converged` | info | 4x the steps is significantly stronger: the reported PGD figure is too high |
//!
//! All sweeps run on the first `limit` examples given, with PGD on cross-entropy.
//! AutoAttack's own run-time checks live in [`crate::runtime`] and report into the
//! same list.

use candle_core::Tensor;
use robal_attacks::{model::loss_and_grad, Attack, Loss, Model, ScaledLogits};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stats::{binomial_upper_tail, Paired};
use crate::suite::{AttackOutcome, AttackSettings, AttackSpec};

/// Thresholds of the audit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Effect size: an accuracy gap, in percentage points, that matters (2).
    pub threshold: f64,
    /// Share of examples with an all-zero input gradient that is tolerated (0.05).
    pub zero_grad_share: f64,
    /// Examples used by the sweeps (0 = all given).
    pub limit: usize,
    /// Batch size of the sweeps.
    pub batch: usize,
    /// Confidence of the tests (0.99): a difference is significant when its p-value
    /// is below `1 - confidence`.
    #[serde(default = "default_confidence")]
    pub confidence: f64,
}

fn default_confidence() -> f64 {
    0.99
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { threshold: 2.0, zero_grad_share: 0.05, limit: 100, batch: 128, confidence: default_confidence() }
    }
}

impl AuditConfig {
    /// Significance level `1 - confidence`.
    pub fn alpha(&self) -> f64 {
        1.0 - self.confidence
    }
}

/// What a check concluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing to report.
    Pass,
    /// Worth knowing, not a sign that the evaluation is wrong (e.g. "report APGD-T, not PGD").
    Info,
    /// The figure is likely wrong (gradient masking, a broken attack, a misused model).
    Warning,
}

/// Every check an evaluation runs, under the name its reports carry (`snake_case`):
/// the audit's sweeps and gap check ([`audit_sweeps`], [`check_ce_vs_margin`]) and
/// AutoAttack's run-time checks ([`crate::runtime`]). One row per check: adding one is
/// a variant here and its function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckId {
    /// PGD at logits scaled by 10^-2..10^2: a scale-dependent result is the fake gain
    /// of a saturated softmax.
    LogitScale,
    /// Examples whose CE input gradient is exactly zero.
    ZeroGradients,
    /// PGD at 4x the steps breaks more: the attack has not converged.
    NotConverged,
    /// A 4x larger radius breaks nothing more.
    EpsNoFall,
    /// The iterations add nothing over one step of size eps.
    StepsNoFall,
    /// The CE attack is weaker than the margin (DLR / targeted) attacks.
    CeVsMargin,
    /// Two forward passes on the same inputs differ.
    RandomizedForward,
    /// The outputs are probability rows, not logits.
    ProbabilityOutputs,
    /// NaN or infinite logits.
    FiniteOutputs,
    /// Inputs outside [0, 1].
    InputRange,
    /// Fewer classes than the targeted attacks' target count.
    TargetClasses,
    /// Square (gradient-free) breaks points the gradient attacks did not.
    SquareAfterGradient,
}

impl CheckId {
    /// Every check, in the order an evaluation runs them.
    pub const ALL: [CheckId; 12] = [
        CheckId::InputRange,
        CheckId::FiniteOutputs,
        CheckId::ProbabilityOutputs,
        CheckId::RandomizedForward,
        CheckId::TargetClasses,
        CheckId::LogitScale,
        CheckId::ZeroGradients,
        CheckId::NotConverged,
        CheckId::EpsNoFall,
        CheckId::StepsNoFall,
        CheckId::CeVsMargin,
        CheckId::SquareAfterGradient,
    ];

    /// The name reports carry (`logit_scale`, ...).
    pub fn name(self) -> &'static str {
        match self {
            CheckId::LogitScale => "logit_scale",
            CheckId::ZeroGradients => "zero_gradients",
            CheckId::NotConverged => "not_converged",
            CheckId::EpsNoFall => "eps_no_fall",
            CheckId::StepsNoFall => "steps_no_fall",
            CheckId::CeVsMargin => "ce_vs_margin",
            CheckId::RandomizedForward => "randomized_forward",
            CheckId::ProbabilityOutputs => "probability_outputs",
            CheckId::FiniteOutputs => "finite_outputs",
            CheckId::InputRange => "input_range",
            CheckId::TargetClasses => "target_classes",
            CheckId::SquareAfterGradient => "square_after_gradient",
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One check: its verdict and the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Which check.
    pub check: CheckId,
    /// Conclusion.
    pub verdict: Verdict,
    /// What was measured and what it means.
    pub message: String,
    /// The paired comparison the verdict rests on, if any.
    #[serde(default)]
    pub paired: Option<Paired>,
    /// The p-value of the test behind the verdict (after any multiplicity correction).
    #[serde(default)]
    pub p_value: Option<f64>,
}

impl Check {
    /// A check with no paired comparison behind it.
    pub fn new(check: CheckId, verdict: Verdict, message: String) -> Self {
        Self { check, verdict, message, paired: None, p_value: None }
    }

    /// A check that is `severity` when `fired` and a pass otherwise; the message is what
    /// was measured, followed by `consequence` when it fired.
    fn fired(check: CheckId, fired: bool, severity: Verdict, measured: String, consequence: &str) -> Self {
        let (verdict, consequence) = if fired { (severity, consequence) } else { (Verdict::Pass, "") };
        Self::new(check, verdict, format!("{measured}{consequence}"))
    }

    fn with_paired(mut self, p: Paired) -> Self {
        self.p_value = Some(p.p_value);
        self.paired = Some(p);
        self
    }
}

/// A check that fired (verdict info or warning).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    /// Which check.
    pub check: CheckId,
    /// Info or warning.
    #[serde(default = "warning")]
    pub severity: Verdict,
    /// What was seen and what it suggests.
    pub message: String,
}

fn warning() -> Verdict {
    Verdict::Warning
}

/// Everything the audit measured, and the flags.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    /// Checks that fired, info and warnings (empty when nothing is worth saying).
    pub flags: Vec<Flag>,
    /// Every check run, passed ones included, with its numbers.
    #[serde(default)]
    pub checks: Vec<Check>,
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

impl AuditResult {
    /// Record a check (and its flag when it fired).
    pub fn push(&mut self, c: Check) {
        if c.verdict != Verdict::Pass {
            self.flags.push(Flag { check: c.check, severity: c.verdict, message: c.message.clone() });
        }
        self.checks.push(c);
    }

    /// The warnings only.
    pub fn warnings(&self) -> impl Iterator<Item = &Flag> {
        self.flags.iter().filter(|f| f.severity == Verdict::Warning)
    }

    /// Add the CE-vs-margin check on `outcomes`, read against the masking signs this
    /// result already holds (`logit_scale`, `zero_gradients`, `steps_no_fall`
    /// warnings); run it after the sweeps.
    pub fn push_ce_vs_margin(&mut self, outcomes: &[AttackOutcome], config: &AuditConfig) {
        let corroborating: Vec<CheckId> = [CheckId::LogitScale, CheckId::ZeroGradients, CheckId::StepsNoFall]
            .into_iter()
            .filter(|&c| self.warned(c))
            .collect();
        if let Some(c) = check_ce_vs_margin(outcomes, config, &corroborating) {
            self.push(c);
        }
    }

    /// Whether `check` gave a warning.
    pub fn warned(&self, check: CheckId) -> bool {
        self.warnings().any(|f| f.check == check)
    }
}

fn accuracy(flags: &[bool]) -> f64 {
    flags.iter().filter(|&&c| c).count() as f64 / flags.len().max(1) as f64
}

/// Per-example robustness to `attack` on (x, y), in batches (batch k uses `seed + k`).
fn robust_flags(
    model: &dyn Model,
    attack: &dyn Attack,
    x: &Tensor,
    y: &Tensor,
    batch: usize,
    seed: u64,
) -> Result<Vec<bool>> {
    let n = x.dim(0)?;
    let mut robust = Vec::with_capacity(n);
    for (k, start) in (0..n).step_by(batch).enumerate() {
        let len = batch.min(n - start);
        let r = attack.run(model, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?, seed.wrapping_add(k as u64))?;
        robust.extend(r.success.iter().map(|s| !s));
    }
    Ok(robust)
}

/// The CE-vs-margin check on the suite's results alone: `None` without both a PGD
/// and a margin-based attack. A significant gap is information unless one of
/// `corroborating` (names of checks that warned) backs a masking reading.
pub fn check_ce_vs_margin(
    outcomes: &[AttackOutcome],
    config: &AuditConfig,
    corroborating: &[CheckId],
) -> Option<Check> {
    let pgd = outcomes.iter().find(|o| o.spec == AttackSpec::Pgd)?;
    let best = outcomes
        .iter()
        .filter(|o| o.spec.is_margin_based())
        .min_by(|a, b| accuracy(&a.correct).total_cmp(&accuracy(&b.correct)))?;
    let p = Paired::new(&pgd.correct, &best.correct);
    let figures = format!(
        "{} {:.1}% vs {} {:.1}% ({})",
        pgd.name,
        100.0 * accuracy(&pgd.correct),
        best.name,
        100.0 * accuracy(&best.correct),
        p.describe()
    );
    let check = if !p.b_stronger(config.alpha(), config.threshold) {
        Check::new(
            CheckId::CeVsMargin,
            Verdict::Pass,
            format!("no significant gap larger than {} points: {figures}", config.threshold),
        )
    } else if corroborating.is_empty() {
        Check::new(
            CheckId::CeVsMargin,
            Verdict::Info,
            format!(
                "{} is weaker than {}: report the latter; no other sign of gradient masking: {figures}",
                pgd.name, best.name
            ),
        )
    } else {
        Check::new(
            CheckId::CeVsMargin,
            Verdict::Warning,
            format!(
                "likely logit-scale gradient masking (corroborated by {}); trust the margin-based figure: {figures}",
                corroborating.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            ),
        )
    };
    Some(check.with_paired(p))
}

/// Run every check on `x`, `y` (the first `config.limit` rows are used by the sweeps),
/// given the suite's outcomes on the full set: [`audit_sweeps`], then the gap check.
pub fn audit(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    outcomes: &[AttackOutcome],
    settings: &AttackSettings,
    config: &AuditConfig,
) -> Result<AuditResult> {
    let mut r = audit_sweeps(model, x, y, settings, config)?;
    r.push_ce_vs_margin(outcomes, config);
    Ok(r)
}

/// The checks that attack the model again (logit scale, zero gradients, steps and
/// radius sweeps) on the first `config.limit` rows of `x`, `y`; one function per check,
/// in the order they read each other's verdicts.
pub fn audit_sweeps(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    settings: &AttackSettings,
    config: &AuditConfig,
) -> Result<AuditResult> {
    let n = if config.limit == 0 { x.dim(0)? } else { config.limit.min(x.dim(0)?) };
    let s = Sweep { model, x: x.narrow(0, 0, n)?, y: y.narrow(0, 0, n)?, settings, config, pgd: settings.pgd() };
    let mut r = AuditResult { images: n, ..Default::default() };
    let own = s.logit_scale(&mut r)?;
    s.zero_gradients(&mut r)?;
    let one_step = s.not_converged(&mut r, &own)?;
    s.eps_no_fall(&mut r, &own)?;
    s.steps_no_fall(&mut r, &own, &one_step);
    Ok(r)
}

/// What every sweep check shares: the model, the audited rows and the attack.
struct Sweep<'a> {
    model: &'a dyn Model,
    x: Tensor,
    y: Tensor,
    settings: &'a AttackSettings,
    config: &'a AuditConfig,
    pgd: robal_attacks::Pgd,
}

impl Sweep<'_> {
    /// Per-example robustness of the audited rows under `attack` on `model`.
    fn robust(&self, model: &dyn Model, attack: &robal_attacks::Pgd) -> Result<Vec<bool>> {
        robust_flags(model, attack, &self.x, &self.y, self.config.batch.max(1), self.settings.seed)
    }

    /// `logit_scale`: PGD at logits x10^k, k = -2..2; a significant change (Bonferroni
    /// over the four other scales) is the fake-gain signature. Returns the per-example
    /// robustness at the model's own scale.
    fn logit_scale(&self, r: &mut AuditResult) -> Result<Vec<bool>> {
        let labels: Vec<u32> = self.y.to_vec1()?;
        let mut robust_by_scale = Vec::new();
        for k in -2i32..=2 {
            let factor = 10f64.powi(k);
            let scaled = ScaledLogits { model: self.model, scale: factor };
            let predicted = robal_attacks::model::predict(&scaled, &self.x)?;
            let clean = accuracy(&predicted.iter().zip(&labels).map(|(p, l)| p == l).collect::<Vec<_>>());
            let robust = self.robust(&scaled, &self.pgd)?;
            r.scale_sweep.push((factor, clean, accuracy(&robust)));
            robust_by_scale.push((factor, robust));
        }
        let own = robust_by_scale[2].1.clone();
        let (factor, p) = robust_by_scale
            .iter()
            .filter(|(f, _)| *f != 1.0)
            .map(|(f, rob)| (*f, Paired::new(&own, rob)))
            .min_by(|a, b| a.1.p_value.total_cmp(&b.1.p_value))
            .unwrap_or((1.0, Paired::new(&own, &own)));
        let p_adj = (4.0 * p.p_value).min(1.0);
        let clean: Vec<String> = r.scale_sweep.iter().map(|s| format!("{:.1}", 100.0 * s.1)).collect();
        let fired = p_adj < self.config.alpha() && p.gap_points > self.config.threshold;
        let mut c = Check::fired(
            CheckId::LogitScale,
            fired,
            Verdict::Warning,
            format!(
                "PGD robust accuracy {:.1}% at the model's own logit scale, {:.1}% with logits x{factor:e} (clean {}%); {}, Bonferroni x4 p = {p_adj:.2e}",
                100.0 * accuracy(&own),
                100.0 * (p.robust_b as f64 / p.n.max(1) as f64),
                clean.join("/"),
                p.describe(),
            ),
            ": the paper's fake-gain signature",
        )
        .with_paired(p);
        c.p_value = Some(p_adj);
        r.push(c);
        Ok(own)
    }

    /// `zero_gradients`: is the share of exactly zero CE input gradients significantly
    /// above the tolerated one (exact binomial upper tail)?
    fn zero_gradients(&self, r: &mut AuditResult) -> Result<()> {
        let (n, batch) = (self.x.dim(0)?, self.config.batch.max(1));
        let mut zero = 0usize;
        for start in (0..n).step_by(batch) {
            let len = batch.min(n - start);
            let (x, y) = (self.x.narrow(0, start, len)?, self.y.narrow(0, start, len)?);
            let g = loss_and_grad(self.model, &x, &y, &Loss::CrossEntropy)?.grad;
            let norms: Vec<f32> = g.abs()?.flatten_from(1)?.max(1)?.to_vec1()?;
            zero += norms.iter().filter(|&&v| v == 0.0).count();
        }
        r.zero_grad_share = zero as f64 / n.max(1) as f64;
        let p_zero = binomial_upper_tail(n, zero, self.config.zero_grad_share);
        let fired = zero > 0 && p_zero < self.config.alpha();
        let mut c = Check::fired(
            CheckId::ZeroGradients,
            fired,
            Verdict::Warning,
            format!(
                "{zero} of {n} examples ({:.1}%) have an exactly zero input gradient of CE (tolerated {:.1}%, exact binomial p = {p_zero:.2e})",
                100.0 * r.zero_grad_share,
                100.0 * self.config.zero_grad_share,
            ),
            ": gradient-based attacks cannot move them (saturated softmax or a non-differentiable layer)",
        );
        c.p_value = Some(p_zero);
        r.push(c);
        Ok(())
    }

    /// `not_converged`: PGD at 4x the steps against the configured steps; records the
    /// steps sweep (one step of size eps, the steps, 4x) and returns the one-step
    /// robustness for [`Sweep::steps_no_fall`].
    fn not_converged(&self, r: &mut AuditResult, own: &[bool]) -> Result<Vec<bool>> {
        let steps = self.settings.steps;
        let one = robal_attacks::Pgd { steps: 1, step_size: self.settings.eps, ..self.pgd.clone() };
        let many = robal_attacks::Pgd { steps: 4 * steps, ..self.pgd.clone() };
        let (r1, r4) = (self.robust(self.model, &one)?, self.robust(self.model, &many)?);
        r.steps_sweep = vec![(1, accuracy(&r1)), (steps, accuracy(own)), (4 * steps, accuracy(&r4))];
        let more = Paired::new(own, &r4);
        let fired = more.b_stronger(self.config.alpha(), self.config.threshold);
        r.push(
            Check::fired(
                CheckId::NotConverged,
                fired,
                Verdict::Info,
                format!(
                    "PGD-{steps} {:.1}%, PGD-{} {:.1}% ({})",
                    100.0 * accuracy(own),
                    4 * steps,
                    100.0 * accuracy(&r4),
                    more.describe(),
                ),
                ": the attack has not converged and the PGD figure is too high; use more steps",
            )
            .with_paired(more),
        );
        Ok(r1)
    }

    /// `eps_no_fall`: robustness at eps, 2 eps and 4 eps (step sizes scaled alike); a
    /// 4x radius that breaks nothing more means the attack is not working.
    fn eps_no_fall(&self, r: &mut AuditResult, own: &[bool]) -> Result<()> {
        let settings = self.settings;
        r.eps_sweep.push((settings.eps, accuracy(own)));
        let mut wide = Vec::new();
        for m in [2.0, 4.0] {
            let attack =
                robal_attacks::Pgd { eps: m * settings.eps, step_size: m * settings.step_size, ..self.pgd.clone() };
            wide = self.robust(self.model, &attack)?;
            r.eps_sweep.push((m * settings.eps, accuracy(&wide)));
        }
        let fall = Paired::new(own, &wide);
        let fired = 100.0 * accuracy(own) > self.config.threshold && fall.gap_points <= 0.0;
        r.push(
            Check::fired(
                CheckId::EpsNoFall,
                fired,
                Verdict::Warning,
                format!(
                    "robust accuracy {:.1}% at eps {:.4}, {:.1}% at 4 eps ({})",
                    100.0 * accuracy(own),
                    settings.eps,
                    100.0 * accuracy(&wide),
                    fall.describe(),
                ),
                ": a larger radius breaks nothing more, so the attack is not working (gradient masking)",
            )
            .with_paired(fall),
        );
        Ok(())
    }

    /// `steps_no_fall`: iterations that add nothing over one step of size eps are a
    /// masking sign only beside another one (`eps_no_fall`, `zero_gradients`): a model
    /// that is simply robust at eps shows the same flat line.
    fn steps_no_fall(&self, r: &mut AuditResult, own: &[bool], one_step: &[bool]) {
        let steps_fall = Paired::new(one_step, own);
        let steps_flat = 100.0 * accuracy(one_step) > self.config.threshold && steps_fall.gap_points <= 0.0;
        let corroborated = r.warned(CheckId::EpsNoFall) || r.warned(CheckId::ZeroGradients);
        let verdict = match (steps_flat, corroborated) {
            (false, _) => Verdict::Pass,
            (true, false) => Verdict::Info,
            (true, true) => Verdict::Warning,
        };
        r.push(
            Check::new(
                CheckId::StepsNoFall,
                verdict,
                format!(
                    "one step of size eps leaves {:.1}% robust, PGD-{} {:.1}% ({}){}",
                    100.0 * accuracy(one_step),
                    self.settings.steps,
                    100.0 * accuracy(own),
                    steps_fall.describe(),
                    match verdict {
                        Verdict::Pass => "",
                        Verdict::Info => ": the iterations add nothing over one step; with no other sign of masking the model may simply be robust to both at this radius",
                        Verdict::Warning => ": the iterations make no progress, and the gradients are masked (see eps_no_fall / zero_gradients)",
                    }
                ),
            )
            .with_paired(steps_fall),
        );
    }
}
