//! Against PyTorch: parameter counts of the reference architectures and the
//! reference WideResNet's outputs, imported from its own checkpoints.
//! Fixtures: `tests/fixtures/make_pytorch_fixtures.py` (its docstring says how).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use robal_models::checkpoint::{import_pytorch, map_reference_name};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn model(arch: Arch, head: HeadConfig, classes: usize) -> Classifier {
    let config = ModelConfig { arch, in_channels: 3, num_classes: classes, head, normalization: None };
    Classifier::new(config, &Device::Cpu, 0).unwrap()
}

#[test]
fn parameter_counts_equal_pytorch() {
    let counts: HashMap<String, usize> =
        serde_json::from_str(&std::fs::read_to_string(fixture("param_counts.json")).unwrap()).unwrap();
    let cosine = HeadConfig::Cosine { scale: 10.0, gamma: 0.03125, bias: false };
    let mut checked = 0;
    for (key, &want) in &counts {
        let parts: Vec<&str> = key.split('/').collect();
        if parts.contains(&"with-sub-block1") {
            continue; // the reference's unused sub_block1 is not part of the model
        }
        let (arch, head, classes) = (parts[0], parts[1], parts[2].parse::<usize>().unwrap());
        if (arch.starts_with("wrn-34") || arch.starts_with("wrn-28")) && classes != 10 {
            continue; // the big WRNs once each: building them takes a while in debug
        }
        let head = if head == "cosine" { cosine } else { HeadConfig::Fc };
        let m = model(arch.parse().unwrap(), head, classes);
        assert_eq!(m.store().num_params(), want, "{key}");
        checked += 1;
    }
    // 22 entries without sub_block1, minus the 4 big-WRN 100-class ones.
    assert_eq!(checked, 18);
}

fn io(name: &str) -> HashMap<String, Tensor> {
    candle_core::pickle::read_all(fixture(name)).unwrap().into_iter().collect()
}

fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let d: f32 = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    let s: f32 = b.abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    d / s.max(1e-6)
}

fn check_reference(head_name: &str, head: HeadConfig) {
    let m = model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, head, 10);
    import_pytorch(&m, &fixture(&format!("reference_wrn10_1_{head_name}.pt"))).unwrap();
    let io = io(&format!("reference_wrn10_1_{head_name}_io.pt"));
    let x = &io["x"];
    let eval = m.forward(x, Mode::Eval).unwrap();
    assert!(max_rel_err(&eval, &io["logits_eval"]) < 1e-4, "eval logits differ from PyTorch");
    let again = m.forward(x, Mode::Eval).unwrap();
    assert_eq!(eval.to_vec2::<f32>().unwrap(), again.to_vec2::<f32>().unwrap(), "eval changes nothing");
    let train = m.forward(x, Mode::Train).unwrap();
    assert!(max_rel_err(&train, &io["logits_train"]) < 1e-4, "train-mode logits differ from PyTorch");
    let state = m.store().state();
    assert!(max_rel_err(&state["backbone.bn1.running_mean"], &io["running_mean_after"]) < 1e-5);
    assert!(max_rel_err(&state["backbone.bn1.running_var"], &io["running_var_after"]) < 1e-5);
}

#[test]
fn reference_wideresnet_with_cosine_head_matches_pytorch() {
    check_reference("cosine", HeadConfig::ROBAL_EVAL);
}

#[test]
fn reference_wideresnet_with_fc_head_matches_pytorch() {
    check_reference("fc", HeadConfig::Fc);
}

#[test]
fn reference_names_map_to_ours() {
    assert_eq!(
        map_reference_name("model.module.backbone.block1.layer.0.conv1.weight").as_deref(),
        Some("backbone.block1.layer.0.conv1.weight")
    );
    assert_eq!(map_reference_name("model.module.classifier.fc.weight").as_deref(), Some("head.weight"));
    assert_eq!(map_reference_name("model.module.classifier.weight").as_deref(), Some("head.weight"));
    assert_eq!(map_reference_name("model.module.backbone.bn1.num_batches_tracked"), None);
    assert_eq!(map_reference_name("module.backbone.sub_block1.layer.0.conv1.weight"), None);
}

#[test]
fn importing_into_the_wrong_architecture_lists_the_differences() {
    let m = model(Arch::WideResNet { depth: 10, widen: 2, dropout: 0.0 }, HeadConfig::ROBAL_EVAL, 10);
    let e = import_pytorch(&m, &fixture("reference_wrn10_1_cosine.pt")).unwrap_err().to_string();
    assert!(e.contains("reference_wrn10_1_cosine.pt"), "{e}");
    assert!(
        e.contains("shape mismatch: backbone.block1.layer.0.conv1.weight: file [16, 16, 3, 3], model [32, 16, 3, 3]"),
        "{e}"
    );
    let m = model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, HeadConfig::Fc, 10);
    let e = import_pytorch(&m, &fixture("reference_wrn10_1_cosine.pt")).unwrap_err().to_string();
    assert!(e.contains("missing: head.bias [10]"), "{e}");
    let e = import_pytorch(&m, &fixture("nope.pt")).unwrap_err().to_string();
    assert!(e.contains("nope.pt: checkpoint not found"), "{e}");
}
