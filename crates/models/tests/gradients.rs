//! Gradients with respect to the input (for attacks) and the parameters (for
//! training), checked against central finite differences along random directions.

use candle_core::{DType, Device, Tensor, Var};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn model(arch: Arch, c: usize, head: HeadConfig) -> Classifier {
    let config = ModelConfig { arch, in_channels: c, num_classes: 5, head, normalization: None };
    Classifier::new(config, &Device::Cpu, 3).unwrap()
}

/// L(x) = sum(logits * r) for a fixed r: a generic scalar of the logits.
fn loss(m: &Classifier, x: &Tensor, r: &Tensor) -> Tensor {
    (m.forward(x, Mode::Eval).unwrap() * r).unwrap().sum_all().unwrap()
}

/// A random direction of unit L2 norm.
fn direction(shape: &candle_core::Shape) -> Tensor {
    let v = Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap();
    let n = v.sqr().unwrap().sum_all().unwrap().sqrt().unwrap();
    v.broadcast_div(&n).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn check_input_gradient(m: &Classifier, shape: (usize, usize, usize, usize)) {
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::rand(0.2f32, 0.8, shape, &dev).unwrap()).unwrap();
    let r = Tensor::randn(0f32, 1.0, (shape.0, 5), &dev).unwrap();
    let g = loss(m, x.as_tensor(), &r).backward().unwrap();
    let gx = g.get(x.as_tensor()).expect("input gradient").clone();
    for k in 0..3 {
        let v = direction(&shape.into());
        let h = 1e-3;
        let plus = scalar(&loss(m, &(x.as_tensor() + (&v * h).unwrap()).unwrap(), &r));
        let minus = scalar(&loss(m, &(x.as_tensor() - (&v * h).unwrap()).unwrap(), &r));
        let fd = (plus - minus) / (2.0 * h);
        let an = scalar(&(&gx * &v).unwrap().sum_all().unwrap());
        assert!((fd - an).abs() <= 2e-2 * (1.0 + an.abs()), "direction {k}: finite difference {fd}, autograd {an}");
    }
}

#[test]
fn input_gradients_match_finite_differences() {
    check_input_gradient(&model(Arch::SmallCnn, 1, HeadConfig::FC), (2, 1, 28, 28));
    check_input_gradient(&model(Arch::SmallCnn, 1, HeadConfig::ROBAL_EVAL), (2, 1, 28, 28));
    check_input_gradient(
        &model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, 3, HeadConfig::ROBAL_EVAL),
        (2, 3, 16, 16),
    );
    check_input_gradient(&model(Arch::PreActResNet18, 3, HeadConfig::FC), (1, 3, 8, 8));
    check_input_gradient(&model(Arch::ResNet18, 3, HeadConfig::FC), (1, 3, 8, 8));
}

#[test]
fn parameter_gradients_match_finite_differences_in_train_mode() {
    let dev = Device::Cpu;
    let m = model(Arch::SmallCnn, 1, HeadConfig::ROBAL_EVAL);
    let x = Tensor::rand(0f32, 1.0, (4, 1, 28, 28), &dev).unwrap();
    let r = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
    let train_loss = |m: &Classifier| scalar(&(m.forward(&x, Mode::Train).unwrap() * &r).unwrap().sum_all().unwrap());
    let l = (m.forward(&x, Mode::Train).unwrap() * &r).unwrap().sum_all().unwrap();
    let grads = l.backward().unwrap();
    for (name, var) in m.store().trainable("") {
        if !(name.ends_with("conv2.weight") || name == "head.weight" || name.ends_with("bn3.weight")) {
            continue;
        }
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}")).clone();
        let v = direction(var.shape());
        let orig = var.as_tensor().copy().unwrap();
        let h = 1e-3;
        var.set(&(&orig + (&v * h).unwrap()).unwrap()).unwrap();
        let plus = train_loss(&m);
        var.set(&(&orig - (&v * h).unwrap()).unwrap()).unwrap();
        let minus = train_loss(&m);
        var.set(&orig).unwrap();
        let fd = (plus - minus) / (2.0 * h);
        let an = scalar(&(&g * &v).unwrap().sum_all().unwrap());
        assert!((fd - an).abs() <= 2e-2 * (1.0 + an.abs()), "{name}: finite difference {fd}, autograd {an}");
    }
}

#[test]
fn eval_mode_freezes_the_backbone_and_train_mode_does_not() {
    // An attack step (eval mode, input as a variable) must compute the input gradient
    // and no backbone parameter gradient; training computes them all.
    let dev = Device::Cpu;
    let m = model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, 3, HeadConfig::FC);
    let x = Var::from_tensor(&Tensor::rand(0f32, 1.0, (2, 3, 8, 8), &dev).unwrap()).unwrap();
    let params = m.store().trainable("");
    let eval = m.forward(x.as_tensor(), Mode::Eval).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(eval.get(x.as_tensor()).is_some(), "input gradient in eval mode");
    for (name, v) in &params {
        let has = eval.get(v.as_tensor()).is_some();
        assert_eq!(has, name.starts_with("head."), "{name}: gradient in eval mode = {has}");
    }
    let train = m.forward(x.as_tensor(), Mode::Train).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in &params {
        assert!(train.get(v.as_tensor()).is_some(), "{name}: no gradient in train mode");
    }
}
