//! The attack registry walked row by row: a new row of `ATTACKS` is tested here without
//! a new test. Every attack runs on a tiny 10-class model (ten classes so the targeted
//! attacks have their nine targets) and must stay in the eps ball and the [0, 1] box,
//! never raise accuracy above clean, and, where it is a gradient or query attack at a
//! radius that breaks most points, break some.

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use robal_attacks::{model::predict, Model};
use robal_eval::{AttackSettings, AttackSpec, ATTACKS};

/// z = 3 W2 tanh(W1 (x - 0.5)): 1x4x4 inputs, 10 classes, fixed random weights.
struct Tiny {
    w1: Tensor,
    w2: Tensor,
}

impl Tiny {
    fn new() -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.random::<f32>() - 0.5) * 3.4).collect() };
        let w1 = Tensor::from_vec(uniform(32 * 16), (32, 16), &Device::Cpu).unwrap();
        let w2 = Tensor::from_vec(uniform(10 * 32), (10, 32), &Device::Cpu).unwrap();
        Self { w1, w2 }
    }
}

impl Model for Tiny {
    fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = (x.flatten_from(1)? - 0.5)?.matmul(&self.w1.t()?)?.tanh()?;
        h.matmul(&self.w2.t()?)? * 3.0
    }
}

fn correct(model: &dyn Model, x: &Tensor, y: &[u32]) -> usize {
    predict(model, x).unwrap().iter().zip(y).filter(|(p, l)| p == l).count()
}

#[test]
fn every_row_parses_back_and_names_its_own_spec() {
    for (i, e) in ATTACKS.iter().enumerate() {
        assert_eq!(e.spec.token(), e.token, "row {i}");
        assert_eq!(e.spec.is_margin_based(), e.margin_based, "row {i}");
        let parsed = AttackSpec::parse_list(e.token).unwrap();
        assert_eq!(parsed.last(), Some(&e.spec), "row {i}: {}", e.token);
        for (j, other) in ATTACKS.iter().enumerate().skip(i + 1) {
            assert!(other.spec != e.spec && other.token != e.token, "rows {i} and {j} repeat each other");
        }
        // The report names the spec by its serde name; a row must round-trip through it.
        let json = serde_json::to_string(&e.spec).unwrap();
        assert_eq!(serde_json::from_str::<AttackSpec>(&json).unwrap(), e.spec, "row {i}");
    }
    let unknown = AttackSpec::parse_list("pgd,nope").unwrap_err().to_string();
    for e in &ATTACKS {
        assert!(unknown.contains(e.token), "the error must list {}: {unknown}", e.token);
    }
}

#[test]
fn every_attack_runs_on_a_tiny_model_inside_its_ball() {
    let model = Tiny::new();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let n = 6;
    let x = Tensor::from_vec((0..n * 16).map(|_| rng.random::<f32>()).collect::<Vec<_>>(), (n, 1, 4, 4), &Device::Cpu)
        .unwrap();
    let y = predict(&model, &x).unwrap(); // clean accuracy 100%
    let labels = Tensor::new(y.as_slice(), &Device::Cpu).unwrap();
    let settings = AttackSettings { eps: 0.3, steps: 10, step_size: 0.05, ..AttackSettings::default() };
    for e in &ATTACKS {
        let Some(attack) = settings.build(e.spec) else {
            assert_eq!(e.spec, AttackSpec::Clean, "{}: only clean builds no attack", e.token);
            continue;
        };
        assert_eq!(settings.autoattack(e.spec).is_some(), e.autoattack.is_some(), "{}", e.token);
        let adv = attack.run(&model, &x, &labels, 3).unwrap().adv;
        assert_eq!(adv.dims(), x.dims(), "{}", e.token);
        let dist =
            (&adv - &x).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(dist as f64 <= settings.eps + 1e-6, "{}: left the eps ball ({dist})", e.token);
        let lo = adv.flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap();
        let hi = adv.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi), "{}: left [0, 1]: {lo}..{hi}", e.token);
        let kept = correct(&model, &adv, &y);
        assert!(kept < n, "{}: broke none of {n} points at eps 0.3", e.token);
    }
}
