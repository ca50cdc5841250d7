//! How many train-mode BatchNorm passes one adversarial step of a paper preset makes,
//! against the count in the official code it reproduces.
//!
//! Ten-step trajectory fixtures cannot see these passes (they change the running
//! statistics only, which training-mode forwards never read). Here one step runs with
//! the preset's method, passes and attack options on a small CNN over one batch of
//! MNIST-LT, with x_adv = x (attack step size 0, no start) and lr 1e-6, so that every
//! pass normalises the same batch: after k passes from zero, the first BatchNorm's
//! running mean is r_k = (1 - (1 - m)^k) mu with mu the batch mean, which one pass of
//! the untrained model gives (r_1 = m mu). k = ln(1 - r_k / mu) / ln(1 - m).

use std::path::PathBuf;

use candle_core::Device;
use robal::train::{build_model, load_data, train, RunOptions};
use robal::TrainConfig;
use robal_data::Dataset;

/// (preset, train-mode passes that update the running statistics in one adversarial
/// step of its code, where the code makes them).
const CODE_PASSES: &[(&str, usize, &str)] = &[
    (
        "cifar10-lt-robal-n",
        4,
        "wutong16/Adversarial_Long-Tail methods/train_modes.py:195,218 (attack in eval mode), 223 (adv), 226 (clean, \
         run at beta_nat 0 too), 230-231 (clean, adv for the KL term)",
    ),
    ("cifar10-lt-trades", 3, "train_modes.py:83,128 (attack in eval mode), 134 (clean), 136-137 (adv, clean)"),
    (
        "cifar10-lt-pgd-at-awp",
        13,
        "csdongxian/AWP AT_AWP/train_cifar10.py:91-92 (one train-mode pass per attack step, 10), 122 (all_loss on \
         X + delta), utils_awp.py:36-40 (the AWP probe runs on the proxy, a copy), train_cifar10.py:346 (adv), 364 \
         (clean after the update)",
    ),
    ("cifar100-lt-pgd-at-awp", 13, "AT_AWP/train_cifar100.py:74-75 (10 attack steps), 105, 293, 311"),
    (
        "cifar10-lt-trades-awp",
        3,
        "trades_AWP/train_trades_cifar.py:106 (attack in eval mode), 187-189 (adv, clean), 192 (clean)",
    ),
    ("cifar10-lt-reat", 1, "GuanlinLee/REAT train.py:210-212 (clean pass in eval mode), loss_functions.py:42,56 (attack in eval mode), 61 (adv)"),
    ("cifar10-lt-at-bsl", 1, "NISPLab/AT-BSL at_bsl_loss.py:21,34 (attack in eval mode), 40 (adv)"),
    (
        "cifar10-lt-taet",
        2,
        "BuhuiOK/TAET code/TAET/TAET.ipynb cell 7 line 47 (clean, every step), code/HARL.py:34,48 (attack in eval \
         mode), 53 (adv)",
    ),
    ("cifar10-lt-taet-notebook", 2, "the same loop as cifar10-lt-taet"),
    (
        "cifar10-lt-robustlt-pgd-at",
        3,
        "zhang-lilin/RobustLT core/methods/utils.py:114-116 (attack without tracking), 140-141 (adv), 96-97 (log: \
         adv, clean)",
    ),
    ("cifar10-lt-robustlt-at-bsl", 4, "core/methods/atbsl.py:19 (adv, clean), utils.py:96-97 (adv, clean)"),
    (
        "cifar10-lt-robustlt-awp",
        4,
        "core/methods/utils.py:84 (the probed loss: adv, before the model copy of awp.py:36), awp.py:48 (adv), \
         56-57 (adv, clean)",
    ),
    ("cifar10-lt-robustlt-taet", 4, "core/methods/taet.py:56 (adv, clean), 28-33 (clean, adv)"),
    ("cifar10-lt-robustlt-robal", 4, "core/methods/robal.py:54 (adv, clean), utils.py:96-97 (adv, clean)"),
    ("cifar10-lt-robustlt-reat", 3, "core/methods/reat.py:66 (adv), 45 (adv, clean)"),
];

fn load(preset: &str) -> TrainConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs").join(format!("{preset}.toml"));
    let overrides = [
        "data={ name = \"mnist-lt\", limit = 40, augment = false, drop_last = false }",
        "model.arch=\"small-cnn\"",
        "model.normalization=\"none\"",
        "train.epochs=1",
        "train.milestones=[]",
        "train.batch_size=64",
        "train.lr=1e-6",
        "train.clean_epochs=0",
        "attack.step_size=0.0",
        "attack.random_start=\"off\"",
        "eval.limit=8",
        "eval.steps=1",
        "eval.every=0",
    ];
    let mut o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    if preset.contains("awp") {
        o.push("awp.from_epoch=0".into());
    }
    TrainConfig::load(&path, &o).unwrap_or_else(|e| panic!("{preset}: {e}"))
}

/// The first BatchNorm's running mean in a store's state.
fn first_running_mean(model: &robal_models::Classifier) -> Vec<f32> {
    let state = model.store().state();
    let (_, t) = state.iter().find(|(n, _)| n.ends_with("bn1.running_mean")).expect("a bn1.running_mean buffer");
    t.to_vec1::<f32>().unwrap()
}

/// Passes of one step of `cfg`, read from the running mean (see the file's comment).
fn passes(cfg: &TrainConfig) -> f64 {
    let (set, _) = load_data(cfg).unwrap();
    let n = set.len();
    let fresh = build_model(cfg, &set, &Device::Cpu).unwrap();
    let loader =
        robal_data::Loader::new(std::sync::Arc::new(set), robal_data::LoaderConfig::eval(n), Device::Cpu).unwrap();
    let batch = loader.epoch(0).next().unwrap().unwrap();
    fresh.forward(&batch.images, robal_models::Mode::Train).unwrap();
    let m = 0.1; // small-cnn's BatchNorm momentum
    let mu: Vec<f64> = first_running_mean(&fresh).iter().map(|&r| f64::from(r) / m).collect();
    let dir = tempfile::tempdir().unwrap();
    let opts = RunOptions {
        run_dir: dir.path().to_path_buf(),
        resume: false,
        progress: false,
        stop_after: None,
        overwrite: false,
    };
    train(cfg, &opts, &Device::Cpu).unwrap();
    let (trained, _) = robal_models::checkpoint::load(&dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
    let r = first_running_mean(&trained);
    // The channel with the largest batch mean gives the best-conditioned estimate.
    let c = (0..mu.len()).max_by(|&a, &b| mu[a].abs().total_cmp(&mu[b].abs())).unwrap();
    (1.0 - f64::from(r[c]) / mu[c]).ln() / (1.0 - m).ln()
}

#[test]
fn one_step_makes_as_many_batchnorm_passes_as_the_code() {
    // The estimator itself: plain PGD-AT on the embedded preset makes exactly one.
    let one = passes(&load("mnist-lt-pgd-at"));
    assert!((one - 1.0).abs() < 0.05, "mnist-lt-pgd-at: {one} passes, expected 1");
    let mut wrong = Vec::new();
    for &(preset, expected, source) in CODE_PASSES {
        let k = passes(&load(preset));
        if (k - expected as f64).abs() > 0.1 {
            wrong.push(format!("{preset}: {k:.2} train-mode passes per step, the code makes {expected} ({source})"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
