//! AutoAttack's run-time checks, each on a model or input built to trip it, and on
//! one that must pass.

mod support;

use candle_core::{Device, Tensor, D};
use robal_attacks::Model;
use robal_eval::runtime::{
    entry_checks, finite_outputs, input_range, probability_outputs, randomized_forward, square_after_gradient,
    target_classes,
};
use robal_eval::suite::{AttackOutcome, AttackSpec};
use robal_eval::Verdict;
use support::{blobs, trained_mlp};

/// The trained MLP with N(0, 0.1) noise added to its logits at every call.
struct Noisy(support::Mlp);

impl Model for Noisy {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let z = self.0.logits(x)?;
        z.clone() + z.randn_like(0.0, 0.1)?
    }
}

#[test]
fn a_healthy_model_passes_every_entry_check() {
    let (x, _) = blobs(30, 1);
    let checks = entry_checks(&trained_mlp(), &x, 10, &[AttackSpec::Clean, AttackSpec::AutoAttack]).unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c.check.name()).collect();
    assert_eq!(names, ["input_range", "finite_outputs", "probability_outputs", "randomized_forward", "target_classes"]);
    assert!(checks.iter().all(|c| c.verdict == Verdict::Pass), "{checks:#?}");
}

#[test]
fn a_randomised_forward_is_caught() {
    let (x, _) = blobs(30, 1);
    let c = randomized_forward(&Noisy(trained_mlp()), &x).unwrap();
    assert_eq!(c.verdict, Verdict::Warning, "{c:?}");
    assert!(c.message.contains("randomised"));
}

#[test]
fn probabilities_instead_of_logits_are_caught() {
    let (x, _) = blobs(30, 1);
    let z = trained_mlp().logits(&x).unwrap();
    let p = candle_nn::ops::softmax(&z, D::Minus1).unwrap();
    assert_eq!(probability_outputs(&p).unwrap().verdict, Verdict::Warning);
    assert_eq!(probability_outputs(&z).unwrap().verdict, Verdict::Pass);
    // Non-negative rows that do not sum to 1 are not probabilities.
    assert_eq!(probability_outputs(&(p * 2.0).unwrap()).unwrap().verdict, Verdict::Pass);
}

#[test]
fn non_finite_outputs_and_inputs_outside_the_unit_box_are_caught() {
    let z = Tensor::new(&[[1f32, f32::NAN, 0.0], [0.0, 1.0, f32::INFINITY]], &Device::Cpu).unwrap();
    let c = finite_outputs(&z).unwrap();
    assert_eq!(c.verdict, Verdict::Warning);
    assert!(c.message.starts_with("2 of 6"), "{}", c.message);
    let (x, _) = blobs(10, 1);
    assert_eq!(input_range(&x).unwrap().verdict, Verdict::Pass);
    let normalised = ((x - 0.5).unwrap() / 0.25).unwrap();
    let c = input_range(&normalised).unwrap();
    assert_eq!(c.verdict, Verdict::Warning);
    assert!(c.message.contains("not [0, 1]"), "{}", c.message);
}

#[test]
fn too_few_classes_for_the_targets_are_named() {
    let c = target_classes(3, &[AttackSpec::Clean, AttackSpec::ApgdT]);
    assert_eq!(c.verdict, Verdict::Warning);
    assert!(c.message.contains("only 2 are possible with 3 classes"), "{}", c.message);
    let c = target_classes(2, &[AttackSpec::ApgdDlr]);
    assert!(c.verdict == Verdict::Warning && c.message.contains("DLR loss is undefined"), "{}", c.message);
    assert_eq!(target_classes(3, &[AttackSpec::Pgd, AttackSpec::Cw]).verdict, Verdict::Pass);
    assert_eq!(target_classes(10, &[AttackSpec::AutoAttack]).verdict, Verdict::Pass);
}

fn outcome(spec: AttackSpec, correct: Vec<bool>, broken_by: Vec<Option<String>>) -> AttackOutcome {
    AttackOutcome {
        spec,
        name: spec.token().into(),
        predicted: vec![0; correct.len()],
        correct,
        seconds: 0.0,
        broken_by,
    }
}

#[test]
fn square_breaking_what_the_gradient_attacks_left_is_caught() {
    // Standard AutoAttack: 10 examples, 1 misclassified, 3 broken by APGD, 2 by Square, 4 robust.
    let by = |s: &str| Some(s.to_string());
    let broken = vec![
        by("clean"),
        by("apgd-ce"),
        by("apgd-t"),
        by("apgd-t"),
        by("square"),
        by("square"),
        None,
        None,
        None,
        None,
    ];
    let correct = broken.iter().map(|b| b.is_none()).collect();
    let c = square_after_gradient(&[outcome(AttackSpec::AutoAttack, correct, broken.clone())]).unwrap();
    assert_eq!(c.verdict, Verdict::Warning);
    assert!(c.message.contains("from 60.00% to 40.00% (2 of 10 examples"), "{}", c.message);
    let clean: Vec<Option<String>> = broken.into_iter().map(|b| b.filter(|s| s != "square")).collect();
    let correct = clean.iter().map(|b| b.is_none()).collect();
    let c = square_after_gradient(&[outcome(AttackSpec::AutoAttack, correct, clean)]).unwrap();
    assert_eq!(c.verdict, Verdict::Pass);
    // Stand-alone Square beside PGD: example 2 survives PGD but not Square.
    let pgd = outcome(AttackSpec::Pgd, vec![true, false, true, true], vec![]);
    let square = outcome(AttackSpec::Square, vec![true, true, false, true], vec![]);
    let c = square_after_gradient(&[pgd.clone(), square]).unwrap();
    assert!(c.verdict == Verdict::Warning && c.message.contains("from 75.00% to 50.00%"), "{}", c.message);
    assert!(square_after_gradient(&[pgd]).is_none());
}
