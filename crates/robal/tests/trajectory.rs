//! The paper presets train as the reference code does: ten SGD steps of RoBal-N,
//! RoBal-R, TRADES and PGD-AT (their `configs/cifar10-lt-*` presets on WRN-10-1) from
//! the reference WRN's own initial weights, on real CIFAR-10 records, against a float64
//! PyTorch transcription of the reference training loop (pass order, losses, eval-mode
//! PGD with clamping, train-mode BatchNorm updates, SGD with momentum and weight decay).
//!
//! Fixture: `tests/fixtures/trajectory_wrn10_1.safetensors`, made by
//! `tests/fixtures/make_trajectory_fixtures.py` (its docstring gives the exact setting):
//! every step's loss, every BatchNorm running statistic after every step, 8 random
//! projections and the norm of every parameter's change after every step, every
//! parameter's change after the tenth step in full, and how far PyTorch's own float32
//! run of the same steps drifts from float64. The attack starts come from a
//! counter-based hash that both sides compute ([`unit`]), the one thing the two random
//! streams cannot share.
//!
//! Two runs per preset: the model in float64 (candle's tensor ops) must follow the
//! reference to float64 rounding at every step; the model in float32 (the CPU kernels
//! every run uses) agrees at step 1 and then drifts as float32 PyTorch does.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use robal::config::{AttackStart, InputNormalization};
use robal::objective::StepContext;
use robal::{Sgd, TrainConfig, TrainLoss};
use robal_data::cifar::read_batch_file;
use robal_data::{Cifar, Dataset, Profile};
use robal_models::checkpoint::{import_pytorch, map_reference_name};
use robal_models::{Classifier, ModelConfig};

#[path = "../../../tests/fixtures/lowbias32.rs"]
mod lowbias32;
use lowbias32::{lowbias32, to_unit};

const STEPS: usize = 10;
const BATCH: usize = 32;
const PROJECTIONS: usize = 8;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/data/cifar-10-partial/data_batch_1_first1017.bin`, or None with a loud line.
fn shared_cifar(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ROBAL_CIFAR10_PARTIAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest().join("../../../shared/data/cifar-10-partial"));
    let file = dir.join("data_batch_1_first1017.bin");
    if file.is_file() {
        Some(file)
    } else {
        eprintln!(
            "SKIPPED {test}: real CIFAR-10 records not found at {} (set ROBAL_CIFAR10_PARTIAL to the cifar-10-partial folder)",
            dir.display()
        );
        None
    }
}

/// Value i of stream `stream` in [0, 1): (lowbias32((stream << 20) | i) >> 8) / 2^24.
fn unit(stream: u32, i: usize) -> f64 {
    to_unit(lowbias32((stream << 20) | i as u32))
}

/// The step's attack start (f64), as the script draws it: x + eps U\[0, 1) (the reference's
/// one-sided start) or x + 0.001 N(0, 1) (TRADES), N by Box-Muller.
fn start(x: &Tensor, step: usize, normal: bool, eps: f64) -> Tensor {
    let xs: Vec<f64> = x.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let step = step as u32;
    let out: Vec<f64> = xs
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let d = if normal {
                let u1 = (unit(101 + step, i) * (1u32 << 24) as f64 + 0.5) / (1u32 << 24) as f64;
                let u2 = unit(201 + step, i);
                0.001 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            } else {
                eps * unit(1 + step, i)
            };
            v + d
        })
        .collect();
    Tensor::from_vec(out, x.shape(), x.device()).unwrap()
}

/// Rademacher vector j of length n: sign of unit(1001 + j, e) - 1/2.
fn rademacher(j: usize, n: usize) -> Vec<f64> {
    (0..n).map(|e| if unit(1001 + j as u32, e) < 0.5 { -1.0 } else { 1.0 }).collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// max |a - b| / max |b|.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    d / b.iter().map(|v| v.abs()).fold(1e-12, f64::max)
}

/// Per-step relative errors of a trajectory against the float64 reference, each the
/// worst over tensors, with where it occurred: the loss; every BatchNorm running
/// statistic (max |error| / max |value|); every parameter's change since the start
/// (8 projections and the norm, error / norm of the change); and, after the last step,
/// every parameter's change element by element (max |error| / max |change|).
#[derive(Debug, Default)]
struct Errors {
    loss: Vec<f64>,
    bn: Vec<(f64, String)>,
    change: Vec<(f64, String)>,
    last: (f64, String),
}

fn worst(rows: impl Iterator<Item = (f64, String)>) -> (f64, String) {
    rows.fold((0.0, String::new()), |a, b| if b.0 >= a.0 { b } else { a })
}

fn run(
    preset: &str,
    key: &str,
    head_fixture: &str,
    cifar: &std::path::Path,
    dtype: DType,
    (steps, overrides): (usize, &[&str]),
) -> (Errors, HashMap<String, Tensor>) {
    let dev = Device::Cpu;
    let mut settings = vec!["model.arch=\"wrn-10-1\"".to_string()];
    settings.extend(overrides.iter().map(|o| o.to_string()));
    let cfg = TrainConfig::load(&manifest().join("../../configs").join(preset), &settings).unwrap();
    assert_eq!(cfg.model.normalization, InputNormalization::None, "{preset}: the reference trains on raw pixels");
    assert_eq!(cfg.train.warmup_epochs, 0, "{preset}: the first steps run at train.lr");
    if key == "trades" {
        assert_eq!(
            cfg.attack.random_start,
            Some(AttackStart::Normal),
            "{preset}: TRADES starts from x + 0.001 N(0, 1)"
        );
    }
    let counts = Profile::Exp { ratio: 0.02 }.counts(10, 5000.0).unwrap(); // CIFAR-10-LT
    let config = ModelConfig {
        arch: cfg.arch().unwrap(),
        in_channels: 3,
        num_classes: 10,
        head: cfg.model.head,
        normalization: None,
    };
    let mut model = Classifier::new(config, &dev, 0).unwrap();
    model.set_class_counts(counts.clone()).unwrap();
    import_pytorch(&model, &manifest().join("../models/tests/fixtures").join(head_fixture)).unwrap();
    let model = model.to_dtype(dtype).unwrap();
    let initial: HashMap<String, Vec<f64>> = model.store().state().into_iter().map(|(n, t)| (n, values(&t))).collect();
    let loss = TrainLoss::new(cfg.loss.clone(), &counts, &dev).unwrap();
    let method = cfg.objective();
    let mut sgd = Sgd::new(model.store().trainable(""), cfg.train.momentum, cfg.train.weight_decay)
        .with_nesterov(cfg.train.nesterov);

    let want: HashMap<String, Tensor> =
        candle_core::safetensors::load(manifest().join("tests/fixtures/trajectory_wrn10_1.safetensors"), &dev)
            .unwrap()
            .into_iter()
            .filter_map(|(n, t)| n.strip_prefix(&format!("{key}.")).map(|n| (n.to_string(), t)))
            .collect();
    let section = |prefix: &'static str| want.iter().filter_map(move |(n, t)| n.strip_prefix(prefix).map(|n| (n, t)));
    let ours = |reference: &str| map_reference_name(reference).unwrap_or_else(|| panic!("unmapped {reference}"));
    let change = |state: &HashMap<String, Tensor>, name: &str| -> Vec<f64> {
        values(&state[&ours(name)]).iter().zip(&initial[&ours(name)]).map(|(a, b)| a - b).collect()
    };
    let set = read_batch_file(cifar, Cifar::Cifar10).unwrap();
    let want_loss = values(&want["loss"]);
    let mut errors = Errors::default();
    for (k, want_loss) in want_loss.iter().enumerate().take(steps) {
        let idx: Vec<usize> = (k * BATCH..(k + 1) * BATCH).collect();
        // Pixels / 255 in the run's dtype, as the loader (f32) and the script (f64) divide.
        let pixels: Vec<f64> = idx.iter().flat_map(|&i| set.image(i).iter().map(|&p| f64::from(p))).collect();
        let x = (Tensor::from_vec(pixels, (BATCH, 3, 32, 32), &dev).unwrap().to_dtype(dtype).unwrap() / 255.0).unwrap();
        let y = Tensor::from_vec(idx.iter().map(|&i| set.labels()[i]).collect::<Vec<u32>>(), BATCH, &dev).unwrap();
        let x0 = start(&x, k, key == "trades", cfg.attack.eps).to_dtype(dtype).unwrap();
        let ctx = StepContext {
            model: &model,
            loss: &loss,
            weights: None,
            seed: 0,
            budget: None,
            start: Some(&x0),
            epoch_start: false,
        };
        let x_adv = method.craft(&ctx, &x, &y).unwrap();
        let out = method.outer(&ctx, &x, &y, x_adv.as_ref()).unwrap();
        let value = out.loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        sgd.step(&out.loss, cfg.train.lr).unwrap();
        errors.loss.push((value - want_loss).abs() / want_loss.abs());

        let state: HashMap<String, Tensor> = model.store().state().into_iter().collect();
        errors.bn.push(worst(section("bn.").map(|(name, hist)| {
            (rel(&values(&state[&ours(name)]), &values(&hist.get(k).unwrap())), name.to_string())
        })));
        errors.change.push(worst(section("proj.").map(|(name, hist)| {
            let d = change(&state, name);
            let row = values(&hist.get(k).unwrap());
            let norm = row[PROJECTIONS].max(1e-12);
            // A projection of an error vector e has spread ||e||: errors relative to
            // the size of the change itself.
            let mut e = (d.iter().map(|v| v * v).sum::<f64>().sqrt() - row[PROJECTIONS]).abs() / norm;
            for (j, &p) in row.iter().take(PROJECTIONS).enumerate() {
                let q: f64 = rademacher(j, d.len()).iter().zip(&d).map(|(a, b)| a * b).sum();
                e = e.max((q - p).abs() / norm);
            }
            (e, name.to_string())
        })));
    }
    let state: HashMap<String, Tensor> = model.store().state().into_iter().collect();
    errors.last = worst(section("final.").map(|(name, t)| (rel(&change(&state, name), &values(t)), name.to_string())));
    let yardstick = section("pytorch_f32.").map(|(n, t)| (n.to_string(), t.clone())).collect();
    (errors, yardstick)
}

fn show(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.1e}")).collect::<Vec<_>>().join(" ")
}

fn check(preset: &str, key: &str, head_fixture: &str) {
    let Some(cifar) = shared_cifar(preset) else { return };

    // Float64: the same arithmetic as the reference, so every step must agree to
    // float64 rounding amplified by ten steps (any difference in procedure, pass order,
    // loss or update is orders of magnitude larger).
    let (e, _) = run(preset, key, head_fixture, &cifar, DType::F64, (STEPS, &[]));
    let bn: Vec<f64> = e.bn.iter().map(|b| b.0).collect();
    let change: Vec<f64> = e.change.iter().map(|c| c.0).collect();
    println!("{preset} in float64 against the float64 reference, steps 1..{STEPS}:");
    println!("  loss {}\n  bn {}\n  change {}\n  final {:.1e}", show(&e.loss), show(&bn), show(&change), e.last.0);
    for k in 0..STEPS {
        assert!(e.loss[k] < 1e-12, "{preset} f64: step {} loss differs by {:.2e}", k + 1, e.loss[k]);
        assert!(e.bn[k].0 < 1e-12, "{preset} f64: after step {}, {} differs by {:.2e}", k + 1, e.bn[k].1, e.bn[k].0);
        assert!(
            e.change[k].0 < 1e-10,
            "{preset} f64: step {}: {} differs by {:.2e}",
            k + 1,
            e.change[k].1,
            e.change[k].0
        );
    }
    // The fixture keeps the final changes in f32: agreement to their rounding.
    assert!(e.last.0 < 1e-6, "{preset} f64: final parameters differ: {:?}", e.last);

    // Float32 (the CPU kernels). PGD's sign steps amplify rounding from step to step (a
    // gradient entry near zero flips a pixel by 2 alpha), so the float32 trajectory
    // drifts from float64, as PyTorch's own float32 run of the same steps does (its
    // distances are in the fixture): ours must stay within 4x of PyTorch's, worst step
    // against worst step. Step 1 is held tighter where PyTorch's float32 step 1 agrees
    // with float64: at the reference's 0.031 / 0.0078 (not 8/255, 2/255) a few pixels
    // of step 1's attack already flip in PyTorch's float32 run (loss 1e-5..1e-4 off),
    // and TRADES's KL gradient at x + 0.001 N(0, 1) is near zero everywhere; there,
    // step 1 gets the same 4x-of-PyTorch bound.
    let (e, f32_run) = run(preset, key, head_fixture, &cifar, DType::F32, (STEPS, &[]));
    let bn: Vec<f64> = e.bn.iter().map(|b| b.0).collect();
    let change: Vec<f64> = e.change.iter().map(|c| c.0).collect();
    let torch = |k: &str| values(&f32_run[k]);
    println!("{preset} in float32 against the float64 reference (PyTorch float32 in brackets):");
    println!("  loss   {}\n         [{}]", show(&e.loss), show(&torch("loss")));
    println!("  bn     {}\n         [{}]", show(&bn), show(&torch("bn")));
    println!("  change {}\n         [{}]", show(&change), show(&torch("change")));
    println!("  final parameters {:.1e} [{:.1e}], worst at {}", e.last.0, torch("final")[0], e.last.1);
    let step1 = |tight: f64, theirs: f64| tight.max(4.0 * theirs);
    assert!(
        e.loss[0] < step1(1e-6, torch("loss")[0]),
        "{preset} f32: step 1 loss differs by {:.2e} [PyTorch {:.2e}]",
        e.loss[0],
        torch("loss")[0]
    );
    assert!(
        e.bn[0].0 < step1(1e-6, torch("bn")[0]),
        "{preset} f32: after step 1, {} differs by {:.2e} [PyTorch {:.2e}]",
        e.bn[0].1,
        e.bn[0].0,
        torch("bn")[0]
    );
    assert!(
        e.change[0].0 < step1(2e-3, torch("change")[0]),
        "{preset} f32: step 1 update of {} differs by {:.2e} [PyTorch {:.2e}]",
        e.change[0].1,
        e.change[0].0,
        torch("change")[0]
    );
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    for (what, ours, theirs) in [
        ("loss", max(&e.loss), max(&torch("loss"))),
        ("bn", max(&bn), max(&torch("bn"))),
        ("change", max(&change), max(&torch("change"))),
        ("final", e.last.0, torch("final")[0]),
    ] {
        assert!(
            ours <= 4.0 * theirs,
            "{preset} f32: worst {what} error {ours:.2e} exceeds 4x PyTorch float32's {theirs:.2e}"
        );
    }
}

#[test]
fn robal_n_preset_follows_the_reference_for_ten_steps() {
    check("cifar10-lt-robal-n.toml", "robal-n", "reference_wrn10_1_cosine.pt");
}

#[test]
fn robal_r_preset_follows_the_reference_for_ten_steps() {
    check("cifar10-lt-robal-r.toml", "robal-r", "reference_wrn10_1_cosine.pt");
}

#[test]
fn trades_preset_follows_the_reference_for_ten_steps() {
    check("cifar10-lt-trades.toml", "trades", "reference_wrn10_1_fc.pt");
}

#[test]
fn pgd_at_preset_follows_the_reference_for_ten_steps() {
    check("cifar10-lt-pgd-at.toml", "pgd-at", "reference_wrn10_1_fc.pt");
}

/// The comparison sees a change of procedure: with our own pass order (adv, clean: one
/// BatchNorm update fewer per step) the first step's loss and update are the same
/// (train-mode BatchNorm normalises by the batch) and its running statistics are not.
#[test]
fn a_changed_pass_order_is_caught_at_the_first_step() {
    let Some(cifar) = shared_cifar("a_changed_pass_order_is_caught_at_the_first_step") else { return };
    let minimal = ["train.bn_passes=\"minimal\""];
    let (e, _) =
        run("cifar10-lt-robal-n.toml", "robal-n", "reference_wrn10_1_cosine.pt", &cifar, DType::F64, (1, &minimal));
    println!("bn_passes = minimal, step 1: loss {:.1e}, update {:.1e}, bn {:?}", e.loss[0], e.change[0].0, e.bn[0]);
    assert!(e.loss[0] < 1e-12 && e.change[0].0 < 1e-10, "same loss and gradients: {e:?}");
    assert!(e.bn[0].0 > 1e-3, "running statistics must differ: {:?}", e.bn[0]);
}
