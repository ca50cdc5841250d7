//! The audit on models built to trigger each check, and on models that must pass.

use candle_core::{DType, Tensor};
use robal_attacks::{model::predict, Model};
use robal_eval::suite::{AttackOutcome, AttackSettings, AttackSpec};
use robal_eval::{audit, AuditConfig, AuditResult, Verdict};

mod support;
use support::{blobs, self_labelled as data, trained_mlp, Mlp};

fn settings() -> AttackSettings {
    AttackSettings { eps: 0.06, steps: 20, step_size: 0.015, random_start: false, ..Default::default() }
}

fn outcomes(model: &dyn Model, x: &Tensor, y: &Tensor, s: &AttackSettings) -> Vec<AttackOutcome> {
    [AttackSpec::Pgd, AttackSpec::Cw]
        .iter()
        .map(|&spec| {
            let a = s.build(spec).unwrap();
            let r = a.run(model, x, y, 0).unwrap();
            let predicted = predict(model, &r.adv).unwrap();
            let labels: Vec<u32> = y.to_vec1().unwrap();
            let correct = predicted.iter().zip(&labels).map(|(p, l)| p == l).collect();
            AttackOutcome { spec, name: a.name(), predicted, correct, seconds: 0.0, broken_by: Vec::new() }
        })
        .collect()
}

fn run(model: &Mlp, x: &Tensor, y: &Tensor, s: &AttackSettings) -> AuditResult {
    let o = outcomes(model, x, y, s);
    let r = audit(model, x, y, &o, s, &AuditConfig { limit: 0, ..Default::default() }).unwrap();
    eprintln!("{r:#?}");
    r
}

fn checks(r: &AuditResult) -> Vec<&str> {
    r.flags.iter().map(|f| f.check.name()).collect()
}

#[test]
fn healthy_model_passes_every_check() {
    let model = Mlp::new(1, 4.0, false);
    let (x, y) = data(&model, 200);
    let r = run(&model, &x, &y, &settings());
    assert!(r.flags.is_empty(), "flags on a healthy model: {:?}", r.flags);
    // The sweeps ran and behave as they should on a sound model.
    assert_eq!(r.scale_sweep.len(), 5);
    assert!(r.steps_sweep[1].1 < r.steps_sweep[0].1 && r.eps_sweep[2].1 < r.eps_sweep[0].1);
    assert_eq!(r.zero_grad_share, 0.0);
}

#[test]
fn logits_times_1000_trigger_the_masking_checks() {
    let healthy = Mlp::new(1, 4.0, false);
    let (x, y) = data(&healthy, 200);
    let scaled = Mlp::new(1, 4.0, false).scaled(1000.0);
    let r = run(&scaled, &x, &y, &settings());
    let c = checks(&r);
    for expected in ["ce_vs_margin", "logit_scale", "zero_gradients"] {
        assert!(c.contains(&expected), "{expected} did not fire: {c:?}");
    }
    // Clean accuracy is the same at every logit factor (argmax is scale-invariant).
    assert!(r.scale_sweep.iter().all(|s| s.1 == 1.0));
}

#[test]
fn a_non_differentiable_input_triggers_the_no_progress_checks() {
    let healthy = Mlp::new(1, 4.0, false);
    let (x, y) = data(&healthy, 200);
    let masked = Mlp::new(1, 4.0, true);
    let r = run(&masked, &x, &y, &settings());
    let c = checks(&r);
    for expected in ["zero_gradients", "steps_no_fall", "eps_no_fall"] {
        assert!(c.contains(&expected), "{expected} did not fire: {c:?}");
    }
    assert_eq!(r.zero_grad_share, 1.0);
}

#[test]
fn too_small_a_step_triggers_not_converged() {
    let model = Mlp::new(1, 4.0, false);
    let (x, y) = data(&model, 200);
    let s = AttackSettings { step_size: 0.0006, ..settings() };
    let c = run(&model, &x, &y, &s);
    assert!(checks(&c).contains(&"not_converged"), "{:?}", c.flags);
}

#[test]
fn the_gap_check_needs_both_kinds_of_attack() {
    let model = Mlp::new(1, 4.0, false).scaled(1000.0);
    let (x, y) = data(&Mlp::new(1, 4.0, false), 50);
    let o = outcomes(&model, &x, &y, &settings());
    let cfg = AuditConfig::default();
    let c = robal_eval::audit::check_ce_vs_margin(&o, &cfg, &[]).unwrap();
    assert_ne!(c.verdict, robal_eval::Verdict::Pass, "{c:?}");
    assert!(robal_eval::audit::check_ce_vs_margin(&o[..1], &cfg, &[]).is_none());
    let _ = DType::F32;
}

fn warnings(r: &AuditResult) -> Vec<&str> {
    r.warnings().map(|f| f.check.name()).collect()
}

/// The verdict of a check by name.
fn verdict(r: &AuditResult, check: &str) -> Verdict {
    r.checks
        .iter()
        .find(|c| c.check.name() == check)
        .map(|c| c.verdict)
        .unwrap_or_else(|| panic!("no {check} in {:?}", r.checks))
}

#[test]
fn a_model_trained_by_the_test_gets_no_warning_and_its_scaled_twins_do() {
    let model = trained_mlp();
    let (x, y) = blobs(240, 99);
    let clean = support::accuracy(&model, &x, &y);
    assert!(clean > 0.95, "the trained model should be accurate on held-out blobs: {clean}");
    let s = AttackSettings { eps: 0.2, steps: 20, step_size: 0.05, random_start: false, ..Default::default() };
    let r = run(&model, &x, &y, &s);
    assert!(warnings(&r).is_empty(), "warnings on a healthy trained model: {:#?}", r.flags);
    // Every check ran and reports its numbers.
    for c in ["logit_scale", "zero_gradients", "steps_no_fall", "not_converged", "eps_no_fall", "ce_vs_margin"] {
        let check = r.checks.iter().find(|k| k.check.name() == c).unwrap_or_else(|| panic!("no {c}"));
        assert!(!check.message.is_empty());
        if c != "zero_gradients" {
            assert!(check.paired.is_some() && check.p_value.is_some(), "{c}: {check:?}");
        }
    }
    // The PGD attack is real: it breaks some examples at this radius.
    assert!(r.steps_sweep[1].1 < clean, "{:?}", r.steps_sweep);

    // Logits x1000: CE saturates, PGD-CE stalls, the margin attack does not.
    let r = run(&model.scaled(1000.0), &x, &y, &s);
    let w = warnings(&r);
    for expected in ["ce_vs_margin", "logit_scale", "zero_gradients"] {
        assert!(w.contains(&expected), "{expected} did not warn: {:#?}", r.flags);
    }
    let gap = r.checks.iter().find(|c| c.check == robal_eval::CheckId::CeVsMargin).unwrap();
    assert!(gap.message.contains("corroborated by"), "{}", gap.message);

    // A saturating output: flat almost everywhere, so every gradient attack stalls.
    let r = run(&model.saturating(), &x, &y, &s);
    let w = warnings(&r);
    for expected in ["zero_gradients", "steps_no_fall", "eps_no_fall"] {
        assert!(w.contains(&expected), "{expected} did not warn: {:#?}", r.flags);
    }
}

/// A gap between CE-PGD and the margin attack alone is information, not a warning;
/// a gap of 3 examples in 100 is not significant at 99%.
#[test]
fn a_bare_gap_is_information_and_a_small_one_is_nothing() {
    let outcome = |spec: AttackSpec, correct: Vec<bool>| AttackOutcome {
        spec,
        name: spec.token().into(),
        predicted: vec![0; correct.len()],
        correct,
        seconds: 0.0,
        broken_by: Vec::new(),
    };
    let cfg = AuditConfig::default();
    // PGD leaves 60 of 100 robust; CW breaks 12 of them and nothing else: p = 2^-12.
    let pgd: Vec<bool> = (0..100).map(|i| i < 60).collect();
    let cw: Vec<bool> = (0..100).map(|i| i < 48).collect();
    let o = [outcome(AttackSpec::Pgd, pgd.clone()), outcome(AttackSpec::Cw, cw)];
    let c = robal_eval::audit::check_ce_vs_margin(&o, &cfg, &[]).unwrap();
    assert_eq!(c.verdict, Verdict::Info, "{c:?}");
    let p = c.paired.unwrap();
    assert_eq!((p.only_b_breaks, p.only_a_breaks, p.n), (12, 0, 100));
    assert!((p.p_value - 0.5f64.powi(12)).abs() < 1e-15 && (p.gap_points - 12.0).abs() < 1e-12);
    let c = robal_eval::audit::check_ce_vs_margin(&o, &cfg, &[robal_eval::CheckId::ZeroGradients]).unwrap();
    assert_eq!(c.verdict, Verdict::Warning);
    // 3 of 100, the embedded default's old false alarm: p = 1/8.
    let cw: Vec<bool> = (0..100).map(|i| i < 57).collect();
    let o = [outcome(AttackSpec::Pgd, pgd), outcome(AttackSpec::Cw, cw)];
    let c = robal_eval::audit::check_ce_vs_margin(&o, &cfg, &[robal_eval::CheckId::ZeroGradients]).unwrap();
    assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    assert!((c.p_value.unwrap() - 0.125).abs() < 1e-12, "{c:?}");
}

#[test]
fn verdicts_of_the_known_cases() {
    let healthy = Mlp::new(1, 4.0, false);
    let (x, y) = data(&healthy, 200);
    let r = run(&healthy.scaled(1000.0), &x, &y, &settings());
    assert_eq!(verdict(&r, "logit_scale"), Verdict::Warning);
    let s = AttackSettings { step_size: 0.0006, ..settings() };
    let r = run(&healthy, &x, &y, &s);
    assert_eq!(verdict(&r, "not_converged"), Verdict::Info, "{:#?}", r.checks);
}

/// The typed check ids keep the names reports carry: every id serialises as its name,
/// and a report written before the ids were typed (a committed study run) still loads.
#[test]
fn check_ids_are_the_names_reports_carry() {
    use robal_eval::CheckId;
    let mut names: Vec<&str> = CheckId::ALL.iter().map(|c| c.name()).collect();
    for c in CheckId::ALL {
        assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{}\"", c.name()));
        assert_eq!(serde_json::from_str::<CheckId>(&format!("\"{c}\"")).unwrap(), c);
    }
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CheckId::ALL.len(), "names are unique");
    let old = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../results/fashion-mnist-lt/fashion-mnist-lt-taet/seed-0/eval-aa/report.json"
    );
    let report = robal_eval::Report::load(std::path::Path::new(old)).unwrap();
    let audit = report.audit;
    let ids: Vec<CheckId> = audit.checks.iter().map(|c| c.check).collect();
    assert_eq!(
        ids,
        [
            CheckId::LogitScale,
            CheckId::ZeroGradients,
            CheckId::NotConverged,
            CheckId::EpsNoFall,
            CheckId::StepsNoFall,
            CheckId::InputRange,
            CheckId::FiniteOutputs,
            CheckId::ProbabilityOutputs,
            CheckId::RandomizedForward,
            CheckId::TargetClasses,
            CheckId::CeVsMargin,
        ]
    );
    assert_eq!(audit.flags[0].check, CheckId::CeVsMargin);
}
