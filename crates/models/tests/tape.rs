//! Backbones run on a tape (one op with its own backward pass) against the same
//! backbones run layer by layer through candle's autograd: same features, same input
//! gradients (evaluation mode), same parameter gradients, input gradients and running
//! statistics (training mode, dropout included), on random weights and BatchNorm
//! statistics, for every backbone: each is written once (`robal_models::Graph`) and
//! both paths run that one definition.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use robal_models::{Arch, Backbone, Mode, ParamStore};

/// Deterministic pseudo-random values in [lo, hi).
fn uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// A backbone whose every parameter and BatchNorm statistic is random (so that each
/// BatchNorm is a non-trivial affine map and ReLUs cut both ways); the same for the
/// same arguments.
fn backbone(arch: Arch, c: usize) -> (Backbone, ParamStore) {
    let store = ParamStore::new(Device::Cpu, 7);
    let b = Backbone::new(&store.root().pp("backbone"), &arch, c).unwrap();
    let mut state = BTreeMap::new();
    for (i, (name, _, t)) in store.entries().into_iter().enumerate() {
        let dims = t.dims().to_vec();
        let seed = i as u64 + 1;
        let v = if name.ends_with("running_var") {
            uniform(&dims, 0.5, 2.0, seed)
        } else if name.ends_with("running_mean") || name.ends_with("bias") {
            uniform(&dims, -0.3, 0.3, seed)
        } else if dims.len() == 1 {
            uniform(&dims, 0.5, 1.5, seed)
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let bound = (3.0 / fan_in as f32).sqrt();
            uniform(&dims, -bound, bound, seed)
        };
        state.insert(name, v);
    }
    store.load_state(&state).unwrap();
    (b, store)
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) =
        (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn check_eval(arch: Arch, shape: (usize, usize, usize, usize)) {
    let (b, _) = backbone(arch, shape.1);
    let x = Var::from_tensor(&uniform(&[shape.0, shape.1, shape.2, shape.3], 0.0, 1.0, 99)).unwrap();
    assert!(b.runs_on_tape(x.as_tensor(), Mode::Eval), "{arch:?} should run on a tape");
    let tape = b.forward(x.as_tensor(), Mode::Eval, 0).unwrap();
    let layers = b.forward_layers(x.as_tensor(), Mode::Eval, 0).unwrap();
    let err = max_rel_err(&tape, &layers);
    assert!(err < 1e-5, "{arch:?}: features differ by {err}");
    // Gradient of <r, f(x)> for a random r, both ways; the backbone gets none.
    let r = uniform(tape.dims(), -1.0, 1.0, 5);
    let grads = |f: &Tensor| f.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let (gt, gl) = (grads(&tape), grads(&layers));
    let (gt, gl) = (gt.get(x.as_tensor()).unwrap(), gl.get(x.as_tensor()).unwrap());
    let err = max_rel_err(gt, gl);
    assert!(err < 1e-4, "{arch:?}: input gradients differ by {err}");
    assert!(gl.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
    assert!(b.params().iter().all(|p| grads(&tape).get(p).is_none()), "{arch:?}: a frozen parameter got a gradient");
}

fn check_train(arch: Arch, shape: (usize, usize, usize, usize)) {
    // Two identical backbones: training-mode passes update their running statistics.
    let ((bt, st), (bl, sl)) = (backbone(arch, shape.1), backbone(arch, shape.1));
    let x = Var::from_tensor(&uniform(&[shape.0, shape.1, shape.2, shape.3], 0.0, 1.0, 98)).unwrap();
    assert!(bt.runs_on_tape(x.as_tensor(), Mode::Train));
    let tape = bt.forward(x.as_tensor(), Mode::Train, 11).unwrap();
    let layers = bl.forward_layers(x.as_tensor(), Mode::Train, 11).unwrap();
    let err = max_rel_err(&tape, &layers);
    assert!(err < 1e-5, "{arch:?}: training features differ by {err}");
    let r = uniform(tape.dims(), -1.0, 1.0, 6);
    let grads = |f: &Tensor| f.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let (gt, gl) = (grads(&tape), grads(&layers));
    let (pt, pl) = (bt.params(), bl.params());
    assert_eq!(pt.len(), pl.len());
    for (i, (a, b)) in pt.iter().zip(&pl).enumerate() {
        let (a, b) = (gt.get(a).expect("tape parameter gradient"), gl.get(b).expect("layer parameter gradient"));
        let err = max_rel_err(a, b);
        assert!(err < 2e-4, "{arch:?}: gradient of parameter {i} {:?} differs by {err}", b.dims());
    }
    let err = max_rel_err(gt.get(x.as_tensor()).unwrap(), gl.get(x.as_tensor()).unwrap());
    assert!(err < 1e-4, "{arch:?}: training input gradients differ by {err}");
    // The running statistics moved the same way.
    let (a, b) = (st.state(), sl.state());
    for (name, t) in &a {
        if name.contains("running") {
            let err = max_rel_err(t, &b[name]);
            assert!(err < 1e-5, "{arch:?}: {name} differs by {err}");
        }
    }
}

fn check(arch: Arch, shape: (usize, usize, usize, usize)) {
    check_eval(arch, shape);
    check_train(arch, shape);
}
#[test]
fn tape_backbones_match_the_layer_by_layer_path() {
    check(Arch::SmallCnn, (3, 1, 28, 28));
    check(Arch::WideResNet { depth: 10, widen: 2, dropout: 0.3 }, (2, 3, 16, 16));
    check(Arch::WideResNet { depth: 16, widen: 1, dropout: 0.0 }, (1, 3, 9, 9));
    check(Arch::DeepMindWideResNet { depth: 10, widen: 2 }, (2, 3, 12, 12));
    check(Arch::DeepMindWideResNet { depth: 16, widen: 1 }, (1, 3, 16, 16)); // even sizes only, as the code (its shortcut would not fit)
    check(Arch::ResNet18, (2, 3, 16, 16));
    check(Arch::PreActResNet18, (2, 3, 8, 8));
}

#[test]
fn imagenet_resnets_with_max_pool_and_bottlenecks_match_too() {
    check(Arch::ResNet18ImageNet, (2, 3, 32, 32));
    check(Arch::ResNet50ImageNet, (1, 3, 32, 32));
}

#[test]
fn tapes_run_only_where_they_apply() {
    let (b, _) = backbone(Arch::SmallCnn, 1);
    let x = uniform(&[1, 1, 28, 28], 0.0, 1.0, 1);
    // Inference without gradients keeps the layer-by-layer path; training always tapes.
    assert!(!b.runs_on_tape(&x, Mode::Eval));
    assert!(b.runs_on_tape(&x, Mode::Train));
    let v = Var::from_tensor(&x).unwrap();
    assert!(b.runs_on_tape(v.as_tensor(), Mode::Eval));
    // Other dtypes keep the layer-by-layer path.
    let v = Var::from_tensor(&x.to_dtype(candle_core::DType::F64).unwrap()).unwrap();
    assert!(!b.runs_on_tape(v.as_tensor(), Mode::Eval));
    assert!(!b.runs_on_tape(v.as_tensor(), Mode::Train));
}

#[test]
fn a_hand_built_tape_matches_candle_ops_and_names_bad_steps() {
    use robal_models::ops::{frozen_forward, train_forward, Affine};
    let x = Var::from_tensor(&uniform(&[2, 16, 6, 6], -1.0, 1.0, 21)).unwrap();
    let w = uniform(&[16, 16, 3, 3], -0.2, 0.2, 22);
    let pre = Affine { a: (0..16).map(|c| 0.5 + c as f32 * 0.1).collect(), b: vec![0.1; 16], relu: true };
    let post = Affine { a: vec![-1.5; 16], b: (0..16).map(|c| c as f32 * 0.05).collect(), relu: false };
    // y = mean_hw relu(post(conv(relu(pre(x)), W)) + x), on a tape and with candle's ops.
    let (wc, pc, qc) = (w.clone(), pre.clone(), post.clone());
    let tape = frozen_forward(x.as_tensor(), move |t, v| {
        let y = t.conv(v, &wc, 1, 1, Some(pc.clone()))?;
        let z = t.affine(y, qc.clone())?;
        let s = t.add(z, v, true)?;
        Ok(t.pool(s))
    })
    .unwrap();
    let per_channel = |v: &[f32]| Tensor::from_slice(v, (1, 16, 1, 1), &Device::Cpu).unwrap();
    let affine = |x: &Tensor, f: &Affine| {
        x.broadcast_mul(&per_channel(&f.a)).unwrap().broadcast_add(&per_channel(&f.b)).unwrap()
    };
    let a = affine(x.as_tensor(), &pre).relu().unwrap();
    let y = affine(&a.conv2d(&w, 1, 1, 1, 1).unwrap(), &post);
    let reference = (y + x.as_tensor()).unwrap().relu().unwrap().mean((2, 3)).unwrap();
    assert!(max_rel_err(&tape, &reference) < 1e-5);
    let r = uniform(&[2, 16], -1.0, 1.0, 23);
    let grad =
        |f: &Tensor| f.mul(&r).unwrap().sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
    assert!(max_rel_err(&grad(&tape), &grad(&reference)) < 1e-4);

    // A training tape computes gradients for its parameters only: any other weight it
    // meets is an error, as are mismatched shapes.
    let (p, stray) = (Var::from_tensor(&w).unwrap(), uniform(&[16, 16, 3, 3], -0.2, 0.2, 24));
    let err = train_forward(x.as_tensor(), &[p.as_tensor().clone()], move |t, v| t.conv(v, &stray, 1, 1, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a registered parameter"), "{err}");
    let err = frozen_forward(x.as_tensor(), |t, v| {
        let small = t.pool(v);
        t.add(v, small, false)
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("shapes") && err.contains("differ"), "{err}");
    let err =
        frozen_forward(x.as_tensor(), |t, v| t.affine(v, Affine { a: vec![1.0; 3], b: vec![0.0; 3], relu: false }))
            .unwrap_err()
            .to_string();
    assert!(err.contains("16 channels") && err.contains("3"), "{err}");
}

/// The kernels are a setting of each model, not of the process: a model on candle's ops
/// runs layer by layer beside one on robal-rs's tape, with the same features and input
/// gradients.
#[test]
fn kernels_are_a_setting_of_each_backbone() {
    let (ours, _) = backbone(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, 3);
    let (mut candle, _) = backbone(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, 3);
    candle.set_kernels(robal_models::ops::Kernels::Candle);
    let x = Var::from_tensor(&uniform(&[2, 3, 12, 12], 0.0, 1.0, 3)).unwrap();
    assert!(ours.runs_on_tape(x.as_tensor(), Mode::Eval));
    assert!(!candle.runs_on_tape(x.as_tensor(), Mode::Eval) && !candle.runs_on_tape(x.as_tensor(), Mode::Train));
    let (a, b) =
        (ours.forward(x.as_tensor(), Mode::Eval, 0).unwrap(), candle.forward(x.as_tensor(), Mode::Eval, 0).unwrap());
    assert!(max_rel_err(&a, &b) < 1e-5, "features differ by {}", max_rel_err(&a, &b));
    let g = |f: &Tensor| f.sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
    let err = max_rel_err(&g(&a), &g(&b));
    assert!(err < 1e-4, "input gradients differ by {err}");
    assert!(ours.runs_on_tape(x.as_tensor(), Mode::Eval), "setting one model leaves the other alone");
}
