//! AutoAttack's run-time checks (as fra31's `checks.py` makes them), each one small
//! named function returning a [`Check`]. They run once at the entry of an
//! evaluation, on its first batch, except [`square_after_gradient`], which reads
//! the suite's per-example outcomes.

use candle_core::{DType, Tensor, D};
use robal_attacks::Model;

use crate::audit::{Check, CheckId, Verdict};
use crate::error::Result;
use crate::suite::{AttackOutcome, AttackSpec};

/// Target classes of APGD-T and FAB-T in the standard suite.
pub const TARGET_CLASSES: usize = 9;

fn check(id: CheckId, fired: bool, warn: String, pass: String) -> Check {
    Check::new(id, if fired { Verdict::Warning } else { Verdict::Pass }, if fired { warn } else { pass })
}

/// `randomized_forward`: two forward passes on the same inputs must agree exactly;
/// a randomised defence needs an attack that averages over its randomness (EOT).
pub fn randomized_forward(model: &dyn Model, x: &Tensor) -> Result<Check> {
    let (a, b) = (model.logits(&x.detach())?, model.logits(&x.detach())?);
    let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(check(
        CheckId::RandomizedForward,
        diff != 0.0,
        format!("two forward passes on the same {} images differ (max |diff| {diff:.3e}): the model is randomised, so deterministic attacks overstate its robustness; evaluate it with an EOT attack", x.dim(0)?),
        "two forward passes give identical logits".into(),
    ))
}

/// `probability_outputs`: the outputs must be logits, not probabilities (rows that
/// are non-negative and sum to 1 within 1e-5 make CE and DLR attacks misbehave).
pub fn probability_outputs(logits: &Tensor) -> Result<Check> {
    let z = logits.to_dtype(DType::F64)?;
    let sums: Vec<f64> = z.sum(D::Minus1)?.to_vec1()?;
    let min = z.flatten_all()?.min(0)?.to_scalar::<f64>()?;
    let fired = min >= 0.0 && sums.iter().all(|s| (s - 1.0).abs() <= 1e-5);
    Ok(check(
        CheckId::ProbabilityOutputs,
        fired,
        "every output row is non-negative and sums to 1: the model seems to return probabilities; attacks need the logits (remove the final softmax)".into(),
        "outputs are not probability rows".into(),
    ))
}

/// `finite_outputs`: NaN or infinite logits make every attack's result meaningless.
pub fn finite_outputs(logits: &Tensor) -> Result<Check> {
    let v: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    Ok(check(
        CheckId::FiniteOutputs,
        bad > 0,
        format!("{bad} of {} logits are NaN or infinite", v.len()),
        "all logits are finite".into(),
    ))
}

/// `input_range`: attacks clip to \[0, 1\]; test images outside it are not what the
/// threat model assumes (data normalised before the model?).
pub fn input_range(x: &Tensor) -> Result<Check> {
    let v = x.to_dtype(DType::F64)?.flatten_all()?;
    let (lo, hi) = (v.min(0)?.to_scalar::<f64>()?, v.max(0)?.to_scalar::<f64>()?);
    Ok(check(
        CheckId::InputRange,
        lo < 0.0 || hi > 1.0 || lo.is_nan() || hi.is_nan(),
        format!("test images range over [{lo:.4}, {hi:.4}], not [0, 1]: pass unnormalised pixels and put the normalisation inside the model"),
        format!("inputs lie in [{lo:.4}, {hi:.4}]"),
    ))
}

/// `target_classes`: the targeted attacks need `targets + 1` classes, and DLR needs
/// at least 3; with fewer, APGD-T and FAB-T run fewer targets than the suite names.
pub fn target_classes(num_classes: usize, specs: &[AttackSpec]) -> Check {
    use AttackSpec::*;
    let targeted = specs.iter().any(|s| matches!(s, ApgdT | FabT | AutoAttack | AutoAttackPaper));
    let dlr = specs.iter().any(|s| matches!(s, ApgdDlr | ApgdT | AutoAttack | AutoAttackPaper));
    let message = if dlr && num_classes < 3 {
        Some(format!("with {num_classes} classes the DLR loss is undefined (it needs the third-largest logit)"))
    } else if targeted && num_classes < TARGET_CLASSES + 1 {
        Some(format!(
            "{TARGET_CLASSES} target classes are asked of APGD-T/FAB-T but only {} are possible with {num_classes} classes: they run {} targets",
            num_classes - 1,
            num_classes - 1
        ))
    } else {
        None
    };
    check(
        CheckId::TargetClasses,
        message.is_some(),
        message.unwrap_or_default(),
        format!("{num_classes} classes suffice for the suite's targets"),
    )
}

/// `square_after_gradient`: Square, a gradient-free attack, must not break points
/// that every gradient attack left robust; if it does, gradients are unreliable.
/// Reads standard AutoAttack's per-example breakdown, or a stand-alone Square beside
/// gradient attacks. `None` when neither was run.
pub fn square_after_gradient(outcomes: &[AttackOutcome]) -> Option<Check> {
    let (before, after, n, source) =
        if let Some(aa) = outcomes.iter().find(|o| o.spec == AttackSpec::AutoAttack && !o.broken_by.is_empty()) {
            let after = aa.correct.iter().filter(|&&c| c).count();
            let by_square = aa.broken_by.iter().filter(|b| b.as_deref() == Some("square")).count();
            (after + by_square, after, aa.correct.len(), "standard AutoAttack")
        } else {
            let square = outcomes.iter().find(|o| o.spec == AttackSpec::Square)?;
            let gradient: Vec<&AttackOutcome> =
                outcomes.iter().filter(|o| !matches!(o.spec, AttackSpec::Clean | AttackSpec::Square)).collect();
            if gradient.is_empty() {
                return None;
            }
            let n = square.correct.len();
            let robust_gradient: Vec<bool> = (0..n).map(|i| gradient.iter().all(|o| o.correct[i])).collect();
            let before = robust_gradient.iter().filter(|&&r| r).count();
            let after = (0..n).filter(|&i| robust_gradient[i] && square.correct[i]).count();
            (before, after, n, "the suite's gradient attacks, then Square")
        };
    let pct = |k: usize| 100.0 * k as f64 / n.max(1) as f64;
    Some(check(
        CheckId::SquareAfterGradient,
        after < before,
        format!(
            "Square lowered the robust accuracy after the gradient attacks from {:.2}% to {:.2}% ({} of {n} examples, {source}): the gradient-based evaluation is unreliable; run Square with more queries and restarts, or an adaptive attack",
            pct(before),
            pct(after),
            before - after
        ),
        format!("Square broke no example the gradient attacks left robust ({source})"),
    ))
}

/// The checks made once at the entry of an evaluation, on its first batch `x`.
pub fn entry_checks(model: &dyn Model, x: &Tensor, num_classes: usize, specs: &[AttackSpec]) -> Result<Vec<Check>> {
    let logits = model.logits(&x.detach())?;
    Ok(vec![
        input_range(x)?,
        finite_outputs(&logits)?,
        probability_outputs(&logits)?,
        randomized_forward(model, x)?,
        target_classes(num_classes, specs),
    ])
}
