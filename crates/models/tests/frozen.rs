//! The frozen (evaluation-mode) backbone op against the same backbone run layer by
//! layer through candle's autograd: same features, same input gradients, on random
//! weights and BatchNorm statistics, for every backbone that has a frozen form.

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
/// BatchNorm is a non-trivial affine map and ReLUs cut both ways).
fn backbone(arch: Arch, c: usize) -> Backbone {
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
    b
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) =
        (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs() / scale))
}

fn check(arch: Arch, shape: (usize, usize, usize, usize)) {
    let b = backbone(arch, shape.1);
    let x = Var::from_tensor(&uniform(&[shape.0, shape.1, shape.2, shape.3], 0.0, 1.0, 99)).unwrap();
    assert!(b.runs_frozen(x.as_tensor(), Mode::Eval), "{arch:?} should run frozen");
    let frozen = b.forward(x.as_tensor(), Mode::Eval, 0).unwrap();
    let layers = b.forward_layers(x.as_tensor(), Mode::Eval, 0).unwrap();
    let err = max_rel_err(&frozen, &layers);
    assert!(err < 1e-5, "{arch:?}: features differ by {err}");
    // Gradient of <r, f(x)> for a random r, both ways.
    let r = uniform(frozen.dims(), -1.0, 1.0, 5);
    let grad =
        |f: &Tensor| f.mul(&r).unwrap().sum_all().unwrap().backward().unwrap().get(x.as_tensor()).unwrap().clone();
    let (gf, gl) = (grad(&frozen), grad(&layers));
    let err = max_rel_err(&gf, &gl);
    assert!(err < 1e-4, "{arch:?}: input gradients differ by {err}");
    assert!(gl.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0);
}

#[test]
fn frozen_backbones_match_the_layer_by_layer_path() {
    check(Arch::SmallCnn, (3, 1, 28, 28));
    check(Arch::WideResNet { depth: 10, widen: 2, dropout: 0.3 }, (2, 3, 16, 16));
    check(Arch::WideResNet { depth: 16, widen: 1, dropout: 0.0 }, (1, 3, 9, 9));
    check(Arch::ResNet18, (2, 3, 16, 16));
    check(Arch::PreActResNet18, (2, 3, 8, 8));
}

#[test]
fn frozen_form_only_where_it_applies() {
    let b = backbone(Arch::SmallCnn, 1);
    let x = uniform(&[1, 1, 28, 28], 0.0, 1.0, 1);
    // No gradient wanted (inference) or training mode: the layer-by-layer path.
    assert!(!b.runs_frozen(&x, Mode::Eval));
    let v = Var::from_tensor(&x).unwrap();
    assert!(!b.runs_frozen(v.as_tensor(), Mode::Train));
    assert!(b.runs_frozen(v.as_tensor(), Mode::Eval));
    // The ImageNet forms keep the tensor-op path.
    let r = backbone(Arch::ResNet18ImageNet, 3);
    let v = Var::from_tensor(&uniform(&[1, 3, 32, 32], 0.0, 1.0, 2)).unwrap();
    assert!(!r.runs_frozen(v.as_tensor(), Mode::Eval));
}
