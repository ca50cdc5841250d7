//! The DeepMind-style WideResNet (`dm-wrn-D-K`, RobustLT's Tiny-ImageNet model) against a
//! PyTorch transcription of its code: fixtures/dm_wrn_10_1.safetensors, made by
//! fixtures/make_dm_wrn_fixture.py (torch 2.15, float64 rounded to f32).

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use robal_models::{Arch, Backbone, Mode, ParamStore};

fn fixture() -> std::collections::HashMap<String, Tensor> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dm_wrn_10_1.safetensors");
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b): (Vec<f32>, Vec<f32>) =
        (a.flatten_all().unwrap().to_vec1().unwrap(), b.flatten_all().unwrap().to_vec1().unwrap());
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn deepmind_wideresnet_matches_pytorch_in_both_modes() {
    let f = fixture();
    let arch: Arch = "dm-wrn-10-1".parse().unwrap();
    assert_eq!(arch, Arch::DeepMindWideResNet { depth: 10, widen: 1 });
    assert_eq!(arch.name(), "dm-wrn-10-1");
    let store = ParamStore::new(Device::Cpu, 0);
    let b = Backbone::new(&store.root(), &arch, 3).unwrap();
    let state: BTreeMap<String, Tensor> = f
        .iter()
        .filter(|(k, _)| !k.starts_with("input") && !k.starts_with("features") && !k.starts_with("after_train"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    store.load_state(&state).unwrap_or_else(|report| panic!("the fixture's names are robal-rs's:\n{report}"));
    let x = &f["input"];
    // Evaluation mode: running statistics; the output size of each stride-2 convolution
    // (12 -> 6 -> 3) depends on the bottom/right padding.
    let eval = b.forward(x, Mode::Eval, 0).unwrap();
    let err = max_rel_err(&eval, &f["features.eval"]);
    assert!(err < 1e-4, "evaluation features differ from PyTorch by {err}");
    // Training mode: batch statistics, and the running ones updated with momentum 0.01.
    let train = b.forward(x, Mode::Train, 0).unwrap();
    let err = max_rel_err(&train, &f["features.train"]);
    assert!(err < 1e-4, "training features differ from PyTorch by {err}");
    let after = store.state();
    let mut checked = 0;
    for (name, want) in f.iter().filter(|(k, _)| k.starts_with("after_train.")) {
        let got = &after[name.trim_start_matches("after_train.")];
        let err = max_rel_err(got, want);
        assert!(err < 1e-5, "{name}: running statistic differs by {err}");
        checked += 1;
    }
    assert_eq!(checked, 2 * 7, "seven BatchNorms, mean and variance each");
    // The standard WRN on the same tensors computes something else (padding, momentum).
    let store2 = ParamStore::new(Device::Cpu, 0);
    let standard = Backbone::new(&store2.root(), &"wrn-10-1".parse().unwrap(), 3).unwrap();
    store2.load_state(&state).unwrap();
    assert!(max_rel_err(&standard.forward(x, Mode::Eval, 0).unwrap(), &f["features.eval"]) > 1e-3);
}
