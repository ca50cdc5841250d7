//! The trainer end to end on small slices of the embedded MNIST-LT set.

use std::path::{Path, PathBuf};

use candle_core::Device;
use robal::train::{train, RunOptions};
use robal::{TrainConfig, TrainError};
use robal_data::Dataset;

fn preset(name: &str, extra: &[&str]) -> TrainConfig {
    let mut o: Vec<String> = [
        "data.limit=128",
        "train.batch_size=32",
        "attack.steps=1",
        "eval.limit=32",
        "eval.steps=2",
        "train.epochs=3",
        "train.milestones=[2]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.extend(extra.iter().map(|s| s.to_string()));
    TrainConfig::load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(name), &o).unwrap()
}

fn opts(dir: &Path) -> RunOptions {
    RunOptions { run_dir: dir.to_path_buf(), resume: false, progress: false, stop_after: None, overwrite: false }
}

fn weights(path: &Path) -> Vec<(String, Vec<u32>)> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<u32>)> = t
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()).collect()))
        .collect();
    v.sort();
    v
}

#[test]
fn stopped_and_resumed_run_equals_uninterrupted_run() {
    let cfg = preset("mnist-lt-robal.toml", &[]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = train(&cfg, &opts(a.path()), &Device::Cpu).unwrap();
    assert_eq!(full.epochs_run, 3);
    let part = train(&cfg, &RunOptions { stop_after: Some(1), ..opts(b.path()) }, &Device::Cpu).unwrap();
    assert_eq!(part.epochs_run, 1);
    assert!(!b.path().join("model.safetensors").exists(), "an interrupted run has no final model");
    // A kill after the next epoch's momentum and metrics were written but before its
    // checkpoint: a stray optimizer-2 file and a logged epoch 2. Resume must ignore both.
    let opt1 = b.path().join("optimizer-1.safetensors");
    assert!(opt1.is_file());
    std::fs::write(b.path().join("optimizer-2.safetensors"), b"partial garbage").unwrap();
    let mut m = std::fs::OpenOptions::new().append(true).open(b.path().join("metrics.jsonl")).unwrap();
    std::io::Write::write_all(&mut m, b"{\"epoch\":2,\"loss\":9.9}\n").unwrap();
    let rest = train(&cfg, &RunOptions { resume: true, ..opts(b.path()) }, &Device::Cpu).unwrap();
    assert_eq!(rest.epochs_run, 2);
    assert_eq!(weights(&a.path().join("model.safetensors")), weights(&b.path().join("model.safetensors")));
    let metrics = std::fs::read_to_string(b.path().join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "one line per epoch across the interruption");
    assert!(!metrics.contains("9.9"), "the uncheckpointed epoch's line was dropped");
    let opts_left: Vec<String> = std::fs::read_dir(b.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("optimizer"))
        .collect();
    assert_eq!(opts_left, vec!["optimizer-3.safetensors".to_string()]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("train_eval.json")).unwrap()).unwrap();
    assert_eq!(report["eval"]["clean"]["per_class"].as_array().unwrap().len(), 10);
    // Resuming with another config is refused.
    let other = preset("mnist-lt-robal.toml", &["train.lr=0.05"]);
    let e = train(&other, &RunOptions { resume: true, ..opts(b.path()) }, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("config differs"), "{e}");
}

#[test]
fn non_finite_loss_stops_naming_epoch_step_and_last_checkpoint() {
    // The learning rate explodes at epoch 2: its first step makes the weights infinite,
    // the second step's loss is NaN.
    let cfg = preset(
        "mnist-lt-pgd-at.toml",
        &["train.mode=\"plain\"", "train.milestones=[1]", "train.lr_gamma=1e38", "train.lr=10.0"],
    );
    let dir = tempfile::tempdir().unwrap();
    let e = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap_err();
    let TrainError::NonFinite { epoch, step, checkpoint, .. } = &e else { panic!("{e}") };
    assert_eq!((*epoch, *step), (2, 2), "{e}");
    assert!(checkpoint.ends_with("checkpoint.safetensors"), "{e}");
    let (_, info) = robal_models::checkpoint::load(Path::new(checkpoint), &Device::Cpu).unwrap();
    assert_eq!(info.epoch, 1, "the last good checkpoint is epoch 1's");
}

#[test]
fn baselines_run_pgd_at_trades_plain_and_two_stage() {
    for (preset_name, extra) in [
        ("mnist-lt-pgd-at.toml", vec!["train.epochs=1"]),
        ("mnist-lt-pgd-at.toml", vec!["train.epochs=1", "train.mode=\"trades\"", "train.beta_reg=6.0"]),
        (
            "mnist-lt-pgd-at.toml",
            vec![
                "train.epochs=1",
                "data.sampler=\"class-balanced\"",
                "train.reweight={ kind = \"drw\", beta = 0.999, from_epoch = 0 }",
            ],
        ),
        ("mnist-lt-pgd-at.toml", vec!["train.epochs=1", "stage2={ kind = \"lws\", epochs = 1, lr = 0.01 }"]),
        ("mnist-lt-pgd-at.toml", vec!["train.epochs=1", "stage2={ kind = \"crt\", epochs = 1, lr = 0.01 }"]),
        (
            "mnist-lt-pgd-at.toml",
            vec!["train.epochs=1", "model.eval_head={ kind = \"tau-norm\", tau = 1.0 }", "model.posthoc_tau=1.0"],
        ),
    ] {
        let cfg = preset(preset_name, &extra);
        let dir = tempfile::tempdir().unwrap();
        let s = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(s.eval.clean.overall.is_finite());
        let (m, _) = robal_models::checkpoint::load(&dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
        if extra.iter().any(|e| e.contains("lws")) {
            assert_eq!(m.config().head, robal_models::HeadConfig::LWS);
        }
    }
}

#[test]
fn newer_methods_train_taet_reat_awp_class_budgets_and_augmentation_policies() {
    for extra in [
        vec!["train.mode=\"taet\"", "train.clean_epochs=1", "attack.random_start=\"normal\"", "loss={ kind = \"ce\" }"],
        vec!["awp={ gamma = 0.01 }"],
        vec!["awp={ gamma = 0.005, proxy = \"optimizer\" }", "train.nesterov=true", "attack.batch_norm=\"batch\""],
        vec!["train.mode=\"trades\"", "train.beta_reg=6.0", "awp={ gamma = 0.005, from_epoch = 1 }"],
        vec!["attack.class_budget={ alpha = 0.3, beta = 0.8 }", "loss={ kind = \"logit-adjusted\", tau = 1.0 }"],
        vec!["attack.class_budget={ alpha = 0.3, beta = 0.0, shared_start = true }", "attack.random_start=\"off\""],
        vec!["train.mode=\"reat\"", "loss={ kind = \"logit-adjusted\", tau = 1.0 }"],
        vec!["train.mode=\"reat\"", "reat={ tail = \"official\", clamp_counts = false }"],
        vec!["data.policy={ kind = \"rand-augment\", n = 2, m = 8 }", "data.padding=\"reflect\""],
        vec!["data.policy={ kind = \"auto-augment\" }"],
        vec!["data.policy={ kind = \"trivial-augment\" }"],
    ] {
        let mut o = vec!["train.epochs=2", "train.milestones=[1]"];
        o.extend(extra.iter().copied());
        let cfg = preset("mnist-lt-pgd-at.toml", &o);
        let dir = tempfile::tempdir().unwrap();
        let s = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
        assert!(s.eval.clean.overall.is_finite(), "{extra:?}");
        if extra.iter().any(|e| e.contains("reat")) {
            // The prediction counts of the last epoch travel with the checkpoint.
            let (_, info) =
                robal_models::checkpoint::load(&dir.path().join("checkpoint.safetensors"), &Device::Cpu).unwrap();
            let state: serde_json::Value = serde_json::from_str(&info.extra["objective_state"]).unwrap();
            let current: u64 = state["current"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).sum();
            assert_eq!(current, 128, "{extra:?}: one prediction per image of the last epoch (4 batches of 32)");
        }
        let lines = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        for l in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["loss"].as_f64().is_some_and(f64::is_finite), "{extra:?}: {l}");
        }
    }
}

/// One training step of `preset_name` (40 images, batch 32, drop_last, no augmentation)
/// with `overrides`, and the saved checkpoint.
fn one_step(preset_name: &str, overrides: &[&str]) -> Vec<(String, Vec<u32>)> {
    let mut o = vec!["data.limit=40", "data.augment=false", "train.epochs=1", "train.milestones=[]"];
    o.extend_from_slice(overrides);
    let cfg = preset(preset_name, &o);
    let dir = tempfile::tempdir().unwrap();
    train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
    weights(&dir.path().join("checkpoint.safetensors"))
}

/// How many BatchNorm running statistics differ between checkpoints `a` and `b`; every
/// other tensor (but the batch counters) must agree: within `rel` of its largest entry,
/// or bit for bit when `rel` is `None`.
fn differing_statistics(a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)], rel: Option<f32>, what: &str) -> usize {
    let mut differ = 0;
    for ((name, a), (name_b, b)) in a.iter().zip(b) {
        assert_eq!(name, name_b);
        if name.contains("running") {
            differ += usize::from(a != b);
        } else if name.contains("num_batches") {
            continue;
        } else if let Some(rel) = rel {
            let (a, b): (Vec<f32>, Vec<f32>) =
                (a.iter().map(|&v| f32::from_bits(v)).collect(), b.iter().map(|&v| f32::from_bits(v)).collect());
            let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(diff <= rel * scale, "{what}: {name} must get the same update ({diff} of {scale})");
        } else {
            assert_eq!(a, b, "{what}: {name} must not change");
        }
    }
    differ
}

#[test]
fn reference_pass_order_moves_batchnorm_statistics_once_more_with_the_same_gradients() {
    for mode in ["robal", "trades"] {
        let run = |passes: &str| {
            let (mode, passes) = (format!("train.mode=\"{mode}\""), format!("train.bn_passes=\"{passes}\""));
            one_step("mnist-lt-robal.toml", &[&mode, &passes])
        };
        // Same gradient up to float32 summation order (the KL term's path through the
        // graph is another node): within 1e-5 of the tensor's scale.
        let stats_differ = differing_statistics(&run("minimal"), &run("reference"), Some(1e-5), mode);
        assert!(stats_differ > 0, "{mode}: the extra pass updates the running statistics");
    }
}

#[test]
fn awp_optimizer_proxy_keeps_the_proxy_passs_batchnorm_update() {
    // Without momentum and weight decay the optimiser's first step on -L is lr g, the
    // gradient proxy's direction: the weights agree (to float32 rounding of the lr
    // scaling) and only the running statistics tell the two apart, RobustLT's proxy pass
    // having run on the model itself.
    let run = |proxy: &str| {
        let awp = format!("awp={{ gamma = 0.01, proxy = \"{proxy}\" }}");
        one_step("mnist-lt-pgd-at.toml", &["train.momentum=0.0", "train.weight_decay=0.0", &awp])
    };
    let stats_differ = differing_statistics(&run("gradient"), &run("optimizer"), Some(1e-5), "awp proxies");
    assert!(stats_differ > 0, "the optimizer proxy keeps its pass's BatchNorm update");
}

#[test]
fn robustlt_log_passes_move_only_the_batchnorm_statistics() {
    // RobustLT's accuracy log runs the model in train mode after each update: the
    // weights are bit-identical with and without it, the running statistics are not.
    let run = |log: bool| one_step("mnist-lt-pgd-at.toml", &[&format!("train.log_passes={log}")]);
    let stats_differ = differing_statistics(&run(false), &run(true), None, "log passes");
    assert!(stats_differ > 0, "the logging passes update the running statistics");
}

#[test]
fn every_new_objective_resumes_bit_for_bit() {
    for extra in [
        vec!["awp={ gamma = 0.01, from_epoch = 1 }"],
        vec!["awp={ gamma = 0.005, proxy = \"optimizer\" }", "train.nesterov=true", "train.log_passes=true"],
        vec!["train.mode=\"reat\"", "loss={ kind = \"logit-adjusted\", tau = 1.0 }"],
        vec!["train.mode=\"taet\"", "train.clean_epochs=1", "loss={ kind = \"ce\" }"],
        vec![
            "attack.class_budget={ alpha = 0.3, beta = 0.8 }",
            "data.policy={ kind = \"rand-augment\", n = 2, m = 8 }",
        ],
    ] {
        let cfg = preset("mnist-lt-pgd-at.toml", &extra);
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        train(&cfg, &opts(a.path()), &Device::Cpu).unwrap();
        train(&cfg, &RunOptions { stop_after: Some(1), ..opts(b.path()) }, &Device::Cpu).unwrap();
        train(&cfg, &RunOptions { resume: true, ..opts(b.path()) }, &Device::Cpu).unwrap();
        assert_eq!(
            weights(&a.path().join("model.safetensors")),
            weights(&b.path().join("model.safetensors")),
            "{extra:?}: resumed run differs"
        );
    }
}

#[test]
fn validation_split_is_held_out_per_class_and_seeded() {
    use robal_data::Dataset;
    let train = robal_data::load_embedded("mnist-lt", robal_data::Split::Train).unwrap();
    let counts = train.label_counts();
    let (rest, val) = robal::selection::split_validation(train.clone(), 0.2, 5).unwrap();
    let val = val.unwrap();
    let want: Vec<usize> = counts.iter().map(|&n| n / 5).collect();
    assert_eq!(val.label_counts(), want, "floor(0.2 n_c) per class");
    let rest_counts: Vec<usize> = counts.iter().zip(&want).map(|(n, v)| n - v).collect();
    assert_eq!(rest.label_counts(), rest_counts);
    assert_eq!(rest.classes().train_counts(), rest_counts.as_slice(), "prior and shot groups follow the rest");
    // Disjoint: every training image appears in exactly one part.
    let key = |s: &robal_data::ImageSet, i: usize| s.image(i).to_vec();
    let mut all: Vec<Vec<u8>> =
        (0..rest.len()).map(|i| key(&rest, i)).chain((0..val.len()).map(|i| key(&val, i))).collect();
    let mut orig: Vec<Vec<u8>> = (0..train.len()).map(|i| key(&train, i)).collect();
    all.sort();
    orig.sort();
    assert_eq!(all, orig);
    let (_, again) = robal::selection::split_validation(train.clone(), 0.2, 5).unwrap();
    assert_eq!(again.unwrap().pixels(), val.pixels(), "same seed, same split");
    let (_, other) = robal::selection::split_validation(train, 0.2, 6).unwrap();
    assert_ne!(other.unwrap().pixels(), val.pixels(), "another seed, another split");
}

#[test]
fn best_epoch_on_the_validation_split_is_kept_and_survives_a_resume() {
    let cfg = preset("mnist-lt-pgd-at.toml", &["data.limit=200", "data.validation=0.3", "eval.every=1"]);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let full = train(&cfg, &opts(a.path()), &Device::Cpu).unwrap();
    let sel = full.selection.clone().expect("a selection report");
    let metrics = std::fs::read_to_string(a.path().join("metrics.jsonl")).unwrap();
    let values: Vec<(u64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["epoch"].as_u64()?, v["validation_balanced_pgd"].as_f64()?))
        })
        .collect();
    assert_eq!(values.len(), 3, "one validation evaluation per epoch: {metrics}");
    let max = values.iter().map(|v| v.1).fold(f64::MIN, f64::max);
    let first_best = values.iter().find(|v| v.1 == max).unwrap().0 as usize;
    assert_eq!((sel.epoch, sel.value), (first_best, max));
    assert!(sel.criterion.contains("pgd-2") && sel.criterion.contains("validation images"), "{}", sel.criterion);
    let (_, info) = robal_models::checkpoint::load(&a.path().join("best.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(info.epoch as usize, sel.epoch);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.path().join("train_eval.json")).unwrap()).unwrap();
    assert_eq!(report["selection"]["epoch"].as_u64(), Some(sel.epoch as u64));
    // Interrupted after epoch 1 and resumed: the same epoch is kept with the same weights.
    train(&cfg, &RunOptions { stop_after: Some(1), ..opts(b.path()) }, &Device::Cpu).unwrap();
    let resumed = train(&cfg, &RunOptions { resume: true, ..opts(b.path()) }, &Device::Cpu).unwrap();
    assert_eq!(resumed.selection.unwrap(), sel);
    assert_eq!(weights(&a.path().join("best.safetensors")), weights(&b.path().join("best.safetensors")));
}

#[test]
fn selection_can_use_autoattack_on_a_validation_subset() {
    let cfg = preset(
        "mnist-lt-pgd-at.toml",
        &["data.limit=200", "data.validation=0.3", "eval.every=0", "eval.selection_autoattack=12"],
    );
    let dir = tempfile::tempdir().unwrap();
    let sel = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap().selection.expect("a selection report");
    assert_eq!(sel.epoch, 3, "evaluated at the last epoch only");
    assert!(sel.criterion.contains("aa-apgd-ce-t") && sel.criterion.contains("on 12 of the"), "{}", sel.criterion);
    assert!((0.0..=1.0).contains(&sel.value));
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"validation_balanced_autoattack\""), "{metrics}");
}

#[test]
fn mcat_selection_keeps_the_epoch_with_the_best_overall_pgd_on_the_test_set() {
    let o = ["eval.every=1", "eval.select_on_test=true", "train.epochs=2", "train.milestones=[]", "eval.steps=1"];
    let cfg = preset("mnist-lt-pgd-at.toml", &o);
    let dir = tempfile::tempdir().unwrap();
    let sel = train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap().selection.expect("a selection report");
    let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let values: Vec<(u64, f64)> = metrics
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["epoch"].as_u64()?, v["test_overall_pgd"].as_f64()?))
        })
        .collect();
    assert_eq!(values.len(), 2, "one test-set evaluation per epoch: {metrics}");
    let max = values.iter().map(|v| v.1).fold(f64::MIN, f64::max);
    assert_eq!((sel.epoch as u64, sel.value), (values.iter().find(|v| v.1 == max).unwrap().0, max));
    let (_, test) = robal::train::load_data(&cfg).unwrap();
    let n = test.len();
    assert!(sel.criterion.contains(&format!("pgd-1 accuracy on the {n} test images")), "{}", sel.criterion);
    // The value is the kept model's overall PGD accuracy on the whole test set, evaluated
    // again from best.safetensors.
    let (best, _) = robal_models::checkpoint::load(&dir.path().join("best.safetensors"), &Device::Cpu).unwrap();
    let pgd = robal_attacks::Pgd::linf(cfg.eval.eps, cfg.eval.step_size, cfg.eval.steps);
    let q = robal::evaluate::quick_eval(&best, &test, &pgd, 0, 128, 0, &Device::Cpu).unwrap();
    assert_eq!(q.images, n, "the whole test set");
    assert_eq!(q.pgd.overall, sel.value);
    // Selection on the test set and on a validation split exclude each other.
    let e = TrainConfig::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-lt-pgd-at.toml"),
        &["eval.select_on_test=true".into(), "data.validation=0.2".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("eval.select_on_test"), "{e}");
}

#[test]
fn tiny_imagenet_lt_trains_from_the_folder_layout() {
    // 20 classes x 5 JPEGs written here; r = 0.2 over the first 20 classes gives 5 ... 1.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("tiny-imagenet-200");
    let mut ann = String::new();
    for c in 0..20u8 {
        let wnid = format!("n{c:02}");
        let dir = root.join("train").join(&wnid).join("images");
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..5u8 {
            image::RgbImage::from_pixel(64, 64, image::Rgb([c * 12, k * 50, 128]))
                .save(dir.join(format!("{k}.JPEG")))
                .unwrap();
        }
        std::fs::create_dir_all(root.join("val/images")).unwrap();
        image::RgbImage::from_pixel(64, 64, image::Rgb([c * 12, 100, 128]))
            .save(root.join(format!("val/images/v{c}.JPEG")))
            .unwrap();
        ann.push_str(&format!("v{c}.JPEG\t{wnid}\t0\t0\t63\t63\n"));
    }
    std::fs::write(root.join("val/val_annotations.txt"), ann).unwrap();
    let dir = format!("data.dir=\"{}\"", tmp.path().display());
    let cfg = TrainConfig::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/tiny-imagenet-lt-20-robustlt-at-bsl.toml"),
        &[
            dir.as_str(),
            "data.ratio=0.2",
            "model.arch=\"small-cnn\"",
            "train.epochs=1",
            "train.batch_size=8",
            "train.milestones=[]",
            "attack.steps=1",
            "eval.limit=20",
            "eval.steps=1",
            "eval.every=0",
        ]
        .map(String::from),
    )
    .unwrap();
    let (train_set, _, test) = robal::train::load_splits(&cfg).unwrap();
    use robal_data::Dataset;
    assert_eq!(train_set.classes().train_counts()[0], 5);
    assert_eq!(train_set.classes().train_counts()[19], 1);
    assert_eq!((test.len(), test.shape().height), (20, 64));
    let out = tempfile::tempdir().unwrap();
    let s = train(&cfg, &opts(out.path()), &Device::Cpu).unwrap();
    assert_eq!(s.eval.images, 20);
}

fn tensor(ckpt: &[(String, Vec<u32>)], name: &str) -> Vec<f32> {
    let (_, bits) = ckpt.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not in the checkpoint"));
    bits.iter().map(|&b| f32::from_bits(b)).collect()
}

#[test]
fn fc_bias_quirks_start_and_train_as_the_reference_heads() {
    // Dot: the bias is drawn at init and never trained: the same after a step at any lr.
    let frozen =
        |lr: &str| one_step("mnist-lt-pgd-at.toml", &["model.head={ kind = \"fc\", bias = \"frozen-random\" }", lr]);
    let (a, b) = (frozen("train.lr=0.05"), frozen("train.lr=0.5"));
    assert_eq!(tensor(&a, "head.bias"), tensor(&b, "head.bias"), "a frozen bias does not move");
    assert_ne!(tensor(&a, "head.weight"), tensor(&b, "head.weight"), "the weight does");
    assert!(tensor(&a, "head.bias").iter().any(|&v| v != 0.0), "drawn at random, not zero");
    // Focal prior init: b_c = log(pi_c / (1 - pi_c)) of the training counts; one step at a
    // tiny lr leaves it there.
    let cfg = preset("mnist-lt-pgd-at.toml", &["data.limit=40", "model.head={ kind = \"fc\", bias = \"prior\" }"]);
    let (train_set, _) = robal::train::load_data(&cfg).unwrap();
    use robal_data::Dataset;
    let counts = train_set.classes().train_counts().to_vec();
    let total: usize = counts.iter().sum();
    let prior = one_step(
        "mnist-lt-pgd-at.toml",
        &["model.head={ kind = \"fc\", bias = \"prior\" }", "train.lr=1e-9", "train.weight_decay=0.0"],
    );
    for (c, (got, n)) in tensor(&prior, "head.bias").iter().zip(&counts).enumerate() {
        let pi = *n as f64 / total as f64;
        let want = (pi / (1.0 - pi)).ln();
        assert!((*got as f64 - want).abs() < 1e-5, "class {c}: {got} vs log-odds {want} of {counts:?}");
    }
}

#[test]
fn keeping_the_last_partial_batch_trains_on_it() {
    // 40 images, batch 32: drop_last trains one step on 32 images; keeping the last
    // batch (the code's drop_last=False) trains a second step on the other 8.
    let cfg = preset("mnist-lt-pgd-at.toml", &["data.drop_last=false"]);
    assert!(cfg.quirks().iter().any(|q| q.starts_with("data.drop_last")), "{:?}", cfg.quirks());
    let (dropped, kept) =
        (one_step("mnist-lt-pgd-at.toml", &[]), one_step("mnist-lt-pgd-at.toml", &["data.drop_last=false"]));
    assert_ne!(tensor(&dropped, "head.weight"), tensor(&kept, "head.weight"), "the last 8 images were trained on");
    // With no partial batch (batch = the subset's size) the option changes nothing, bit for bit.
    let n = robal_data::Dataset::len(
        &robal::train::load_data(&preset("mnist-lt-pgd-at.toml", &["data.limit=40"])).unwrap().0,
    );
    let batch = format!("train.batch_size={n}");
    let whole = |keep: &str| one_step("mnist-lt-pgd-at.toml", &[&batch, keep]);
    assert_eq!(whole("data.drop_last=true"), whole("data.drop_last=false"));
}

/// A one-epoch first stage on 40 images, then `stage2`: the stage-1 checkpoint and the final model.
/// A checkpoint's tensors as (name, f32 bits), sorted by name.
type Weights = Vec<(String, Vec<u32>)>;

fn two_stages(stage2: &str) -> (Weights, Weights) {
    let cfg = preset(
        "mnist-lt-pgd-at.toml",
        &["data.limit=40", "data.augment=false", "train.epochs=1", "train.milestones=[]", stage2],
    );
    let dir = tempfile::tempdir().unwrap();
    train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
    (weights(&dir.path().join("checkpoint.safetensors")), weights(&dir.path().join("model.safetensors")))
}

#[test]
fn second_stage_quirks_fine_tune_the_trained_head_in_train_mode() {
    let same = |a: &[(String, Vec<u32>)], b: &[(String, Vec<u32>)], pick: &dyn Fn(&str) -> bool| {
        let (fa, fb): (Vec<_>, Vec<_>) =
            (a.iter().filter(|(n, _)| pick(n)).collect(), b.iter().filter(|(n, _)| pick(n)).collect());
        assert!(!fa.is_empty());
        fa == fb
    };
    let running = |n: &str| n.contains("running");
    let backbone_weights = |n: &str| n.starts_with("backbone.") && !n.contains("running");
    // RS-fine at lr 0: the trained classifier is kept as it is; train-mode BatchNorm moves
    // the running statistics; the backbone's weights do not move.
    let (s1, kept) =
        two_stages("stage2={ kind = \"crt\", epochs = 1, lr = 0.0, keep_head = true, batch_norm = \"train\" }");
    assert_eq!(tensor(&s1, "head.weight"), tensor(&kept, "head.weight"), "keep_head starts from the trained FC");
    assert!(!same(&s1, &kept, &running), "train mode updates the running statistics");
    assert!(same(&s1, &kept, &backbone_weights), "the backbone is frozen");
    // cRT proper: a fresh head, frozen statistics.
    let (s1, fresh) = two_stages("stage2={ kind = \"crt\", epochs = 1, lr = 0.0 }");
    assert_ne!(tensor(&s1, "head.weight"), tensor(&fresh, "head.weight"), "a fresh head");
    assert!(same(&s1, &fresh, &running), "frozen statistics stay");
    // LWS without bias (PostNorm): the model's head adds no bias; the class-aware sampler runs.
    let cfg = preset(
        "mnist-lt-pgd-at.toml",
        &[
            "data.limit=40",
            "train.epochs=1",
            "stage2={ kind = \"lws\", epochs = 2, lr = 0.1, lws_bias = false, sampler = \"class-aware\" }",
        ],
    );
    assert_eq!(cfg.quirks().iter().filter(|q| q.starts_with("stage2.")).count(), 2, "{:?}", cfg.quirks());
    let dir = tempfile::tempdir().unwrap();
    train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
    let (m, _) = robal_models::checkpoint::load(&dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(m.config().head, robal_models::HeadConfig::Lws { bias: false });
    // The options are checked: keep_head is a crt option, lws_bias an lws one.
    for (bad, field) in [
        ("stage2={ kind = \"lws\", epochs = 1, lr = 0.1, keep_head = true }", "stage2.keep_head"),
        ("stage2={ kind = \"crt\", epochs = 1, lr = 0.1, lws_bias = false }", "stage2.lws_bias"),
    ] {
        let o = vec![bad.to_string()];
        let e = TrainConfig::load(
            &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-lt-pgd-at.toml"),
            &o,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(field), "{e}");
    }
}

#[test]
fn extra_passes_move_only_the_batchnorm_statistics_at_their_point() {
    // A statistics-only pass at any point leaves every weight bit-identical (train-mode
    // outputs do not depend on the running statistics) and moves the statistics; where
    // it happens matters (momentum updates do not commute).
    let run = |extra: &str| one_step("mnist-lt-pgd-at.toml", &[&format!("train.extra_passes={extra}")]);
    let none = run("[]");
    let mut seen = Vec::new();
    for extra in [
        "[{ at = \"before-outer\", input = \"clean\" }]",
        "[{ at = \"after-outer\", input = \"clean\" }]",
        "[{ at = \"after-update\", input = \"clean\" }]",
        "[{ at = \"after-update\", input = \"adv\" }]",
    ] {
        let with = run(extra);
        assert!(differing_statistics(&none, &with, None, extra) > 0, "{extra}: the pass moves the statistics");
        seen.push(with);
    }
    for (i, a) in seen.iter().enumerate() {
        for b in &seen[i + 1..] {
            assert_ne!(a, b, "passes at different points leave different statistics");
        }
    }
    // After the attack: only when the attack itself runs in train mode (AT-AWP).
    let after_attack = "train.extra_passes=[{ at = \"after-attack\", input = \"adv\" }]";
    assert_eq!(one_step("mnist-lt-pgd-at.toml", &[after_attack]), none, "an eval-mode attack leaves no pass");
    let train_attack = "attack.batch_norm=\"train\"";
    let (a, b) = (
        one_step("mnist-lt-pgd-at.toml", &[train_attack]),
        one_step("mnist-lt-pgd-at.toml", &[train_attack, after_attack]),
    );
    assert!(differing_statistics(&a, &b, None, "after-attack") > 0);
}

#[test]
fn trades_adv_first_order_changes_only_the_statistics() {
    // TRADES-AWP's adv, clean order: the same gradient (to float32 summation order), other
    // running statistics than clean, adv.
    let run = |passes: &str| {
        one_step("mnist-lt-robal.toml", &["train.mode=\"trades\"", &format!("train.bn_passes=\"{passes}\"")])
    };
    let stats_differ = differing_statistics(&run("minimal"), &run("adv-first"), Some(1e-5), "adv-first");
    assert!(stats_differ > 0);
}

#[test]
fn at_awp_cifar10_attacks_each_epochs_first_batch_in_eval_mode() {
    use robal::config::AttackBatchNorm;
    // Only the first step of epochs after the first differs from a train-mode attack.
    assert!(AttackBatchNorm::TrainExceptEpochStart.train_mode(false));
    assert!(!AttackBatchNorm::TrainExceptEpochStart.train_mode(true));
    assert!(AttackBatchNorm::Train.train_mode(true) && !AttackBatchNorm::Eval.train_mode(false));
    let run = |mode: &str, epochs: &str| {
        one_step(
            "mnist-lt-pgd-at.toml",
            &[&format!("attack.batch_norm=\"{mode}\""), epochs, "train.checkpoint_every=1"],
        )
    };
    assert_eq!(
        run("train", "train.epochs=1"),
        run("train-except-epoch-start", "train.epochs=1"),
        "the first epoch's first batch is attacked in train mode"
    );
    assert_ne!(
        run("train", "train.epochs=2"),
        run("train-except-epoch-start", "train.epochs=2"),
        "the second epoch's first batch is attacked in eval mode"
    );
}

/// Histogram over `classes` of argmax f(x) in train mode (batch statistics) on every
/// training image of `cfg`, in one batch.
fn train_mode_predictions(model: &robal_models::Classifier, cfg: &TrainConfig, classes: usize) -> Vec<u64> {
    let (set, _) = robal::train::load_data(cfg).unwrap();
    let n = set.len();
    let loader =
        robal_data::Loader::new(std::sync::Arc::new(set), robal_data::LoaderConfig::eval(n), Device::Cpu).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    let z = model.forward(&batch.images, robal_models::Mode::Train).unwrap();
    let mut h = vec![0u64; classes];
    for p in z.argmax(1).unwrap().to_vec1::<u32>().unwrap() {
        h[p as usize] += 1;
    }
    h
}

#[test]
fn reat_counts_outer_predictions_or_the_logging_pass_after_the_update() {
    // One step on every image at once with x_adv = x (no attack step, no start), so the
    // counts are train-mode argmaxes on the training images: of the initial model for
    // `outer` (REAT's code), of the updated one for `after-update` (RobustLT's REAT).
    let run = |count: &str| {
        let reat = format!("reat={{ count = \"{count}\" }}");
        let o = [
            "data.limit=40",
            "data.augment=false",
            "data.drop_last=false",
            "train.batch_size=64",
            "train.epochs=1",
            "train.milestones=[]",
            "train.lr=0.5",
            "train.mode=\"reat\"",
            "train.log_passes=true",
            "attack.steps=0",
            "attack.random_start=\"off\"",
            reat.as_str(),
        ];
        let cfg = preset("mnist-lt-pgd-at.toml", &o);
        let dir = tempfile::tempdir().unwrap();
        train(&cfg, &opts(dir.path()), &Device::Cpu).unwrap();
        let (_, info) =
            robal_models::checkpoint::load(&dir.path().join("checkpoint.safetensors"), &Device::Cpu).unwrap();
        let state: serde_json::Value = serde_json::from_str(&info.extra["objective_state"]).unwrap();
        let counts: Vec<u64> = state["current"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        let (model, _) = robal_models::checkpoint::load(&dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
        (cfg, counts, model)
    };
    let (cfg, after, trained) = run("after-update");
    assert_eq!(after, train_mode_predictions(&trained, &cfg, 10), "after-update: the updated model's predictions");
    let (cfg, outer, _) = run("outer");
    let (set, _) = robal::train::load_data(&cfg).unwrap();
    let initial = robal::train::build_model(&cfg, &set, &Device::Cpu).unwrap();
    assert_eq!(outer, train_mode_predictions(&initial, &cfg, 10), "outer: the initial model's predictions");
    assert_ne!(after, outer, "one step at lr 0.5 changes the predictions: the test can tell the two apart");
    // RobustLT's counting needs the logging pass.
    let e = TrainConfig::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/mnist-lt-pgd-at.toml"),
        &["train.mode=\"reat\"".into(), "reat={ count = \"after-update\" }".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("reat.count") && e.contains("train.log_passes = true"), "{e}");
}
