//! Presets parse, overrides apply, bad configs are rejected naming the field,
//! and SGD / the schedule follow their formulas.

use std::path::PathBuf;

use candle_core::{Device, Tensor, Var};
use robal::optim::{learning_rate, Sgd};
use robal::TrainConfig;

fn configs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn every_preset_parses_and_validates() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            TrainConfig::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 20, "only {n} presets");
}

fn default_preset(overrides: &[&str]) -> robal::Result<TrainConfig> {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    TrainConfig::load(&configs().join("mnist-lt-robal.toml"), &o)
}

#[test]
fn overrides_reach_every_field() {
    let c = default_preset(&["train.epochs=2", "loss.m=0.2", "train.milestones=[1]", "data.sampler=class-balanced"])
        .unwrap();
    assert_eq!(c.train.epochs, 2);
    assert_eq!(c.train.milestones, vec![1]);
    assert_eq!(c.data.sampler, robal::config::TrainSampler::ClassBalanced);
    assert!(matches!(c.loss, robal::LossConfig::RobalMargin { m, .. } if m == 0.2));
}

#[test]
fn invalid_configs_name_the_field() {
    for (o, want) in [
        ("train.epoch=2", "unknown field `epoch`"),
        ("attack.eps=-0.1", "attack.eps"),
        ("model.head={ kind = \"fc\" }", "model.head.kind = \"cosine\""),
        ("train.mode=\"adversarial\"", "train.mode"),
        ("data.name=\"svhn\"", "data.name"),
        ("model.arch=\"vgg\"", "model.arch"),
        ("data.ratio=0", "data.ratio"),
        ("model.posthoc_tau=nan", "model.posthoc_tau"),
        ("data.sampler=\"balanced\"", "data.sampler: unknown variant `balanced`"),
        ("attack.random_start=\"two-sided\"", "attack.random_start"),
        ("train.bn_passes=\"three\"", "train.bn_passes"),
        ("awp={ gamma = -1.0 }", "awp.gamma"),
        ("attack.class_budget={ alpha = 2.0, beta = 0.8 }", "attack.class_budget.alpha"),
        ("train.clean_epochs=99", "train.clean_epochs"),
        ("data.policy={ kind = \"rand-augment\", n = 2, m = 31 }", "data.policy"),
    ] {
        let e = default_preset(&[o]).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("mnist-lt-robal.toml"), "{o}: {e}");
    }
    let e = default_preset(&["nonsense"]).unwrap_err().to_string();
    assert!(e.contains("--set") && e.contains("key=value"), "{e}");
}

#[test]
fn sgd_follows_the_nesterov_rule() {
    // p = 1, loss = 3 p, mu 0.9, wd 0.1, lr 0.5, Nesterov:
    // g' = 3.1, v = 3.1, p1 = 1 - 0.5 (3.1 + 0.9 * 3.1) = -1.945;
    // g' = 3 - 0.1945 = 2.8055, v = 2.79 + 2.8055 = 5.5955, p2 = -1.945 - 0.5 (2.8055 + 0.9 * 5.5955) = -5.865725.
    let p = Var::from_tensor(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap();
    let mut sgd = Sgd::new(vec![("p".into(), p.clone())], 0.9, 0.1).with_nesterov(true);
    for want in [-1.945f32, -5.865725] {
        let loss = (p.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        sgd.step(&loss, 0.5).unwrap();
        let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn sgd_follows_the_momentum_rule() {
    // One parameter p = 1, loss = 3 p  (gradient 3), mu = 0.9, wd = 0.1, lr = 0.5:
    // v1 = 3 + 0.1 * 1 = 3.1; p1 = 1 - 0.5 * 3.1 = -0.55;
    // v2 = 0.9 * 3.1 + 3 + 0.1 * (-0.55) = 5.735; p2 = -0.55 - 0.5 * 5.735 = -3.4175.
    let p = Var::from_tensor(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap();
    let mut sgd = Sgd::new(vec![("p".into(), p.clone())], 0.9, 0.1);
    for want in [-0.55f32, -3.4175] {
        let loss = (p.as_tensor() * 3.0).unwrap().sum_all().unwrap();
        sgd.step(&loss, 0.5).unwrap();
        let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn sgd_trial_update_is_the_step_it_would_take_and_changes_nothing() {
    // The two rules above: momentum D = p1 - p0 = -1.55, p2 - p1 = -2.8675; Nesterov
    // -2.945, -3.920725. Each trial runs before the real step, which must still land on
    // the rule's value (the trial leaves the momentum buffer alone).
    for (nesterov, want) in
        [(false, [(-1.55f32, -0.55f32), (-2.8675, -3.4175)]), (true, [(-2.945, -1.945), (-3.920725, -5.865725)])]
    {
        let p = Var::from_tensor(&Tensor::new(&[1f32], &Device::Cpu).unwrap()).unwrap();
        let mut sgd = Sgd::new(vec![("p".into(), p.clone())], 0.9, 0.1).with_nesterov(nesterov);
        for (d_want, p_want) in want {
            let grad = Tensor::new(&[3f32], &Device::Cpu).unwrap();
            let d = sgd.trial_update("p", p.as_tensor(), &grad, 0.5).unwrap().to_vec1::<f32>().unwrap()[0];
            assert!((d - d_want).abs() < 1e-5, "nesterov {nesterov}: trial {d} vs {d_want}");
            let loss = (p.as_tensor() * 3.0).unwrap().sum_all().unwrap();
            sgd.step(&loss, 0.5).unwrap();
            let got = p.as_tensor().to_vec1::<f32>().unwrap()[0];
            assert!((got - p_want).abs() < 1e-5, "nesterov {nesterov}: step after the trial {got} vs {p_want}");
        }
    }
}

#[test]
fn learning_rate_schedule() {
    let ms = [60, 75];
    assert_eq!(learning_rate(0.1, 0, 0.0, 0, &ms, 0.1), 0.1);
    assert!((learning_rate(0.1, 60, 0.0, 0, &ms, 0.1) - 0.01).abs() < 1e-12);
    assert!((learning_rate(0.1, 79, 0.5, 0, &ms, 0.1) - 0.001).abs() < 1e-12);
    assert!((learning_rate(0.1, 0, 0.5, 2, &ms, 0.1) - 0.025).abs() < 1e-9, "warm-up: half of the first of two epochs");
    assert!((learning_rate(0.1, 2, 0.0, 2, &ms, 0.1) - 0.1).abs() < 1e-12);
}

#[test]
fn sgd_in_place_matches_the_rule_elementwise_and_restored_state_is_copied() {
    // loss = Σ c_i p_i (gradient c) on a 2x3 parameter, three steps, against the rule
    // computed here in f64; then restoring a snapshot of the buffers must not let later
    // steps write into the snapshot.
    let c = [0.5f32, -1.0, 2.0, 0.25, -0.75, 1.5];
    let p0 = [1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0];
    let (mu, wd, lr) = (0.9, 0.01, 0.1);
    let p = Var::from_tensor(&Tensor::from_slice(&p0, (2, 3), &Device::Cpu).unwrap()).unwrap();
    let ct = Tensor::from_slice(&c, (2, 3), &Device::Cpu).unwrap();
    let mut sgd = Sgd::new(vec![("w".into(), p.clone())], mu, wd);
    let (mut want, mut v) = (p0.map(f64::from), [0f64; 6]);
    for step in 0..3 {
        sgd.step(&(p.as_tensor() * &ct).unwrap().sum_all().unwrap(), lr).unwrap();
        for i in 0..6 {
            let g = c[i] as f64 + wd * want[i];
            v[i] = if step == 0 { g } else { mu * v[i] + g };
            want[i] -= lr * v[i];
        }
        let got = p.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "step {step}: {got:?} vs {want:?}");
        }
    }
    let snapshot: std::collections::BTreeMap<String, Tensor> = sgd.state().clone();
    let before = snapshot["w"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    sgd.set_state(snapshot.clone()).unwrap();
    sgd.step(&(p.as_tensor() * &ct).unwrap().sum_all().unwrap(), lr).unwrap();
    assert_eq!(snapshot["w"].flatten_all().unwrap().to_vec1::<f32>().unwrap(), before);
}

/// The RoBal reference code's `adjust_learning_rate`, transcribed statement by statement
/// (Adversarial_Long-Tail train.py:197-209 and its call at the top of every epoch of
/// `for epoch in range(start_epoch, cfgs.epochs + 1)`):
///
/// ```python
/// decay = 1.
/// for epoch_d in lr_decline:
///     if epoch >= epoch_d:
///         decay *= 0.1
/// if epoch < warmup_epochs:
///     decay = (epoch + 1) / warmup_epochs
/// for param_group in optimizer.param_groups:
///     param_group['lr'] = param_group['lr'] * decay
/// ```
///
/// Returns the lr each epoch trains with, indexed 0-based.
fn reference_lr(lr: f64, epochs: usize, lr_decline: &[usize], warmup_epochs: usize) -> Vec<f64> {
    let mut current = lr;
    let mut out = Vec::new();
    for epoch in 1..=epochs {
        let mut decay = 1.0;
        for &d in lr_decline {
            if epoch >= d {
                decay *= 0.1;
            }
        }
        if epoch < warmup_epochs {
            decay = (epoch + 1) as f64 / warmup_epochs as f64;
        }
        current *= decay;
        out.push(current);
    }
    out
}

#[test]
fn cumulative_presets_follow_the_reference_lr_rule_every_epoch() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut checked = Vec::new();
    for entry in
        std::fs::read_dir(&dir).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "toml"))
    {
        let cfg = TrainConfig::load(&entry.path(), &[]).unwrap();
        let t = &cfg.train;
        let expected = match t.lr_rule {
            robal::config::LrRule::Cumulative => reference_lr(t.lr, t.epochs, &t.milestones, t.warmup_epochs),
            // Our own rule: gamma^(milestones <= 0-based epoch), warm-up linear within epochs.
            robal::config::LrRule::Step => (0..t.epochs)
                .map(|e| {
                    if e < t.warmup_epochs {
                        t.lr * (e as f64 + 1e-9) / t.warmup_epochs as f64
                    } else {
                        t.lr * t.lr_gamma.powi(t.milestones.iter().filter(|&&m| e >= m).count() as i32)
                    }
                })
                .collect(),
        };
        for (e, want) in expected.iter().enumerate() {
            let got = t.learning_rate(e, 0.0);
            assert!(
                (got - want).abs() <= 1e-12 * want.abs().max(1e-300),
                "{:?} epoch {e}: {got} vs {want}",
                entry.path()
            );
        }
        if t.lr_rule == robal::config::LrRule::Cumulative {
            checked.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    assert!(checked.len() >= 19, "{checked:?}");
    let robal_n = TrainConfig::load(&dir.join("cifar10-lt-robal-n.toml"), &[]).unwrap().train;
    assert!((0..59).all(|e| robal_n.learning_rate(e, 0.0) == 0.1));
    assert!((robal_n.learning_rate(59, 0.0) - 0.01).abs() < 1e-15);
    assert!((robal_n.learning_rate(60, 0.0) - 0.001).abs() < 1e-16);
    assert!(
        (robal_n.learning_rate(74, 0.5) / robal_n.learning_rate(73, 0.0) - 0.01).abs() < 1e-12,
        "two decades at 75"
    );
}

#[test]
fn the_cumulative_rule_with_warm_up_matches_the_reference() {
    // The focal baseline's warmup_epochs 5 under the reference rule: 0.1 x 2/5 x 3/5 x 4/5 x 5/5.
    let want = reference_lr(0.1, 80, &[60, 75], 5);
    assert!((want[3] - 0.0192).abs() < 1e-15 && (want[58] - 0.0192).abs() < 1e-15);
    for (e, w) in want.iter().enumerate() {
        let got = robal::optim::cumulative_learning_rate(0.1, e, 5, &[60, 75], 0.1);
        assert!((got - w).abs() <= 1e-12 * w, "epoch {e}: {got} vs {w}");
    }
}

#[test]
fn normalisation_constants_parse_check_and_reach_the_model() {
    use robal::config::InputNormalization;
    let c = default_preset(&["model.normalization={ mean = [0.5], std = [0.25] }"]).unwrap();
    assert_eq!(c.model.normalization, InputNormalization::Constants { mean: vec![0.5], std: vec![0.25] });
    let (train_set, _) = robal::train::load_data(&c).unwrap();
    let model = robal::train::build_model(&c, &train_set, &Device::Cpu).unwrap();
    let n = model.config().normalization.clone().unwrap();
    assert_eq!((n.mean, n.std), (vec![0.5f32], vec![0.25f32]));
    // Greyscale data with "dataset": no normalisation; colour data: CIFAR-10's constants.
    assert_eq!(InputNormalization::Dataset.resolve(1).unwrap(), None);
    assert_eq!(InputNormalization::Dataset.resolve(3).unwrap().unwrap().mean, vec![0.4914f32, 0.4822, 0.4465]);
    // Three constants for one channel: refused when the model is built, naming the field.
    let c3 = default_preset(&["model.normalization={ mean = [0.5, 0.5, 0.5], std = [0.2, 0.2, 0.2] }"]).unwrap();
    let e = robal::train::build_model(&c3, &train_set, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("model.normalization") && e.contains("1 channels"), "{e}");
    // Checked at load: a zero std, mismatched lengths, an unknown name, a misspelt key.
    for (bad, says) in [
        ("{ mean = [0.5], std = [0.0] }", "stds > 0"),
        ("{ mean = [0.5, 0.5], std = [0.2] }", "2 means and 1 stds"),
        ("\"cifar\"", "expected \"dataset\", \"none\" or"),
        ("{ mean = [0.5], sd = [0.2] }", "expected \"dataset\", \"none\" or"),
    ] {
        let e = default_preset(&[&format!("model.normalization={bad}")]).unwrap_err().to_string();
        assert!(e.contains("model.normalization") && e.contains(says), "{bad}: {e}");
    }
    // Written back as it was read (run folders compare their config text).
    let text = toml::to_string(&c).unwrap();
    assert!(
        text.contains("normalization = { mean = [0.5], std = [0.25] }") || text.contains("[model.normalization]"),
        "{text}"
    );
    let back: TrainConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, c);
}

#[test]
fn resize_applies_pillows_bilinear_to_train_and_test_images() {
    use robal_data::Dataset;
    let plain = default_preset(&[]).unwrap();
    let resized = default_preset(&["data.resize=[40, 36]"]).unwrap();
    assert!(resized.quirks().iter().any(|q| q.starts_with("data.resize")));
    let ((a, at), (b, bt)) = (robal::train::load_data(&plain).unwrap(), robal::train::load_data(&resized).unwrap());
    assert_eq!((b.shape().height, b.shape().width, bt.shape().height), (40, 36, 40));
    assert_eq!((a.len(), at.len()), (b.len(), bt.len()), "the same images");
    for i in [0, a.len() - 1] {
        assert_eq!(b.image(i), &robal_data::resize_bilinear(a.image(i), a.shape(), 40, 36).unwrap()[..]);
    }
    assert_eq!(bt.image(3), &robal_data::resize_bilinear(at.image(3), at.shape(), 40, 36).unwrap()[..]);
    let e = default_preset(&["data.resize=[0, 224]"]).unwrap_err().to_string();
    assert!(e.contains("data.resize"), "{e}");
}

#[test]
fn second_stage_lr_follows_the_reference_rule_after_the_first_stage() {
    // The reference's LWS stage: epochs 81..=90 (1-based, global), lr 0.1 with lr_decline
    // [83, 86] under adjust_learning_rate (train.py:197-209): the current lr times
    // 0.1^(milestones <= epoch), every epoch. Transcribed directly:
    let mut lr = 0.1f64;
    let mut want = Vec::new();
    for epoch in 81..=90 {
        let decay = [83, 86].iter().filter(|&&m| epoch >= m).fold(1.0, |d, _| d * 0.1);
        lr *= decay;
        want.push(lr);
    }
    let c = TrainConfig::load(&configs().join("cifar10-lt-lws.toml"), &[]).unwrap();
    let s2 = c.stage2.clone().unwrap();
    assert_eq!(s2.milestones, [3, 6], "the global milestones minus the 80 first-stage epochs");
    let got: Vec<f64> = (0..10).map(|e| s2.learning_rate(&c.train, e)).collect();
    for (e, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * w.abs().max(1e-300) + 1e-300, "stage epoch {e}: {g} vs {w}");
    }
    // Under the step rule the same milestones are 0-based stage epochs.
    let step = TrainConfig::load(
        &configs().join("mnist-lt-pgd-at.toml"),
        &["stage2={ kind = \"crt\", epochs = 4, lr = 0.1, milestones = [2] }".to_string()],
    )
    .unwrap();
    let s2 = step.stage2.clone().unwrap();
    let got: Vec<f64> = (0..4).map(|e| s2.learning_rate(&step.train, e)).collect();
    assert!((got[1] - 0.1).abs() < 1e-15 && (got[2] - 0.01).abs() < 1e-15, "{got:?}");
}

#[test]
fn subset_selection_and_count_rounding_pick_the_codes_images() {
    // MCAT's preset on the 1,017 real CIFAR-10 records of ../shared/data: img_max = 101.7,
    // counts rounded half to even, images from default_rng(0)'s per-class shuffles.
    use robal_data::Dataset;
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar-10-partial");
    let files = [
        format!("data.train_file={:?}", shared.join("data_batch_1_first1017.bin").display().to_string()),
        format!("data.test_file={:?}", shared.join("test_batch_first1017.bin").display().to_string()),
    ];
    let c = TrainConfig::load(&configs().join("cifar10-lt-mcat.toml"), &files).unwrap();
    assert!(c.quirks().iter().any(|q| q.starts_with("data.count_rounding")));
    let (train_set, _) = robal::train::load_data(&c).unwrap();
    let full =
        robal_data::cifar::read_batch_file(shared.join("data_batch_1_first1017.bin"), robal_data::Cifar::Cifar10)
            .unwrap();
    let counts = robal_data::Profile::Exp { ratio: 0.01 }
        .counts_rounded(10, full.len() as f64 / 10.0, robal_data::CountRounding::HalfEven)
        .unwrap();
    // By hand: 101.7 * 100^(-c/9) rounded: 102, 61, 37, 22, 13, 8, 5, 3, 2, 1.
    assert_eq!(counts, [102, 61, 37, 22, 13, 8, 5, 3, 2, 1]);
    assert_eq!(train_set.classes().train_counts(), &counts[..]);
    let idx = robal_data::select(full.labels(), &counts, robal_data::Selection::NumpyGenerator { seed: 0 }).unwrap();
    for (k, &i) in idx.iter().enumerate() {
        assert_eq!(train_set.image(k), full.image(i), "image {k}");
    }
    // The default (LDAM's floor and numpy RandomState(0)) picks other images.
    let plain = TrainConfig::load(&configs().join("cifar10-lt-pgd-at.toml"), &files).unwrap();
    let (p, _) = robal::train::load_data(&plain).unwrap();
    assert_ne!(p.classes().train_counts(), train_set.classes().train_counts());
    // Not for the digit sets, which draw their own subsets.
    let e = default_preset(&["data.count_rounding=\"half-even\""]).unwrap_err().to_string();
    assert!(e.contains("data.selection / data.count_rounding"), "{e}");
}
