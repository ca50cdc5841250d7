//! Against PyTorch: parameter counts of the reference architectures and the
//! reference WideResNet's outputs, imported from its own checkpoints.
//! Fixtures: `tests/fixtures/make_pytorch_fixtures.py` (its docstring says how).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use robal_models::checkpoint::{import_pytorch, import_pytorch_with_normalization, map_reference_name};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

#[path = "../../../tests/fixtures/lowbias32.rs"]
mod lowbias32;
use lowbias32::{lowbias32, to_unit};

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
        let head = if head == "cosine" { cosine } else { HeadConfig::FC };
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
    check_reference("fc", HeadConfig::FC);
}

/// A RobustBench-style WRN (names at top level, `fc`, `mu`/`sigma` normalisation
/// buffers used inside its forward) gives PyTorch's logits once its normalisation is
/// set on the model.
#[test]
fn robustbench_wideresnet_with_its_normalisation_matches_pytorch() {
    let mut m = model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, HeadConfig::FC, 10);
    let norm = import_pytorch_with_normalization(&m, &fixture("robustbench_wrn10_1.pt")).unwrap();
    let norm = norm.expect("mu/sigma read from the checkpoint");
    assert_eq!(norm.mean, vec![0.4914, 0.4822, 0.4465]);
    assert_eq!(norm.std, vec![0.2471, 0.2435, 0.2616]);
    let io = io("robustbench_wrn10_1_io.pt");
    let without = m.forward(&io["x"], Mode::Eval).unwrap();
    assert!(max_rel_err(&without, &io["logits"]) > 1e-2, "the normalisation matters");
    m.set_normalization(Some(norm)).unwrap();
    let err = max_rel_err(&m.forward(&io["x"], Mode::Eval).unwrap(), &io["logits"]);
    assert!(err < 1e-5, "logits differ from PyTorch by {err}");
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
    let m = model(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, HeadConfig::FC, 10);
    let e = import_pytorch(&m, &fixture("reference_wrn10_1_cosine.pt")).unwrap_err().to_string();
    assert!(e.contains("missing: head.bias [10]"), "{e}");
    let e = import_pytorch(&m, &fixture("nope.pt")).unwrap_err().to_string();
    assert!(e.contains("nope.pt: checkpoint not found"), "{e}");
}

/// Our tensor names written in a foreign layout: `backbone.` dropped, the head renamed.
fn foreign(names: &[String], head: &str, wrap: &str) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            let bare = n.strip_prefix("backbone.").map(str::to_string).unwrap_or_else(|| n.replacen("head.", head, 1));
            format!("{wrap}{bare}")
        })
        .collect()
}

#[test]
fn common_pytorch_layouts_map_onto_every_tensor() {
    use robal_models::{Arch, Classifier, HeadConfig, ModelConfig};
    // (arch, the layout's head prefix, a wrapper prefix, one name the layout really uses)
    let cases = [
        (Arch::ResNet18, "linear.", "", "layer2.0.shortcut.0.weight"),
        (Arch::PreActResNet18, "linear.", "module.", "layer4.1.bn2.running_var"),
        ("wrn-28-10".parse::<Arch>().unwrap(), "fc.", "model.", "block2.layer.0.convShortcut.weight"),
        (Arch::ResNet18ImageNet, "fc.", "", "layer3.0.downsample.1.running_mean"),
        (Arch::ResNet50ImageNet, "fc.", "module.", "layer1.0.conv3.weight"),
    ];
    for (arch, head, wrap, sample) in cases {
        let cfg = ModelConfig { arch, in_channels: 3, num_classes: 10, head: HeadConfig::FC, normalization: None };
        let m = Classifier::new(cfg, &Device::Cpu, 0).unwrap();
        let ours: Vec<String> = m.store().state().into_keys().collect();
        let theirs = foreign(&ours, head, wrap);
        assert!(theirs.iter().any(|n| n.ends_with(sample)), "{arch:?}: the layout has {sample}");
        let mut back: Vec<String> = theirs.iter().filter_map(|n| map_reference_name(n)).collect();
        back.sort();
        assert_eq!(back, ours, "{arch:?} from the {head}* layout");
    }
    // Wrapper tensors and BatchNorm counters are not weights.
    for skipped in ["mu", "model.sigma", "module.mean", "std", "bn1.num_batches_tracked"] {
        assert_eq!(map_reference_name(skipped), None, "{skipped}");
    }
    assert_eq!(map_reference_name("fc.bias").as_deref(), Some("head.bias"));
    assert_eq!(map_reference_name("module.model.conv1.weight").as_deref(), Some("backbone.conv1.weight"));
}

#[test]
fn set_normalization_changes_the_inputs_the_backbone_sees() {
    use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig, Normalization};
    let cfg =
        ModelConfig { arch: Arch::SmallCnn, in_channels: 3, num_classes: 4, head: HeadConfig::FC, normalization: None };
    let mut m = Classifier::new(cfg, &Device::Cpu, 0).unwrap();
    let x = candle_core::Tensor::rand(0f32, 1.0, (2, 3, 16, 16), &Device::Cpu).unwrap();
    let n = Normalization { mean: vec![0.5, 0.4, 0.3], std: vec![0.2, 0.25, 0.3] };
    let mean = candle_core::Tensor::new(n.mean.as_slice(), &Device::Cpu).unwrap().reshape((1, 3, 1, 1)).unwrap();
    let std = candle_core::Tensor::new(n.std.as_slice(), &Device::Cpu).unwrap().reshape((1, 3, 1, 1)).unwrap();
    let manual = m.forward(&x.broadcast_sub(&mean).unwrap().broadcast_div(&std).unwrap(), Mode::Eval).unwrap();
    m.set_normalization(Some(n)).unwrap();
    let inside = m.forward(&x, Mode::Eval).unwrap();
    let d = (manual - inside).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-5, "{d}");
    assert!(m.config().normalization.is_some());
    let bad = Normalization { mean: vec![0.0; 3], std: vec![1.0, 0.0, 1.0] };
    assert!(m.set_normalization(Some(bad)).is_err());
}

/// n values in [0, 1) of stream `stream` (the script's `hashed`).
fn hashed(stream: u32, n: usize) -> Vec<f64> {
    let s = lowbias32(stream);
    (0..n).map(|i| to_unit(lowbias32(s ^ i as u32))).collect()
}

/// The value the script gives tensor `name` (its `fill`).
fn fill(name: &str, shape: &[usize], stream: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let u = hashed(stream, n);
    let v: Vec<f32> = if name.ends_with("running_var") || (shape.len() == 1 && name.ends_with("weight")) {
        u.iter().map(|u| (0.5 + u) as f32).collect()
    } else if name.ends_with("running_mean") || name.ends_with("bias") {
        u.iter().map(|u| (0.4 * (u - 0.5)) as f32).collect()
    } else {
        let bound = (3.0 / (n / shape[0]) as f64).sqrt();
        u.iter().map(|u| ((2.0 * u - 1.0) * bound) as f32).collect()
    };
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// CIFAR ResNet-18 (kuangliu's `shortcut`/`linear`), PreAct-ResNet-18, and torchvision's
/// ResNet-18/50 (`downsample`/`fc`, 7x7 stem + max-pool, bottlenecks), each with every
/// tensor under its own PyTorch name: mapped by name onto ours, they give PyTorch's
/// float64 logits (`layouts_logits.json`, from the fixtures script; weights from a
/// counter-based hash both sides compute, since the checkpoints are 45-94 MB).
#[test]
fn common_pytorch_layouts_give_pytorchs_logits() {
    let fx: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("layouts_logits.json")).unwrap()).unwrap();
    for (key, arch) in [
        ("cifar-resnet18", Arch::ResNet18),
        ("cifar-preact-resnet18", Arch::PreActResNet18),
        ("torchvision-resnet18", Arch::ResNet18ImageNet),
        ("torchvision-resnet50", Arch::ResNet50ImageNet),
    ] {
        let f = &fx[key];
        let m = model(arch, HeadConfig::FC, 10);
        let mut state = std::collections::BTreeMap::new();
        let shapes = f["shapes"].as_array().unwrap();
        for (k, (name, shape)) in f["names"].as_array().unwrap().iter().zip(shapes).enumerate() {
            let (name, shape): (&str, Vec<usize>) = (
                name.as_str().unwrap(),
                shape.as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect(),
            );
            let ours = map_reference_name(name).unwrap_or_else(|| panic!("{key}: {name} has no place"));
            state.insert(ours, fill(name, &shape, k as u32 + 1));
        }
        m.store().load_state(&state).unwrap_or_else(|report| panic!("{key}:\n{report}"));
        let hw = f["input_hw"].as_u64().unwrap() as usize;
        let x: Vec<f32> = hashed(999, 2 * 3 * hw * hw).into_iter().map(|v| v as f32).collect();
        let x = Tensor::from_vec(x, (2, 3, hw, hw), &Device::Cpu).unwrap();
        let want: Vec<Vec<f32>> = f["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
            .collect();
        let want = Tensor::new(want, &Device::Cpu).unwrap();
        let err = max_rel_err(&m.forward(&x, Mode::Eval).unwrap(), &want);
        println!("{key}: max relative logit error {err:.1e}");
        assert!(err < 1e-4, "{key}: logits differ from PyTorch by {err}");
    }
}

/// Byte offsets in a zip of the local header of entry `name` and of its data (stored
/// entries: torch.save does not compress). Local header: signature, ..., name length at
/// 26, extra length at 28, then the name, the extra field and the data.
fn zip_entry(bytes: &[u8], name: &str) -> (usize, usize) {
    let header = (0..bytes.len() - 30)
        .find(|&i| bytes[i..i + 4] == *b"PK\x03\x04" && bytes[i + 30..].starts_with(name.as_bytes()))
        .unwrap_or_else(|| panic!("no local header for {name}"));
    let le = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    (header, header + 30 + le(header + 26) + le(header + 28))
}

/// PyTorch stores a CRC32 per zip entry and neither candle nor `torch.load` checks it:
/// a flipped byte inside a tensor's data loaded silently. robal-rs checks it: the flip is
/// refused naming the file and the entry, while a flip in a field the checksum does not
/// cover (the entry's modification time) is no false alarm.
#[test]
fn a_flipped_byte_in_tensor_data_is_refused_and_a_flipped_timestamp_is_not() {
    let original = std::fs::read(fixture("reference_wrn10_1_fc.pt")).unwrap();
    let entry = "reference_wrn10_1_fc/data/0";
    let (header, data) = zip_entry(&original, entry);
    let tmp = tempfile::tempdir().unwrap();
    let fc = HeadConfig::FC;
    let arch = Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 };

    let mut flipped = original.clone();
    flipped[data + 100] ^= 0x01; // one bit of the first convolution's weights
    let p = tmp.path().join("flipped.pt");
    std::fs::write(&p, &flipped).unwrap();
    let e = import_pytorch(&model(arch, fc, 10), &p).unwrap_err().to_string();
    assert!(e.contains("flipped.pt") && e.contains(entry) && e.contains("CRC32"), "{e}");

    let mut touched = original.clone();
    touched[header + 10] ^= 0x01; // last-modified time of the same entry's local header
    let q = tmp.path().join("touched.pt");
    std::fs::write(&q, &touched).unwrap();
    let (a, b) = (model(arch, fc, 10), model(arch, fc, 10));
    import_pytorch(&a, &fixture("reference_wrn10_1_fc.pt")).unwrap();
    import_pytorch(&b, &q).unwrap();
    for ((n, x), (_, y)) in a.store().state().iter().zip(b.store().state().iter()) {
        let d = (x - y).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(d, 0.0, "{n}");
    }
}

/// PyTorch's legacy format (`_use_new_zipfile_serialization=False`, as checkpoints
/// before torch 1.6 were): the same reference WRN gives PyTorch's logits, and a
/// training checkpoint `{"epoch", "state_dict"}` of the RobustBench layout keeps its
/// normalisation wrapper.
#[test]
fn legacy_pytorch_checkpoints_give_pytorchs_logits() {
    let arch = Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 };
    let m = model(arch, HeadConfig::FC, 10);
    import_pytorch(&m, &fixture("reference_wrn10_1_fc_legacy.pt")).unwrap();
    let fc_io = io("reference_wrn10_1_fc_io.pt");
    let err = max_rel_err(&m.forward(&fc_io["x"], Mode::Eval).unwrap(), &fc_io["logits_eval"]);
    assert!(err < 1e-4, "eval logits differ from PyTorch by {err}");
    // Bit for bit the tensors of the zip file it was re-saved from.
    let zip = model(arch, HeadConfig::FC, 10);
    import_pytorch(&zip, &fixture("reference_wrn10_1_fc.pt")).unwrap();
    for ((n, x), (_, y)) in m.store().state().iter().zip(zip.store().state().iter()) {
        assert_eq!(
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{n}"
        );
    }

    let mut rb = model(arch, HeadConfig::FC, 10);
    let norm = import_pytorch_with_normalization(&rb, &fixture("robustbench_wrn10_1_legacy.pt")).unwrap();
    rb.set_normalization(norm).unwrap();
    let rb_io = io("robustbench_wrn10_1_io.pt");
    let err = max_rel_err(&rb.forward(&rb_io["x"], Mode::Eval).unwrap(), &rb_io["logits"]);
    assert!(err < 1e-5, "logits differ from PyTorch by {err}");
}

/// Damaged legacy files: cut anywhere in the header pickles, the saved object, the key
/// list, an element count or the data, or a flipped magic or protocol byte, each is
/// an error naming the file and what is wrong. A flipped byte inside tensor data loads
/// (the format has no checksum; the evaluation says so when it loads one).
#[test]
fn damaged_legacy_checkpoints_are_refused_by_name() {
    let original = std::fs::read(fixture("reference_wrn10_1_fc_legacy.pt")).unwrap();
    let arch = Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 };
    let tmp = tempfile::tempdir().unwrap();
    let try_import = |bytes: &[u8]| {
        let p = tmp.path().join("legacy.pt");
        std::fs::write(&p, bytes).unwrap();
        import_pytorch(&model(arch, HeadConfig::FC, 10), &p).map_err(|e| e.to_string())
    };
    let n = original.len();
    for (cut, want) in [
        (10, "not a readable PyTorch checkpoint"),
        (18, "protocol version"),
        (40, "system information"),
        (2_000, "saved object"),
        (n - 40, "truncated"),
        (n - 1, "truncated"),
    ] {
        let e = try_import(&original[..cut]).unwrap_err();
        assert!(e.contains("legacy.pt") && e.contains(want), "cut at {cut}: {e}");
    }
    let mut garbled = original.clone();
    garbled[17] ^= 0x01; // the protocol version 1001 becomes 1000
    let e = try_import(&garbled).unwrap_err();
    assert!(e.contains("legacy.pt") && e.contains("protocol version"), "{e}");
    let mut longer = original.clone();
    longer.extend_from_slice(b"junk");
    let e = try_import(&longer).unwrap_err();
    assert!(e.contains("4 unexpected bytes after the last storage"), "{e}");
    let mut data = original.clone();
    data[n - 1000] ^= 0x40;
    try_import(&data).expect("no checksum to catch a flipped data byte");
}
