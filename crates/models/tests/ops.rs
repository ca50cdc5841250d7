//! The CPU kernels of `robal_models::ops` against candle's reference ops (forward and
//! autograd) and against central finite differences, on odd sizes, stride 2, batch 1
//! and non-contiguous inputs.

use candle_core::{Device, Tensor, Var};
use robal_models::ops::{batch_norm_eval, batch_norm_train, batch_stats, conv2d};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    // A deterministic pseudo-random tensor (candle's randn is not seedable on the CPU).
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| {
            let z =
                ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9)) >> 11;
            (z as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-6)
}

/// (N, C, H, W, O, k, stride, pad): 3x3 and 1x1, stride 1 and 2, odd sizes, batch 1,
/// a 7x7 stem, a kernel as large as the padded image, and batches whose small outputs
/// are computed several images per GEMM (128 columns: 13 = 6x2+1 of 8x8, 11 = 8+3 of
/// 4x4, 9 = 3x3 of 6x6 for a 1x1 convolution, 7 = 3x2+1 of 7x7), next to a 1x1
/// convolution too wide to group; 3x3 stride-1 convolutions with 16+ channels (the
/// Winograd kernels: odd sizes, padding 0/1/2, batch 1, 13 images of 2x2 tiles, and
/// 256 input channels, where its sums are longest).
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_CASES: [ConvCase; 19] = [
    (2, 3, 8, 8, 4, 3, 1, 1),
    (1, 5, 7, 9, 6, 3, 2, 1),
    (3, 4, 9, 7, 5, 1, 1, 0),
    (2, 6, 9, 9, 3, 1, 2, 0),
    (1, 2, 5, 5, 2, 3, 2, 0),
    (4, 3, 11, 10, 8, 3, 1, 1),
    (2, 3, 15, 13, 4, 7, 2, 3),
    (1, 1, 3, 3, 2, 5, 1, 1),
    (5, 16, 6, 6, 16, 3, 1, 1),
    (13, 3, 8, 8, 5, 3, 1, 1),
    (11, 4, 8, 8, 6, 1, 2, 0),
    (9, 5, 6, 6, 4, 1, 1, 0),
    (7, 2, 13, 13, 3, 3, 2, 1),
    (2, 3, 17, 16, 4, 1, 1, 0),
    (3, 16, 7, 9, 20, 3, 1, 1),
    (2, 17, 5, 6, 16, 3, 1, 0),
    (1, 16, 9, 8, 18, 3, 1, 2),
    (13, 16, 4, 4, 16, 3, 1, 1),
    (2, 256, 8, 8, 128, 3, 1, 1),
];

#[test]
fn conv_forward_and_gradients_match_candle() {
    for (k, &(n, c, h, w, o, ks, stride, pad)) in CONV_CASES.iter().enumerate() {
        let x = Var::from_tensor(&randn(&[n, c, h, w], k as u64)).unwrap();
        let wt = Var::from_tensor(&(randn(&[o, c, ks, ks], 100 + k as u64) * 0.3).unwrap()).unwrap();
        let r = randn(&[n, o, (h + 2 * pad - ks) / stride + 1, (w + 2 * pad - ks) / stride + 1], 200 + k as u64);
        let ours = conv2d(x.as_tensor(), wt.as_tensor(), stride, pad).unwrap();
        let reference = x.as_tensor().conv2d(wt.as_tensor(), pad, stride, 1, 1).unwrap();
        let case = format!("case {k}: x {:?} w {:?} stride {stride} pad {pad}", x.dims(), wt.dims());
        assert!(max_rel_err(&ours, &reference) < 1e-5, "forward, {case}");
        let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (what, v) in [("input", x.as_tensor()), ("weight", wt.as_tensor())] {
            let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(e < 1e-4, "{what} gradient rel. error {e}, {case}");
        }
    }
}

#[test]
fn conv_gradients_match_finite_differences() {
    // The first five cases (im2col) and two Winograd cases (padding 1 and 2).
    for k in [0, 1, 2, 3, 4, 14, 16] {
        let (n, c, h, w, o, ks, stride, pad) = CONV_CASES[k];
        let x = randn(&[n, c, h, w], k as u64);
        let wt = (randn(&[o, c, ks, ks], 50 + k as u64) * 0.3).unwrap();
        let r = randn(&[n, o, (h + 2 * pad - ks) / stride + 1, (w + 2 * pad - ks) / stride + 1], 60 + k as u64);
        let f = |x: &Tensor, wt: &Tensor| -> f64 {
            (conv2d(x, wt, stride, pad).unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let (xv, wv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&wt).unwrap());
        let grads = (conv2d(xv.as_tensor(), wv.as_tensor(), stride, pad).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (gx, gw) = (grads.get(xv.as_tensor()).unwrap(), grads.get(wv.as_tensor()).unwrap());
        // The loss is linear in each argument, so a central difference along a direction
        // v is exact up to rounding: (f(a + hv) - f(a - hv)) / 2h = <grad, v>.
        let h = 0.5;
        let vx = randn(x.dims(), 70 + k as u64);
        let fd =
            (f(&(&x + (&vx * h).unwrap()).unwrap(), &wt) - f(&(&x - (&vx * h).unwrap()).unwrap(), &wt)) / (2.0 * h);
        let an = (gx * &vx).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((fd - an).abs() < 1e-3 * (1.0 + an.abs()), "case {k}: input, fd {fd} vs {an}");
        let vw = randn(wt.dims(), 80 + k as u64);
        let fd =
            (f(&x, &(&wt + (&vw * h).unwrap()).unwrap()) - f(&x, &(&wt - (&vw * h).unwrap()).unwrap())) / (2.0 * h);
        let an = (gw * &vw).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((fd - an).abs() < 1e-3 * (1.0 + an.abs()), "case {k}: weight, fd {fd} vs {an}");
    }
}

#[test]
fn conv_takes_non_contiguous_input_and_skips_frozen_weights() {
    // A transposed view (N, C, W, H) -> (N, C, H, W) is not contiguous.
    let base = randn(&[2, 3, 9, 7], 1);
    let x = base.transpose(2, 3).unwrap();
    assert!(!x.is_contiguous());
    let wt = randn(&[4, 3, 3, 3], 2);
    let ours = conv2d(&x, &wt, 2, 1).unwrap();
    let reference = x.contiguous().unwrap().conv2d(&wt, 1, 2, 1, 1).unwrap();
    assert!(max_rel_err(&ours, &reference) < 1e-5);
    // A detached weight gets no gradient; the input still does.
    let xv = Var::from_tensor(&x.contiguous().unwrap()).unwrap();
    let wv = Var::from_tensor(&wt).unwrap();
    let g = conv2d(xv.as_tensor(), &wv.as_tensor().detach(), 2, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(xv.as_tensor()).is_some());
    assert!(g.get(wv.as_tensor()).is_none());
}

#[test]
fn conv_rejects_mismatched_shapes() {
    let err = conv2d(&randn(&[1, 3, 8, 8], 1), &randn(&[4, 2, 3, 3], 2), 1, 1).unwrap_err().to_string();
    assert!(err.contains("[1, 3, 8, 8]") && err.contains("[4, 2, 3, 3]"), "{err}");
    let err = conv2d(&randn(&[1, 3, 2, 2], 1), &randn(&[4, 3, 5, 5], 2), 1, 0).unwrap_err().to_string();
    assert!(err.contains("do not fit"), "{err}");
}

/// BatchNorm in training mode from candle's tensor ops (biased batch variance).
fn bn_reference(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64, relu: bool) -> Tensor {
    let c = x.dim(1).unwrap();
    let mut shape = vec![1usize; x.rank()];
    shape[1] = c;
    let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
    let mean = x.mean_keepdim(dims.as_slice()).unwrap();
    let centred = x.broadcast_sub(&mean).unwrap();
    let var = centred.sqr().unwrap().mean_keepdim(dims.as_slice()).unwrap();
    let y = centred
        .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
        .unwrap()
        .broadcast_mul(&g.reshape(shape.as_slice()).unwrap())
        .unwrap()
        .broadcast_add(&b.reshape(shape.as_slice()).unwrap())
        .unwrap();
    if relu {
        y.relu().unwrap()
    } else {
        y
    }
}

#[test]
fn batch_norm_train_matches_candle_and_its_gradients() {
    for (k, shape) in [vec![4, 3, 5, 5], vec![1, 2, 7, 3], vec![8, 5], vec![3, 4, 1, 1]].into_iter().enumerate() {
        for relu in [false, true] {
            let c = shape[1];
            let x = Var::from_tensor(&randn(&shape, k as u64).affine(2.0, 0.5).unwrap()).unwrap();
            let g = Var::from_tensor(&(randn(&[c], 10 + k as u64) + 1.5).unwrap()).unwrap();
            let b = Var::from_tensor(&randn(&[c], 20 + k as u64)).unwrap();
            let r = randn(&shape, 30 + k as u64);
            let stats = batch_stats(x.as_tensor()).unwrap();
            let ours = batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), &stats, 1e-5, relu).unwrap();
            let reference = bn_reference(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, relu);
            assert!(max_rel_err(&ours, &reference) < 1e-5, "shape {shape:?} relu {relu}");
            let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (&reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
            for (what, v) in [("x", x.as_tensor()), ("gamma", g.as_tensor()), ("beta", b.as_tensor())] {
                let e = max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap());
                assert!(e < 1e-4, "{what} gradient rel. error {e}, shape {shape:?} relu {relu}");
            }
        }
    }
}

#[test]
fn batch_norm_train_input_gradient_matches_finite_differences() {
    // f(x) = sum(BN(x) * r) with the batch statistics recomputed at every x.
    let shape = [3, 2, 4, 5];
    let x = (randn(&shape, 5) * 1.5).unwrap();
    let (g, b) = ((randn(&[2], 6) + 1.0).unwrap(), randn(&[2], 7));
    let r = randn(&shape, 8);
    let f = |x: &Tensor| -> f64 {
        let s = batch_stats(x).unwrap();
        (batch_norm_train(x, &g, &b, &s, 1e-5, false).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    let xv = Var::from_tensor(&x).unwrap();
    let s = batch_stats(xv.as_tensor()).unwrap();
    let grads = (batch_norm_train(xv.as_tensor(), &g, &b, &s, 1e-5, false).unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let gx = grads.get(xv.as_tensor()).unwrap();
    for k in 0..3 {
        let v = randn(&shape, 90 + k);
        let h = 1e-2;
        let fd = (f(&(&x + (&v * h).unwrap()).unwrap()) - f(&(&x - (&v * h).unwrap()).unwrap())) / (2.0 * h);
        let an = (gx * &v).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((fd - an).abs() < 2e-2 * (1.0 + an.abs()), "direction {k}: fd {fd} vs {an}");
    }
}

#[test]
fn batch_stats_are_the_mean_and_biased_variance() {
    // Channel 0 holds 1, 2, 3, 4 and channel 1 holds 0, 0, 0, 8 over (N=2, S=2).
    let x = Tensor::new(&[[[1f32, 2.], [0., 0.]], [[3., 4.], [0., 8.]]], &Device::Cpu).unwrap();
    let s = batch_stats(&x).unwrap();
    assert_eq!(s.mean, vec![2.5, 2.0]);
    assert_eq!(s.var, vec![1.25, 12.0]);
    assert_eq!(s.count, 4);
}

#[test]
fn batch_norm_eval_is_the_frozen_affine_map() {
    let x = Var::from_tensor(&randn(&[2, 3, 4, 4], 3)).unwrap();
    let (g, b, m, v) = ([1.5f32, 0.5, 2.0], [0.1f32, -0.2, 0.3], [0.2f32, -0.1, 0.0], [0.5f32, 2.0, 1.0]);
    for relu in [false, true] {
        let y = batch_norm_eval(x.as_tensor(), &g, &b, &m, &v, 1e-5, relu).unwrap();
        let t = |a: &[f32]| Tensor::new(a, &Device::Cpu).unwrap().reshape((1, 3, 1, 1)).unwrap();
        let a = t(&g).broadcast_div(&(t(&v) + 1e-5).unwrap().sqrt().unwrap()).unwrap();
        let mut want =
            x.as_tensor().broadcast_sub(&t(&m)).unwrap().broadcast_mul(&a).unwrap().broadcast_add(&t(&b)).unwrap();
        if relu {
            want = want.relu().unwrap();
        }
        assert!(max_rel_err(&y, &want) < 1e-6);
        let r = randn(&[2, 3, 4, 4], 4);
        let g1 = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&want * &r).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_rel_err(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-6);
    }
}

#[test]
fn add_relu_matches_candle_and_its_gradients() {
    let a = Var::from_tensor(&randn(&[2, 3, 5, 7], 1)).unwrap();
    let b = Var::from_tensor(&randn(&[2, 3, 5, 7], 2)).unwrap();
    let r = randn(&[2, 3, 5, 7], 3);
    let ours = robal_models::ops::add_relu(a.as_tensor(), b.as_tensor()).unwrap();
    let reference = (a.as_tensor() + b.as_tensor()).unwrap().relu().unwrap();
    assert!(max_rel_err(&ours, &reference) < 1e-7);
    let g1 = (&ours * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (&reference * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for v in [a.as_tensor(), b.as_tensor()] {
        assert!(max_rel_err(g1.get(v).unwrap(), g2.get(v).unwrap()) < 1e-7);
    }
    // Only the operand that takes part in autograd gets a gradient.
    let g = robal_models::ops::add_relu(a.as_tensor(), &b.as_tensor().detach())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(g.get(a.as_tensor()).is_some() && g.get(b.as_tensor()).is_none());
}
