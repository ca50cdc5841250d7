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

/// One check: its verdict and the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Name (`ce_vs_margin`, `logit_scale`, `randomized_forward`, ...).
    pub check: String,
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
    fn new(check: &str, verdict: Verdict, message: String) -> Self {
        Self { check: check.into(), verdict, message, paired: None, p_value: None }
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
    /// Check name (`ce_vs_margin`, `logit_scale`, ...).
    pub check: String,
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
            self.flags.push(Flag { check: c.check.clone(), severity: c.verdict, message: c.message.clone() });
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
        let corroborating: Vec<&str> =
            ["logit_scale", "zero_gradients", "steps_no_fall"].into_iter().filter(|c| self.warned(c)).collect();
        if let Some(c) = check_ce_vs_margin(outcomes, config, &corroborating) {
            self.push(c);
        }
    }

    /// Whether `check` gave a warning.
    pub fn warned(&self, check: &str) -> bool {
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
pub fn check_ce_vs_margin(outcomes: &[AttackOutcome], config: &AuditConfig, corroborating: &[&str]) -> Option<Check> {
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
            "ce_vs_margin",
            Verdict::Pass,
            format!("no significant gap larger than {} points: {figures}", config.threshold),
        )
    } else if corroborating.is_empty() {
        Check::new(
            "ce_vs_margin",
            Verdict::Info,
            format!(
                "{} is weaker than {}: report the latter; no other sign of gradient masking: {figures}",
                pgd.name, best.name
            ),
        )
    } else {
        Check::new(
            "ce_vs_margin",
            Verdict::Warning,
            format!(
                "likely logit-scale gradient masking (corroborated by {}); trust the margin-based figure: {figures}",
                corroborating.join(", ")
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
/// radius sweeps) on the first `config.limit` rows of `x`, `y`.
pub fn audit_sweeps(
    model: &dyn Model,
    x: &Tensor,
    y: &Tensor,
    settings: &AttackSettings,
    config: &AuditConfig,
) -> Result<AuditResult> {
    let (t, alpha) = (config.threshold, config.alpha());
    let n = if config.limit == 0 { x.dim(0)? } else { config.limit.min(x.dim(0)?) };
    let (x, y) = (x.narrow(0, 0, n)?, y.narrow(0, 0, n)?);
    let batch = config.batch.max(1);
    let seed = settings.seed;
    let mut r = AuditResult { images: n, ..Default::default() };
    let labels: Vec<u32> = y.to_vec1()?;

    // Logit-scale sweep.
    let pgd = settings.pgd();
    let mut robust_by_scale = Vec::new();
    for k in -2i32..=2 {
        let factor = 10f64.powi(k);
        let scaled = ScaledLogits { model, scale: factor };
        let predicted = robal_attacks::model::predict(&scaled, &x)?;
        let clean = accuracy(&predicted.iter().zip(&labels).map(|(p, l)| p == l).collect::<Vec<_>>());
        let robust = robust_flags(&scaled, &pgd, &x, &y, batch, seed)?;
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
    let fired = p_adj < alpha && p.gap_points > t;
    let mut c = Check::new(
        "logit_scale",
        if fired { Verdict::Warning } else { Verdict::Pass },
        format!(
            "PGD robust accuracy {:.1}% at the model's own logit scale, {:.1}% with logits x{factor:e} (clean {}%); {}, Bonferroni x4 p = {p_adj:.2e}{}",
            100.0 * accuracy(&own),
            100.0 * (p.robust_b as f64 / p.n.max(1) as f64),
            clean.join("/"),
            p.describe(),
            if fired { ": the paper's fake-gain signature" } else { "" }
        ),
    )
    .with_paired(p);
    c.p_value = Some(p_adj);
    r.push(c);

    // Zero input gradients: is their share significantly above the tolerated one?
    let mut zero = 0usize;
    for start in (0..n).step_by(batch) {
        let len = batch.min(n - start);
        let g = loss_and_grad(model, &x.narrow(0, start, len)?, &y.narrow(0, start, len)?, &Loss::CrossEntropy)?.grad;
        let norms: Vec<f32> = g.abs()?.flatten_from(1)?.max(1)?.to_vec1()?;
        zero += norms.iter().filter(|&&v| v == 0.0).count();
    }
    r.zero_grad_share = zero as f64 / n.max(1) as f64;
    let p_zero = binomial_upper_tail(n, zero, config.zero_grad_share);
    let fired = zero > 0 && p_zero < alpha;
    let mut c = Check::new(
        "zero_gradients",
        if fired { Verdict::Warning } else { Verdict::Pass },
        format!(
            "{zero} of {n} examples ({:.1}%) have an exactly zero input gradient of CE (tolerated {:.1}%, exact binomial p = {p_zero:.2e}){}",
            100.0 * r.zero_grad_share,
            100.0 * config.zero_grad_share,
            if fired { ": gradient-based attacks cannot move them (saturated softmax or a non-differentiable layer)" } else { "" }
        ),
    );
    c.p_value = Some(p_zero);
    r.push(c);

    // Steps: one step of size eps, the configured steps, 4x the steps.
    let one = robal_attacks::Pgd { steps: 1, step_size: settings.eps, ..pgd.clone() };
    let many = robal_attacks::Pgd { steps: 4 * settings.steps, ..pgd.clone() };
    let (r1, r4) = (robust_flags(model, &one, &x, &y, batch, seed)?, robust_flags(model, &many, &x, &y, batch, seed)?);
    r.steps_sweep = vec![(1, accuracy(&r1)), (settings.steps, accuracy(&own)), (4 * settings.steps, accuracy(&r4))];
    let steps_fall = Paired::new(&r1, &own);
    let steps_flat = 100.0 * accuracy(&r1) > t && steps_fall.gap_points <= 0.0;
    let more = Paired::new(&own, &r4);
    let fired = more.b_stronger(alpha, t);
    r.push(
        Check::new(
            "not_converged",
            if fired { Verdict::Info } else { Verdict::Pass },
            format!(
                "PGD-{} {:.1}%, PGD-{} {:.1}% ({}){}",
                settings.steps,
                100.0 * accuracy(&own),
                4 * settings.steps,
                100.0 * accuracy(&r4),
                more.describe(),
                if fired {
                    ": the attack has not converged and the PGD figure is too high; use more steps"
                } else {
                    ""
                }
            ),
        )
        .with_paired(more),
    );

    // Radius: eps, 2 eps, 4 eps with proportional step sizes.
    r.eps_sweep.push((settings.eps, accuracy(&own)));
    let mut wide = Vec::new();
    for m in [2.0, 4.0] {
        let attack = robal_attacks::Pgd { eps: m * settings.eps, step_size: m * settings.step_size, ..pgd.clone() };
        wide = robust_flags(model, &attack, &x, &y, batch, seed)?;
        r.eps_sweep.push((m * settings.eps, accuracy(&wide)));
    }
    let fall = Paired::new(&own, &wide);
    let fired = 100.0 * accuracy(&own) > t && fall.gap_points <= 0.0;
    r.push(
        Check::new(
            "eps_no_fall",
            if fired { Verdict::Warning } else { Verdict::Pass },
            format!(
                "robust accuracy {:.1}% at eps {:.4}, {:.1}% at 4 eps ({}){}",
                100.0 * accuracy(&own),
                settings.eps,
                100.0 * accuracy(&wide),
                fall.describe(),
                if fired {
                    ": a larger radius breaks nothing more, so the attack is not working (gradient masking)"
                } else {
                    ""
                }
            ),
        )
        .with_paired(fall),
    );
    // Iterations that add nothing over one step are a masking sign only beside another
    // one: a model that is simply robust at eps shows the same flat line.
    let corroborated = r.warned("eps_no_fall") || r.warned("zero_gradients");
    let verdict = match (steps_flat, corroborated) {
        (false, _) => Verdict::Pass,
        (true, false) => Verdict::Info,
        (true, true) => Verdict::Warning,
    };
    r.push(
        Check::new(
            "steps_no_fall",
            verdict,
            format!(
                "one step of size eps leaves {:.1}% robust, PGD-{} {:.1}% ({}){}",
                100.0 * accuracy(&r1),
                settings.steps,
                100.0 * accuracy(&own),
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
    Ok(r)
}
