//! Every architecture of the table builds and runs both ways; names parse; bad settings are rejected.

use candle_core::{DType, Device, Tensor};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig, Normalization, ARCHITECTURES};

/// The architecture table walked row by row: each example builds, its name parses back
/// to it, and it runs forward in both modes and backward with finite gradients reaching
/// every parameter (a new row is tested here with no new test).
#[test]
fn every_row_of_the_architecture_table_runs_forward_and_backward() {
    for (i, row) in ARCHITECTURES.iter().enumerate() {
        let arch = row.example;
        assert_eq!(arch.name().parse::<Arch>().unwrap(), arch, "row {i} ({})", row.pattern);
        for other in &ARCHITECTURES[i + 1..] {
            assert_ne!(other.pattern, row.pattern, "row {i} repeated");
        }
        let (c, h, w) = row.input;
        let config = ModelConfig { arch, in_channels: c, num_classes: 5, head: HeadConfig::FC, normalization: None };
        let m = Classifier::new(config, &Device::Cpu, 0).unwrap();
        let x = Tensor::rand(0f32, 1.0, (2, c, h, w), &Device::Cpu).unwrap();
        assert_eq!(m.features(&x, Mode::Eval).unwrap().dim(0).unwrap(), 2, "{}", row.pattern);
        for mode in [Mode::Eval, Mode::Train] {
            let z = m.forward(&x, mode).unwrap();
            assert_eq!(z.dims(), [2, 5], "{}", row.pattern);
            let loss = z.sqr().unwrap().sum_all().unwrap();
            assert!(loss.to_scalar::<f32>().unwrap().is_finite(), "{} {mode:?}", row.pattern);
            if mode == Mode::Train {
                let grads = loss.backward().unwrap();
                let params = m.store().trainable("");
                assert!(!params.is_empty(), "{}", row.pattern);
                for (name, v) in &params {
                    let g = grads
                        .get(v.as_tensor())
                        .unwrap_or_else(|| panic!("{}: parameter {name} has no gradient", row.pattern));
                    let s = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(s.is_finite(), "{}: parameter {name}", row.pattern);
                }
            }
        }
    }
}

#[test]
fn names_parse_and_bad_settings_are_rejected() {
    assert_eq!("wrn-34-10".parse::<Arch>().unwrap(), Arch::WideResNet { depth: 34, widen: 10, dropout: 0.0 });
    assert_eq!("PreAct-ResNet18".parse::<Arch>().unwrap(), Arch::PreActResNet18);
    assert_eq!(Arch::WideResNet { depth: 28, widen: 10, dropout: 0.0 }.name(), "wrn-28-10");
    let e = "vgg16".parse::<Arch>().unwrap_err().to_string();
    assert!(e.contains("vgg16") && e.contains("wrn-D-K"), "{e}");
    let bad = ModelConfig {
        arch: Arch::WideResNet { depth: 33, widen: 10, dropout: 0.0 },
        in_channels: 3,
        num_classes: 10,
        head: HeadConfig::FC,
        normalization: None,
    };
    let e = Classifier::new(bad.clone(), &Device::Cpu, 0).unwrap_err().to_string();
    assert!(e.contains("depth 33"), "{e}");
    let norm = ModelConfig {
        arch: Arch::SmallCnn,
        in_channels: 1,
        normalization: Some(Normalization { mean: vec![0.1, 0.2], std: vec![1.0, 1.0] }),
        ..bad
    };
    assert!(Classifier::new(norm, &Device::Cpu, 0).unwrap_err().to_string().contains("input normalisation"));
}

#[test]
fn input_normalisation_is_applied_inside_the_model() {
    let base =
        ModelConfig { arch: Arch::SmallCnn, in_channels: 1, num_classes: 3, head: HeadConfig::FC, normalization: None };
    let plain = Classifier::new(base.clone(), &Device::Cpu, 9).unwrap();
    let normed = Classifier::new(
        ModelConfig { normalization: Some(Normalization { mean: vec![0.5], std: vec![0.25] }), ..base },
        &Device::Cpu,
        9,
    )
    .unwrap();
    let x = Tensor::rand(0f32, 1.0, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let by_hand = ((&x - 0.5).unwrap() / 0.25).unwrap();
    let (a, b) = (normed.forward(&x, Mode::Eval).unwrap(), plain.forward(&by_hand, Mode::Eval).unwrap());
    let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(d < 1e-5, "{d}");
    assert_eq!(x.dtype(), DType::F32);
}

#[test]
fn same_seed_same_weights_different_seed_different() {
    let c =
        ModelConfig { arch: Arch::SmallCnn, in_channels: 1, num_classes: 3, head: HeadConfig::FC, normalization: None };
    let w = |seed| {
        Classifier::new(c.clone(), &Device::Cpu, seed).unwrap().store().state()["backbone.conv2.weight"]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(w(1), w(1));
    assert_ne!(w(1), w(2));
    // Init std of a 3x3 conv with 64 outputs: sqrt(2 / (9 * 64)) = 0.0589.
    let v = w(1);
    let std = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
    assert!((std - 0.0589).abs() < 0.003, "{std}");
}

/// A float64 copy computes the same function (to float32 rounding), in float64, with
/// the same class counts and post-hoc term, and trains its own BatchNorm statistics.
#[test]
fn a_float64_copy_is_the_same_model_in_float64() {
    let cosine = HeadConfig::Cosine { scale: 10.0, gamma: 0.03125, bias: false };
    let config = ModelConfig {
        arch: Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 },
        in_channels: 3,
        num_classes: 4,
        head: cosine,
        normalization: Some(Normalization { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] }),
    };
    let mut m = Classifier::new(config, &Device::Cpu, 3).unwrap();
    m.set_class_counts(vec![100, 30, 10, 3]).unwrap();
    m.set_posthoc(Some(0.5)).unwrap();
    let x = Tensor::rand(0f32, 1.0, (3, 3, 32, 32), &Device::Cpu).unwrap();
    m.forward(&x, Mode::Train).unwrap(); // BatchNorm statistics that are not the init's
    let d = m.to_dtype(DType::F64).unwrap();
    assert_eq!(d.store().dtype(), DType::F64);
    assert!(d.store().state().values().all(|t| t.dtype() == DType::F64));
    assert_eq!(d.class_counts(), Some(&[100, 30, 10, 3][..]));
    assert_eq!(d.posthoc_tau(), Some(0.5));
    let (a, b) = (m.forward(&x, Mode::Eval).unwrap(), d.forward(&x.to_dtype(DType::F64).unwrap(), Mode::Eval).unwrap());
    assert_eq!(b.dtype(), DType::F64);
    let err: f64 =
        (a.to_dtype(DType::F64).unwrap() - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert!(err < 1e-5, "eval logits differ by {err}");
    let before = m.store().state()["backbone.bn1.running_mean"].to_vec1::<f32>().unwrap();
    d.forward(&x.to_dtype(DType::F64).unwrap(), Mode::Train).unwrap();
    assert_eq!(
        m.store().state()["backbone.bn1.running_mean"].to_vec1::<f32>().unwrap(),
        before,
        "the copy is separate"
    );
}
