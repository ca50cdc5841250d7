//! Max-pooling with its own backward: forward against a brute-force loop, PyTorch's
//! tie rule, the input gradient against finite differences, and the ImageNet ResNet
//! stems (3x3 stride-2 max-pool) through an attack step and a training step.

use candle_core::{Device, Tensor, Var};
use robal_models::ops::max_pool2d;
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

/// out[i][j] = max of x over the window at (i s - p, j s - p), ignoring outside positions.
fn brute(x: &[f32], h: usize, w: usize, k: usize, s: usize, p: usize) -> Vec<f32> {
    let ho = (h + 2 * p - k) / s + 1;
    let wo = (w + 2 * p - k) / s + 1;
    let mut out = Vec::new();
    for i in 0..ho {
        for j in 0..wo {
            let mut m = f32::NEG_INFINITY;
            for di in 0..k {
                for dj in 0..k {
                    let (y, x0) = ((i * s + di) as isize - p as isize, (j * s + dj) as isize - p as isize);
                    if y >= 0 && (y as usize) < h && x0 >= 0 && (x0 as usize) < w {
                        m = m.max(x[y as usize * w + x0 as usize]);
                    }
                }
            }
            out.push(m);
        }
    }
    out
}

#[test]
fn forward_matches_brute_force_for_several_geometries() {
    for (h, w, k, s, p) in [(7, 9, 3, 2, 1), (8, 8, 2, 2, 0), (5, 6, 3, 1, 1), (11, 10, 5, 3, 2), (4, 4, 4, 1, 0)] {
        let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &Device::Cpu).unwrap();
        let got = max_pool2d(&x, k, s, p).unwrap();
        let xs = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want: Vec<f32> = xs.chunks(h * w).flat_map(|pl| brute(pl, h, w, k, s, p)).collect();
        assert_eq!(got.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want, "{h}x{w} k{k} s{s} p{p}");
    }
}

#[test]
fn ties_send_the_gradient_to_the_first_position_as_pytorch_does() {
    // torch.nn.functional.max_pool2d on a constant 1x1x3x3 input with k 2, s 1: every
    // window's maximum is its top-left element, so x.grad = [[1, 1, 0], [1, 1, 0], [0, 0, 0]].
    let x = Var::from_tensor(&Tensor::ones((1, 1, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap()).unwrap();
    let g = max_pool2d(x.as_tensor(), 2, 1, 0).unwrap().sum_all().unwrap().backward().unwrap();
    let g = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g, vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn input_gradient_matches_finite_differences() {
    // Distinct values (a permutation scaled), so the argmax is stable under +-1e-3.
    let (h, w) = (7, 7);
    let mut v: Vec<f32> = (0..2 * h * w).map(|i| ((i * 37) % 98) as f32 * 0.01).collect();
    v.reverse();
    let weights = Tensor::randn(0f32, 1.0, (1, 2, 4, 4), &Device::Cpu).unwrap();
    let f = |t: &Tensor| (max_pool2d(t, 3, 2, 1).unwrap() * &weights).unwrap().sum_all().unwrap();
    let x = Var::from_tensor(&Tensor::from_vec(v.clone(), (1, 2, h, w), &Device::Cpu).unwrap()).unwrap();
    let g = f(x.as_tensor())
        .backward()
        .unwrap()
        .get(x.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    for i in 0..v.len() {
        let at = |d: f32| {
            let mut u = v.clone();
            u[i] += d;
            f(&Tensor::from_vec(u, (1, 2, h, w), &Device::Cpu).unwrap()).to_scalar::<f32>().unwrap() as f64
        };
        let fd = (at(1e-3) - at(-1e-3)) / 2e-3;
        assert!((fd - g[i] as f64).abs() < 1e-3, "d/dx[{i}]: fd {fd} vs {}", g[i]);
    }
}

#[test]
fn imagenet_resnets_run_an_attack_step_and_a_training_step() {
    for arch in [Arch::ResNet18ImageNet, Arch::ResNet50ImageNet] {
        let cfg = ModelConfig { arch, in_channels: 3, num_classes: 5, head: HeadConfig::FC, normalization: None };
        let m = Classifier::new(cfg, &Device::Cpu, 0).unwrap();
        let x = Tensor::rand(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
        let y = Tensor::new(&[1u32, 3], &Device::Cpu).unwrap();
        // Attack step: gradient of the CE w.r.t. the input, eval mode.
        let xv = Var::from_tensor(&x).unwrap();
        let z = m.forward(xv.as_tensor(), Mode::Eval).unwrap();
        let ce = candle_nn::loss::cross_entropy(&z, &y).unwrap();
        let gx = ce.backward().unwrap().get(xv.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap();
        let gx = gx.to_scalar::<f32>().unwrap();
        assert!(gx.is_finite() && gx > 0.0, "{arch:?}: input gradient {gx}");
        // Training step: every parameter gets a finite gradient.
        let z = m.forward(&x, Mode::Train).unwrap();
        let grads = candle_nn::loss::cross_entropy(&z, &y).unwrap().backward().unwrap();
        for (name, var) in m.store().trainable("") {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{arch:?}: no gradient for {name}"));
            assert!(g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap().is_finite(), "{name}");
        }
    }
}
