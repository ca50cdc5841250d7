//! Shards, their merge and resumed suites give exactly what one uninterrupted run gives.

use std::time::Duration;

use candle_core::Device;
use robal_data::{Dataset, ImageSet, Split};
use robal_eval::job::long_tailed_indices;
use robal_eval::suite::{run_suite, run_suite_with, AttackOutcome, AttackSettings, AttackSpec, Progress};
use robal_eval::{evaluate_part, merge, AuditConfig, EvalError, EvalOptions, Shard};
use robal_models::{Arch, Classifier, HeadConfig, ModelConfig};

/// An untrained small CNN (seeded) and 40 embedded MNIST-LT test images.
fn setup() -> (Classifier, ImageSet) {
    let config = ModelConfig {
        arch: Arch::SmallCnn,
        in_channels: 1,
        num_classes: 10,
        head: HeadConfig::FC,
        normalization: None,
    };
    let model = Classifier::new(config, &Device::Cpu, 5).unwrap();
    let test = robal_data::load_embedded("mnist-lt", Split::Test).unwrap();
    let idx: Vec<usize> = (0..40).map(|i| i * test.len() / 40).collect();
    (model, test.subset(&idx).unwrap())
}

fn options() -> EvalOptions {
    EvalOptions {
        attacks: vec![AttackSpec::Clean, AttackSpec::Pgd, AttackSpec::ApgdCe, AttackSpec::AutoAttackPaper],
        // Random start on: the per-batch seeds are part of what must agree.
        settings: AttackSettings { eps: 0.1, steps: 5, step_size: 0.03, ..Default::default() },
        audit: Some(AuditConfig { limit: 12, ..Default::default() }),
        batch: 6,
        ..Default::default()
    }
}

/// Outcomes without their timings.
fn untimed(o: &[AttackOutcome]) -> Vec<AttackOutcome> {
    o.iter().map(|a| AttackOutcome { seconds: 0.0, ..a.clone() }).collect()
}

#[test]
fn shards_cover_whole_batches_once() {
    let ranges: Vec<_> = (1..=3).map(|k| Shard { index: k, count: 3 }.range(40, 6)).collect();
    // 7 batches of 6 (the last one of 4): 0..2, 2..4, 4..7.
    assert_eq!(ranges, [(0, 12, 0), (12, 24, 2), (24, 40, 4)]);
    assert_eq!(Shard::default().range(40, 6), (0, 40, 0));
    // More shards than batches leave some empty, never overlapping.
    let r: Vec<_> = (1..=4).map(|k| Shard { index: k, count: 4 }.range(5, 2)).collect();
    // 3 batches over 4 shards: [0, 0), [0, 1), [1, 2), [2, 3) in batches.
    assert_eq!(r, [(0, 0, 0), (0, 2, 0), (2, 4, 1), (4, 5, 2)]);
    assert_eq!(Shard::parse("2/8").unwrap(), Shard { index: 2, count: 8 });
    for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
        let e = Shard::parse(bad).unwrap_err().to_string();
        assert!(e.contains("--shard") && e.contains("K/N"), "{bad}: {e}");
    }
}

#[test]
fn merged_shards_equal_the_unsharded_run() {
    let (model, test) = setup();
    let opts = options();
    let whole = evaluate_part(&model, &test, "ckpt", "mnist-lt", &opts).unwrap();
    let parts: Vec<_> = [3, 1, 2]
        .iter()
        .map(|&k| {
            let o = EvalOptions { shard: Shard { index: k, count: 3 }, ..opts.clone() };
            evaluate_part(&model, &test, "ckpt", "mnist-lt", &o).unwrap()
        })
        .collect();
    assert!(parts.iter().filter(|p| p.shard.index != 1).all(|p| p.audit.checks.is_empty()));
    let merged = merge(parts.clone()).unwrap();
    assert_eq!(merged.labels, whole.labels);
    assert_eq!(untimed(&merged.outcomes), untimed(&whole.outcomes));
    // The attacks did something, so the comparison means something.
    let robust = |o: &AttackOutcome| o.correct.iter().filter(|&&c| c).count();
    assert!(robust(&whole.outcomes[1]) < robust(&whole.outcomes[0]), "{:?}", whole.outcomes[..2].to_vec());
    assert!(!whole.outcomes[3].broken_by.is_empty());
    let (a, b) = (merged.report(), whole.report());
    assert_eq!(a.audit, b.audit);
    assert_eq!(a.worst_case, b.worst_case);
    for (x, y) in a.attacks.iter().zip(&b.attacks) {
        assert_eq!((x.accuracy, &x.per_class, &x.correct), (y.accuracy, &y.per_class, &y.correct));
    }

    // Missing, doubled and mismatched shards are named.
    let e = merge(parts[..2].to_vec()).unwrap_err().to_string();
    assert!(e.contains("expected shards 1..=3 once each, found [1, 3]"), "{e}");
    let mut other = parts.clone();
    other[0].settings.eps = 0.2;
    let e = merge(other).unwrap_err().to_string();
    assert!(e.contains("other options"), "{e}");
}

#[test]
fn a_suite_interrupted_mid_attack_resumes_to_the_same_outcomes() {
    let (model, test) = setup();
    let view = robal::evaluate::EvalModel(&model);
    let o = options();
    let full = run_suite(&view, &test, &o.attacks, &o.settings, o.batch, &Device::Cpu, false).unwrap();
    // Die at the 17th save (every batch saves): 7 + 7 + 3 batches, inside the third attack (APGD-CE).
    let mut saved: Vec<Vec<AttackOutcome>> = Vec::new();
    let mut save = |s: &[AttackOutcome]| {
        saved.push(s.to_vec());
        if saved.len() == 17 {
            Err(EvalError::Invalid { what: "test".into(), reason: "killed".into() })
        } else {
            Ok(())
        }
    };
    let p = Progress { first_batch: 0, resume: Vec::new(), every: Duration::ZERO, save: &mut save };
    let e = run_suite_with(&view, &test, &o.attacks, &o.settings, o.batch, &Device::Cpu, false, p).unwrap_err();
    assert!(e.to_string().contains("killed"));
    let last = saved.last().unwrap().clone();
    assert_eq!(last.len(), 3);
    assert_eq!(last[2].predicted.len(), 3 * o.batch);
    let mut ignore = |_: &[AttackOutcome]| Ok(());
    let p = Progress { first_batch: 0, resume: last, every: Duration::ZERO, save: &mut ignore };
    let resumed = run_suite_with(&view, &test, &o.attacks, &o.settings, o.batch, &Device::Cpu, false, p).unwrap();
    assert_eq!(untimed(&resumed), untimed(&full));

    // A state from another attack list, or cut inside a batch, is refused.
    let mut wrong = saved[3].clone();
    wrong[0].spec = AttackSpec::Fgsm;
    let p = Progress { first_batch: 0, resume: wrong, every: Duration::ZERO, save: &mut ignore };
    let e = run_suite_with(&view, &test, &o.attacks, &o.settings, o.batch, &Device::Cpu, false, p).unwrap_err();
    assert!(e.to_string().contains("another attack list"), "{e}");
    let mut cut = saved[15].clone();
    cut[2].predicted.pop();
    let p = Progress { first_batch: 0, resume: cut, every: Duration::ZERO, save: &mut ignore };
    let e = run_suite_with(&view, &test, &o.attacks, &o.settings, o.batch, &Device::Cpu, false, p).unwrap_err();
    assert!(e.to_string().contains("not a whole number of batches"), "{e}");
}

/// TAET's long-tailed test set (METHODS section 4): with 1000 test images per class and
/// a training imbalance of 10, the counts are int(1000 * 0.1^(c/9)).
#[test]
fn the_long_tailed_test_profile_keeps_the_training_ratio() {
    let labels: Vec<u32> = (0..10_000).map(|i| (i % 10) as u32).collect();
    let train: Vec<usize> = (0..10).map(|c| (5000.0 * 0.1f64.powf(c as f64 / 9.0)) as usize).collect();
    let idx = long_tailed_indices(&labels, &train).unwrap();
    let mut counts = [0usize; 10];
    idx.iter().for_each(|&i| counts[labels[i] as usize] += 1);
    assert_eq!(counts, [1000, 774, 599, 464, 359, 278, 215, 166, 129, 100]);
    // The first images of each class, in their original order.
    assert!(idx.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(&idx[..3], &[0, 1, 2]);
    let e = long_tailed_indices(&labels, &[0; 10]).unwrap_err().to_string();
    assert!(e.contains("--test-profile lt"), "{e}");
}
