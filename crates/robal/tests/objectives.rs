//! The methods after RoBal against METHODS.md's float64 test vectors and closed forms:
//! balanced softmax, HARL, AWP's direction and exact restore, RobustLT's budgets, and
//! the per-example radii of the inner attack.

use candle_core::{Device, Tensor, Var};
use robal::config::{AttackBatchNorm, AttackStart};
use robal::losses::{harl, LossConfig, TrainLoss};
use robal::objective::awp::{self, direction, is_perturbed, WeightPerturbation};
use robal::objective::{ClassBudget, InnerAttack, InnerLoss, StepContext};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig, TensorKind};

/// METHODS.md's test logits z = [[1, 2, .5], [0, -1, 3]], y = [0, 2], n = [100, 10, 2].
fn z() -> Tensor {
    Tensor::new(&[[1f32, 2.0, 0.5], [0.0, -1.0, 3.0]], &Device::Cpu).unwrap()
}
fn y() -> Tensor {
    Tensor::new(&[0u32, 2], &Device::Cpu).unwrap()
}
const N: [usize; 3] = [100, 10, 2];

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f32>().unwrap() as f64
}

#[test]
fn balanced_softmax_matches_the_test_vector() {
    // BSL(z, y) = CE(z + log n, y): 0.249948, 1.275623; mean 0.762786.
    let l = TrainLoss::new(LossConfig::LogitAdjusted { tau: 1.0 }, &N, &Device::Cpu).unwrap();
    let per = l.per_example(&z(), &y()).unwrap().to_vec1::<f32>().unwrap();
    close(per[0] as f64, 0.249948, 1e-5);
    close(per[1] as f64, 1.275623, 1e-5);
    close(scalar(&l.forward(&z(), &y(), None).unwrap()), 0.762786, 1e-5);
}

#[test]
fn harl_matches_the_test_vector() {
    // L = [1.464369, 0, 0.065884] (class 1 absent: 0, still averaged);
    // 0.1 Lbar + 0.1 var + 0.1 sum shares^2 = 0.051008 + 0.045605 + 0.091760 = 0.188374.
    let ce = TrainLoss::new(LossConfig::Ce, &N, &Device::Cpu).unwrap().per_example(&z(), &y()).unwrap();
    close(scalar(&harl(&ce, &y(), 3, [0.1, 0.1, 0.1]).unwrap()), 0.188374, 1e-5);
    close(scalar(&harl(&ce, &y(), 3, [0.1, 0.0, 0.0]).unwrap()), 0.051008, 1e-5);
    close(scalar(&harl(&ce, &y(), 3, [0.0, 0.1, 0.0]).unwrap()), 0.045605, 1e-5);
    close(scalar(&harl(&ce, &y(), 3, [0.0, 0.0, 0.1]).unwrap()), 0.091760, 1e-5);
}

#[test]
fn awp_direction_matches_the_test_vector() {
    // w = [[3, 0], [0, 4]], grad [[1, 2], [2, 0]]: v = [[5/3, 10/3], [10/3, 0]], ||v|| = 5;
    // gamma 0.01: w + gamma v = [[3.016667, .033333], [.033333, 4]].
    let w = Tensor::new(&[[3f32, 0.0], [0.0, 4.0]], &Device::Cpu).unwrap();
    let g = Tensor::new(&[[1f32, 2.0], [2.0, 0.0]], &Device::Cpu).unwrap();
    let v = direction(&w, &g).unwrap();
    let want = [[5.0 / 3.0, 10.0 / 3.0], [10.0 / 3.0, 0.0]];
    for (row, wrow) in v.to_vec2::<f32>().unwrap().iter().zip(want) {
        for (a, b) in row.iter().zip(wrow) {
            close(*a as f64, b, 1e-6);
        }
    }
    close(scalar(&v.sqr().unwrap().sum_all().unwrap().sqrt().unwrap()), 5.0, 1e-6);
    let moved = (&w + (v * 0.01).unwrap()).unwrap().to_vec2::<f32>().unwrap();
    for (a, b) in moved.iter().flatten().zip([3.016667, 0.033333, 0.033333, 4.0]) {
        close(*a as f64, b, 1e-6);
    }
}

fn small_model() -> Classifier {
    let cfg = ModelConfig {
        arch: Arch::SmallCnn,
        in_channels: 1,
        num_classes: 10,
        head: HeadConfig::FC,
        normalization: None,
    };
    let mut m = Classifier::new(cfg, &Device::Cpu, 3).unwrap();
    m.set_class_counts(vec![50, 40, 30, 20, 10, 8, 6, 4, 2, 1]).unwrap();
    m
}

fn batch() -> (Tensor, Tensor) {
    let x = Tensor::rand(0f32, 1.0, (6, 1, 28, 28), &Device::Cpu).unwrap();
    (x, Tensor::new(&[0u32, 1, 2, 7, 8, 9], &Device::Cpu).unwrap())
}

/// A plain step context on `model`: no class weights, budgets or given start.
fn context<'a>(model: &'a Classifier, loss: &'a TrainLoss, seed: u64) -> StepContext<'a> {
    StepContext { model, loss, weights: None, seed, budget: None, start: None, epoch_start: false }
}

/// The MNIST-LT PGD-AT preset with `overrides`.
fn pgd_at_preset(overrides: &[String]) -> robal::TrainConfig {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-lt-pgd-at.toml");
    robal::TrainConfig::load(&path, overrides).unwrap_or_else(|e| panic!("{overrides:?}: {e}"))
}

fn bits(m: &Classifier) -> Vec<(String, Vec<u32>)> {
    m.store()
        .state()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

#[test]
fn awp_perturbs_weights_by_gamma_of_their_norm_and_restores_them_bit_for_bit() {
    let m = small_model();
    let (x, y) = batch();
    let before = bits(&m);
    let params = m.store().trainable("");
    let snapshot = awp::snapshot_buffers(&m).unwrap();
    let loss = m.forward(&x, Mode::Train).unwrap();
    let loss = robal::losses::cross_entropy_per_example(&loss, &y).unwrap().mean_all().unwrap();
    awp::restore_buffers(snapshot).unwrap();
    let old: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
    let p = WeightPerturbation::apply(&params, &loss, 0.01, None).unwrap();
    let mut perturbed = 0;
    for ((name, var), w0) in params.iter().zip(&old) {
        let d = (var.as_tensor() - w0).unwrap();
        let dn = scalar(&d.sqr().unwrap().sum_all().unwrap().sqrt().unwrap());
        if is_perturbed(name, w0) {
            let wn = scalar(&w0.sqr().unwrap().sum_all().unwrap().sqrt().unwrap());
            close(dn, 0.01 * wn, 1e-4);
            perturbed += 1;
        } else {
            assert_eq!(dn, 0.0, "{name} must not move (BatchNorm parameters and biases stay)");
        }
    }
    assert!(perturbed >= 4, "conv and FC weights are perturbed ({perturbed})");
    p.restore().unwrap();
    assert_eq!(bits(&m), before, "weights and BatchNorm statistics after perturb + restore");
}

#[test]
fn awp_optimizer_proxy_follows_the_optimisers_step_and_leaves_its_state_alone() {
    // RobustLT's quirk: D = the change Sgd would make stepping on -g (momentum 0.9,
    // wd 5e-4, Nesterov, lr 0.1), after one real step filled the momentum buffers. Per
    // tensor: w_perturbed - w = gamma ||w|| / ||D|| D, with D written out here as
    // -lr (g' + mu (mu b + g')), g' = -g + wd w.
    let m = small_model();
    let (x, y) = batch();
    let params = m.store().trainable("");
    let (mu, wd, lr, gamma) = (0.9, 5e-4, 0.1, 0.01);
    let mut sgd = robal::optim::Sgd::new(params.clone(), mu, wd).with_nesterov(true);
    let ce = |m: &Classifier| {
        let z = m.forward(&x, Mode::Train).unwrap();
        robal::losses::cross_entropy_per_example(&z, &y).unwrap().mean_all().unwrap()
    };
    sgd.step(&ce(&m), lr).unwrap();
    let state_before: Vec<(String, Vec<f32>)> =
        sgd.state().iter().map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())).collect();
    let loss = ce(&m);
    let grads = loss.backward().unwrap();
    let old: Vec<Tensor> = params.iter().map(|(_, v)| v.as_tensor().copy().unwrap()).collect();
    let p = WeightPerturbation::apply(&params, &loss, gamma, Some((&sgd, lr))).unwrap();
    let mut checked = 0;
    for ((name, var), w0) in params.iter().zip(&old) {
        if !is_perturbed(name, w0) {
            continue;
        }
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name} has a gradient"));
        let b = &sgd.state()[name];
        let g1 = ((g.neg().unwrap()) + (w0 * wd).unwrap()).unwrap();
        let v1 = ((b * mu).unwrap() + &g1).unwrap();
        let d = ((&g1 + (&v1 * mu).unwrap()).unwrap() * -lr).unwrap();
        let norm = |t: &Tensor| scalar(&t.sqr().unwrap().sum_all().unwrap().sqrt().unwrap());
        let want = (&d * (gamma * norm(w0) / norm(&d))).unwrap();
        let got = (var.as_tensor() - w0).unwrap();
        let err = norm(&(&got - &want).unwrap());
        assert!(err <= 1e-5 * norm(&want), "{name}: {err} off a perturbation of {}", norm(&want));
        // Not the plain gradient direction: momentum and weight decay bend it.
        let plain = direction(w0, g).unwrap();
        let cos = scalar(&(&plain * &d).unwrap().sum_all().unwrap()) / (norm(&plain) * norm(&d));
        assert!(cos < 0.999, "{name}: the optimiser's step is not the gradient's direction (cos {cos})");
        checked += 1;
    }
    assert!(checked >= 4, "conv and FC weights are perturbed ({checked})");
    let state_after: Vec<(String, Vec<f32>)> =
        sgd.state().iter().map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())).collect();
    assert_eq!(state_before, state_after, "the proxy step leaves the momentum buffers bit-identical");
    p.restore().unwrap();
    for ((name, var), w0) in params.iter().zip(&old) {
        assert_eq!(
            var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name} restored bit for bit"
        );
    }
}

#[test]
fn class_budgets_match_the_robustlt_test_vector() {
    // CIFAR-10 rho 50, alpha .3: tau 0.459941; 255 eps_c = 5.600 8.026 ... 12.878.
    let counts = [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100];
    let b = ClassBudget { alpha: 0.3, beta: 0.8, shared_start: false };
    close(b.tau(&counts), 0.459941, 1e-5);
    let want = [5.600, 8.026, 9.031, 9.802, 10.453, 11.027, 11.543, 12.021, 12.464, 12.878];
    let f = b.factors(&counts);
    for (fc, w) in f.iter().zip(want) {
        assert!((fc * 8.0 - w).abs() < 5e-4, "{} vs {w}", fc * 8.0);
    }
    // The prior-weighted mean radius is eps.
    let total: usize = counts.iter().sum();
    close(counts.iter().zip(&f).map(|(&n, fc)| n as f64 / total as f64 * fc).sum(), 1.0, 1e-12);
    // Warm-up beta .8, E 100: s = 0, .0125, .5, 1 at e = 1, 2, 41, 81 (1-based).
    for (e, s) in [(1, 0.0), (2, 0.0125), (41, 0.5), (81, 1.0), (100, 1.0)] {
        close(b.warmup(e - 1, 100), s, 1e-12);
    }
    assert_eq!(ClassBudget { beta: 0.0, ..b }.warmup(0, 100), 1.0);
    assert_eq!(b.factors(&[7, 7, 7]), vec![1.0; 3], "balanced counts keep eps");
    assert!(b.validate().is_ok() && ClassBudget { alpha: 1.5, ..b }.validate().is_err());
}

#[test]
fn inner_attack_uses_each_examples_radius_and_step() {
    // One signed step of size eps_i from the clean point (start off): every pixel with a
    // nonzero gradient moves by exactly eps_i, up to the [0, 1] box.
    let m = small_model();
    let (x, y) = batch();
    let x = ((x * 0.5).unwrap() + 0.25).unwrap(); // in [0.25, 0.75]: no clipping at eps <= 0.25
    let loss = TrainLoss::new(LossConfig::Ce, &[1; 10], &Device::Cpu).unwrap();
    let factors = [0.5, 1.0, 1.5, 1.0, 1.0, 1.0, 1.0, 2.0, 0.0, 1.0];
    let ctx = StepContext {
        model: &m,
        loss: &loss,
        weights: None,
        seed: 1,
        budget: Some(&factors),
        start: None,
        epoch_start: false,
    };
    let attack = InnerAttack {
        eps: 0.1,
        step_size: 0.1,
        steps: 1,
        start: AttackStart::Off,
        loss: InnerLoss::CrossEntropy,
        shared_start: false,
        batch_norm: AttackBatchNorm::Eval,
    };
    let adv = attack.run(&ctx, &x, &y).unwrap();
    let delta = (adv - &x).unwrap().abs().unwrap().flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
    for (row, &label) in delta.iter().zip(&[0usize, 1, 2, 7, 8, 9]) {
        let eps_i = 0.1 * factors[label];
        let max = row.iter().cloned().fold(0f32, f32::max) as f64;
        close(max, eps_i, 1e-5);
        let moved = row.iter().filter(|&&d| (d as f64 - eps_i).abs() < 1e-5).count();
        assert!(moved as f64 > 0.9 * row.len() as f64, "class {label}: {moved} of {} pixels at eps_i", row.len());
    }
    // Many steps with a uniform start never leave eps_i's ball.
    let attack = InnerAttack { steps: 5, step_size: 0.05, start: AttackStart::Uniform, ..attack };
    let adv = attack.run(&ctx, &x, &y).unwrap();
    let delta = (adv - &x).unwrap().abs().unwrap().flatten_from(1).unwrap().max(1).unwrap().to_vec1::<f32>().unwrap();
    for (d, &label) in delta.iter().zip(&[0usize, 1, 2, 7, 8, 9]) {
        assert!(*d as f64 <= 0.1 * factors[label] + 1e-6, "class {label}: {d}");
    }
}

#[test]
fn buffer_snapshot_undoes_a_train_mode_pass() {
    let m = small_model();
    let (x, _) = batch();
    let before = bits(&m);
    let s = awp::snapshot_buffers(&m).unwrap();
    assert!(!s.is_empty() && s.len() == m.store().vars(TensorKind::Buffer).len());
    m.forward(&x, Mode::Train).unwrap();
    assert_ne!(bits(&m), before, "a train-mode pass moves the running statistics");
    awp::restore_buffers(s).unwrap();
    assert_eq!(bits(&m), before);
}

#[test]
fn rbl_matches_the_test_vector() {
    // a = [90, 15, 7]: E = [59.526803, 7.941089, 1.984375], w = [0.077935, 0.584203,
    // 2.337862]; RBL 0.110999794.
    let w = robal::losses::rbl_weights(&N, &[90, 15, 7], true);
    for (a, b) in w.iter().zip([0.077935, 0.584203, 2.337862]) {
        close(*a, b, 1e-5);
    }
    close(scalar(&robal::losses::rbl(&z(), &y(), &w).unwrap()), 0.110999794, 1e-6);
    // The quirk: a zero count gives a weight ~1e5 before rescaling (it takes nearly all).
    let quirk = robal::losses::rbl_weights(&N, &[90, 0, 7], false);
    assert!(quirk[1] > 2.99, "{quirk:?}");
    let clamped = robal::losses::rbl_weights(&N, &[90, 0, 7], true);
    assert!(clamped[1] < 2.0, "{clamped:?}");
}

#[test]
fn tail_matches_the_test_vector_in_both_reductions() {
    // CIFAR-10 rho 50 counts, y = [9, 9, 0], h = [[1,0,0],[0,1,0],[0,0,2]]:
    // code -1.508685, pairwise 0.910253.
    let counts = [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100];
    let h = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 2.0]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[9u32, 9, 0], &Device::Cpu).unwrap();
    use robal::losses::{tail, TailReduction};
    close(scalar(&tail(&h, &y, &counts, TailReduction::Official).unwrap()), -1.508685, 1e-5);
    close(scalar(&tail(&h, &y, &counts, TailReduction::Pairwise).unwrap()), 0.910253, 1e-5);
    // No tail label in the batch: 0.
    let head = Tensor::new(&[0u32, 1, 2], &Device::Cpu).unwrap();
    assert_eq!(scalar(&tail(&h, &head, &counts, TailReduction::Pairwise).unwrap()), 0.0);
}

/// Central differences of a scalar function of a (rows x cols) matrix against its
/// autograd gradient, in float64 arithmetic on the finite-difference side.
fn check_gradient(name: &str, base: Vec<Vec<f32>>, f: &dyn Fn(&Tensor) -> Tensor) {
    let v = Var::from_tensor(&Tensor::new(base.clone(), &Device::Cpu).unwrap()).unwrap();
    let g: Vec<Vec<f32>> = f(v.as_tensor()).backward().unwrap().get(v.as_tensor()).unwrap().to_vec2().unwrap();
    for r in 0..base.len() {
        for c in 0..base[0].len() {
            let at = |d: f32| {
                let mut m = base.clone();
                m[r][c] += d;
                scalar(&f(&Tensor::new(m, &Device::Cpu).unwrap()))
            };
            let fd = (at(1e-3) - at(-1e-3)) / 2e-3;
            assert!(
                (fd - g[r][c] as f64).abs() < 5e-3 * (1.0 + fd.abs()),
                "{name} d/d[{r}][{c}]: fd {fd} vs {}",
                g[r][c]
            );
        }
    }
}

#[test]
fn harl_rbl_and_tail_gradients_match_finite_differences() {
    let rows = vec![vec![1f32, 2.0, 0.5], vec![0.0, -1.0, 3.0], vec![0.3, 0.2, -0.4], vec![-0.5, 0.9, 0.1]];
    let y4 = Tensor::new(&[0u32, 2, 2, 1], &Device::Cpu).unwrap();
    let ce = TrainLoss::new(LossConfig::Ce, &N, &Device::Cpu).unwrap();
    check_gradient("HARL", rows.clone(), &|z| harl(&ce.per_example(z, &y4).unwrap(), &y4, 3, [0.1, 0.1, 0.1]).unwrap());
    let w = robal::losses::rbl_weights(&N, &[90, 15, 7], true);
    check_gradient("RBL", rows.clone(), &|z| robal::losses::rbl(z, &y4, &w).unwrap());
    // TAIL w.r.t. the features (p_i is a constant, so the gradient flows through q_j only).
    // Six classes: the tail set is {2 floor(6/3) + 1, ..., 5} = {5}; features of width 3.
    let counts = [60, 40, 30, 20, 10, 5];
    let y_tail = Tensor::new(&[5u32, 5, 0, 1], &Device::Cpu).unwrap();
    for reduction in [robal::losses::TailReduction::Pairwise, robal::losses::TailReduction::Official] {
        // p_i is a constant of the loss (detached), so plain finite differences (which
        // move p too) do not apply: compare with the closed form through q_j instead.
        let f = |h: &Tensor| robal::losses::tail(h, &y_tail, &counts, reduction).unwrap();
        let v = Var::from_tensor(&Tensor::new(rows.clone(), &Device::Cpu).unwrap()).unwrap();
        let g = f(v.as_tensor()).backward().unwrap().get(v.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        let p: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let m = r.iter().cloned().fold(f32::MIN, f32::max) as f64;
                let e: Vec<f64> = r.iter().map(|&v| (v as f64 - m).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            })
            .collect();
        let labels = [5usize, 5, 0, 1];
        let total: usize = counts.iter().sum();
        let wc: Vec<f64> = counts.iter().map(|&n| (total as f64 / n as f64).sqrt()).collect();
        let (b, d) = (4usize, 3usize);
        let tail_rows: Vec<usize> = (0..b).filter(|&i| labels[i] >= 5).collect();
        // KL(p_i || q_j) = sum_k p_ik log p_ik - sum_k p_ik log q_jk; d/dh_jk of -sum p_ik log q_jk
        // = q_jk - p_ik (sum_k p_ik = 1).
        let mut want = vec![vec![0f64; d]; b];
        for &i in &tail_rows {
            let pair_sum: f64 =
                (0..b).map(|j| if labels[i] == labels[j] { -1.0 } else { 1.0 } * (wc[labels[i]] + wc[labels[j]])).sum();
            for j in 0..b {
                let pair = if labels[i] == labels[j] { -1.0 } else { 1.0 } * (wc[labels[i]] + wc[labels[j]]);
                let coef = match reduction {
                    robal::losses::TailReduction::Pairwise => pair / (tail_rows.len() * b) as f64,
                    robal::losses::TailReduction::Official => {
                        pair_sum / b as f64 / (b * d) as f64 / tail_rows.len() as f64
                    }
                };
                for k in 0..d {
                    want[j][k] += coef * (p[j][k] - p[i][k]);
                }
            }
        }
        for j in 0..b {
            for k in 0..d {
                assert!(
                    (g[j][k] as f64 - want[j][k]).abs() < 1e-5,
                    "TAIL {reduction:?} d/dh[{j}][{k}]: {} vs {}",
                    g[j][k],
                    want[j][k]
                );
            }
        }
    }
}

/// `attack.batch_norm`: `eval` and `batch` leave the running statistics bit-identical
/// (`batch` puts them back), `train` (AT-AWP's quirk) moves them once per attack step;
/// `batch` attacks with each batch's own statistics, so its examples differ from `eval`'s.
#[test]
fn attack_batch_norm_modes_use_and_keep_the_statistics_they_say() {
    let m = small_model();
    let x = Tensor::rand(0f32, 1.0, (8, 1, 28, 28), &Device::Cpu).unwrap();
    let y = Tensor::from_vec((0..8u32).collect::<Vec<_>>(), 8, &Device::Cpu).unwrap();
    m.forward(&x, Mode::Train).unwrap(); // running statistics away from their init
    let loss = TrainLoss::new(LossConfig::Ce, &[1; 10], &Device::Cpu).unwrap();
    let ctx = context(&m, &loss, 3);
    let running = || -> Vec<Vec<f32>> {
        m.store().state().iter().filter(|(n, _)| n.contains("running")).map(|(_, t)| t.to_vec1().unwrap()).collect()
    };
    let attack = |bn| InnerAttack {
        eps: 0.1,
        step_size: 0.03,
        steps: 3,
        start: AttackStart::Off,
        loss: InnerLoss::CrossEntropy,
        shared_start: false,
        batch_norm: bn,
    };
    let before = running();
    let eval = attack(AttackBatchNorm::Eval).run(&ctx, &x, &y).unwrap();
    assert_eq!(running(), before, "eval");
    let batch = attack(AttackBatchNorm::Batch).run(&ctx, &x, &y).unwrap();
    assert_eq!(running(), before, "batch puts the running statistics back");
    let moved: f32 = (&eval - &batch).unwrap().abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
    assert!(moved > 0.0, "batch statistics give other examples");
    attack(AttackBatchNorm::Train).run(&ctx, &x, &y).unwrap();
    assert_ne!(running(), before, "train mode moves the running statistics");
}

/// MCAT's ETF regulariser (METHODS.md section 9). PyTorch lines of MCAT's
/// `_geom_regularizer` that give the vector, in float64:
///
/// ```python
/// W = torch.tensor([[1., 0], [0, 2], [1, 1]], dtype=torch.float64)
/// Wn = F.normalize(W, dim=1); G = Wn @ Wn.t(); C = 3
/// T = torch.full_like(G, -1 / (C - 1)); T.fill_diagonal_(1.0)
/// F.mse_loss(G, T)            # 0.703159
/// ```
#[test]
fn etf_regularizer_matches_the_test_vectors() {
    use robal::losses::etf_regularizer;
    let w = Tensor::new(&[[1f64, 0.0], [0.0, 2.0], [1.0, 1.0]], &Device::Cpu).unwrap();
    let r = etf_regularizer(&w).unwrap().to_scalar::<f64>().unwrap();
    close(r, 0.703159, 1e-6);
    // By hand: rows (1,0), (0,1), (1,1)/sqrt2; off-diagonal errors (0 + 1/2)^2 twice and
    // (1/sqrt2 + 1/2)^2 four times, over 9 entries.
    close(r, (0.5 + 4.0 * (0.5f64.sqrt() + 0.5).powi(2)) / 9.0, 1e-12);
    // Unit vectors 120 degrees apart are a simplex ETF: 0 (scale does not matter).
    let a = 2.0 * std::f64::consts::PI / 3.0;
    // The first row is scaled by 2: R normalises rows, so only directions count.
    let etf =
        Tensor::new(&[[2f64, 0.0], [a.cos(), a.sin()], [(2.0 * a).cos(), (2.0 * a).sin()]], &Device::Cpu).unwrap();
    close(etf_regularizer(&etf).unwrap().to_scalar::<f64>().unwrap(), 0.0, 1e-12);
    // With z, y of the other vectors: CE_mean + R = 1.468285, CE_mean + 1e-3 R = 0.765830.
    let ce = TrainLoss::new(LossConfig::Ce, &N, &Device::Cpu).unwrap().forward(&z(), &y(), None).unwrap();
    let ce = scalar(&ce);
    close(ce + r, 1.468285, 1e-5);
    close(ce + 1e-3 * r, 0.765830, 1e-5);
    // A head of one class has no ETF: an error, not NaN.
    assert!(etf_regularizer(&Tensor::new(&[[1f64, 2.0]], &Device::Cpu).unwrap()).is_err());
}

#[test]
fn etf_regularizer_gradient_matches_finite_differences() {
    let w = vec![vec![1f32, 0.2, -0.3], vec![0.1, 2.0, 0.4], vec![1.0, 1.0, 0.0], vec![-0.5, 0.3, 0.8]];
    check_gradient("R_ETF", w, &|w| robal::losses::etf_regularizer(w).unwrap());
}

/// `[etf]` wraps any method: its outer loss is the method's plus beta_g R_ETF(head weight),
/// and everything else (the crafted inputs, the logits) is the method's.
#[test]
fn etf_objective_adds_the_weighted_term_to_the_methods_loss() {
    let mut cfg = pgd_at_preset(&[]);
    let model = small_model();
    let loss = TrainLoss::new(LossConfig::Ce, model.class_counts().unwrap(), &Device::Cpu).unwrap();
    let ctx = context(&model, &loss, 5);
    let (x, y) = batch();
    let plain = cfg.objective();
    cfg.etf = Some(robal::objective::EtfConfig { weight: 0.5 });
    let with = cfg.objective();
    // Both attacks before any train-mode pass (which moves BatchNorm's running statistics
    // that the eval-mode attack uses); the outer losses use batch statistics.
    let x_adv = plain.craft(&ctx, &x, &y).unwrap();
    let x_adv2 = with.craft(&ctx, &x, &y).unwrap();
    let base = scalar(&plain.outer(&ctx, &x, &y, x_adv.as_ref()).unwrap().loss);
    let diff = (x_adv.as_ref().unwrap() - x_adv2.as_ref().unwrap()).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "the ETF term must not change the attack");
    let r = scalar(&robal::losses::etf_regularizer(model.head_weight()).unwrap());
    assert!(r > 0.01, "a random head is far from an ETF: {r}");
    close(scalar(&with.outer(&ctx, &x, &y, x_adv2.as_ref()).unwrap().loss), base + 0.5 * r, 1e-5);
}

/// Every method of `Method::ALL`, built from a config by its name as `train.mode` (the
/// MNIST-LT PGD-AT preset with the mode overridden), runs one step on a small model:
/// crafted inputs exactly for the adversarial methods and inside the eps ball, a finite
/// loss, and a gradient reaching the head. A new method is tested here with no new test.
#[test]
fn every_method_builds_from_its_name_and_runs_a_step() {
    for method in robal::objective::Method::ALL {
        let cfg = pgd_at_preset(&[format!("train.mode={method}")]);
        assert_eq!(cfg.train.mode, method);
        let model = small_model();
        let loss = TrainLoss::new(LossConfig::Ce, model.class_counts().unwrap(), &Device::Cpu).unwrap();
        let ctx = context(&model, &loss, 5);
        let (x, y) = batch();
        let objective = cfg.objective();
        let x_adv = objective.craft(&ctx, &x, &y).unwrap();
        assert_eq!(x_adv.is_some(), method != robal::objective::Method::Plain, "{method}");
        if let Some(a) = &x_adv {
            let d = (a - &x).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d as f64 <= cfg.attack.eps + 1e-6, "{method}: left the eps ball ({d})");
        }
        let out = objective.outer(&ctx, &x, &y, x_adv.as_ref()).unwrap();
        assert!(scalar(&out.loss).is_finite(), "{method}");
        let grads = out.loss.backward().unwrap();
        let head = model.head_weight();
        let g = grads.get(head).unwrap_or_else(|| panic!("{method}: no gradient reaches the head"));
        assert!(g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.0, "{method}");
    }
}
