//! The audit on models built to trigger each check, and on models that must pass.

use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use robal_attacks::{model::predict, Model};
use robal_eval::suite::{AttackOutcome, AttackSettings, AttackSpec};
use robal_eval::{audit, AuditConfig, AuditResult};

/// A small tanh MLP on 1x4x4 inputs: z = a * W2 tanh(W1 (x - 0.5)) (3 classes).
struct Mlp {
    w1: Tensor,
    w2: Tensor,
    scale: f64,
    /// Cut the input out of the graph (a non-differentiable preprocessing step).
    detach_input: bool,
}

impl Mlp {
    fn new(seed: u64, scale: f64, detach_input: bool) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal =
            |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| (rng.random::<f32>() - 0.5) * 2.0 * s * 1.7).collect() };
        let w1 = Tensor::from_vec(normal(16 * 32, 1.0), (32, 16), &Device::Cpu).unwrap();
        let w2 = Tensor::from_vec(normal(32 * 3, 1.0), (3, 32), &Device::Cpu).unwrap();
        Self { w1, w2, scale, detach_input }
    }
}

impl Model for Mlp {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.detach_input { x.detach() } else { x.clone() };
        let h = (x.flatten_from(1)? - 0.5)?.matmul(&self.w1.t()?)?.tanh()?;
        h.matmul(&self.w2.t()?)? * self.scale
    }
}

/// Inputs, and labels that the healthy model predicts (so clean accuracy is 100%).
fn data(model: &Mlp, n: usize) -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let px: Vec<f32> = (0..n * 16).map(|_| rng.random::<f32>()).collect();
    let x = Tensor::from_vec(px, (n, 1, 4, 4), &Device::Cpu).unwrap();
    let y = predict(model, &x).unwrap();
    (x, Tensor::new(y.as_slice(), &Device::Cpu).unwrap())
}

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
            AttackOutcome { spec, name: a.name(), predicted, correct, seconds: 0.0 }
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
    r.flags.iter().map(|f| f.check.as_str()).collect()
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
    let scaled = Mlp { scale: 4000.0, ..Mlp::new(1, 4.0, false) };
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
    let model = Mlp { scale: 4000.0, ..Mlp::new(1, 4.0, false) };
    let (x, y) = data(&Mlp::new(1, 4.0, false), 50);
    let o = outcomes(&model, &x, &y, &settings());
    assert!(robal_eval::audit::check_ce_vs_margin(&o, 2.0).is_some());
    assert!(robal_eval::audit::check_ce_vs_margin(&o[..1], 2.0).is_none());
    let _ = DType::F32;
}
