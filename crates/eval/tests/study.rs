//! The study's aggregation against hand computation: mean and sample sd over seeds,
//! head / middle / tail groups by training-count rank, and per-method summaries built
//! from a real report (the Fashion-MNIST-LT PGD-AT seed 0 `aa` evaluation).

use robal_eval::study::{rank_groups, summarize, MeanSd, StudyRun};
use robal_eval::Report;

fn report() -> Report {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("report.json");
    std::fs::write(&p, include_str!("fixtures/report_fashion_pgd_at.json")).unwrap();
    Report::load(&p).unwrap()
}

#[test]
fn mean_and_sample_sd_by_hand() {
    // mean (0.5 + 0.6 + 0.7) / 3 = 0.6; sample variance (0.01 + 0 + 0.01) / 2 = 0.01.
    let m = MeanSd::of(&[0.5, 0.6, 0.7]);
    assert!((m.mean - 0.6).abs() < 1e-15 && (m.sd - 0.1).abs() < 1e-15 && m.n == 3, "{m:?}");
    assert_eq!(m.pct(), "60.0 ± 10.0");
    let one = MeanSd::of(&[0.25, f64::NAN]);
    assert_eq!((one.mean, one.n), (0.25, 1));
    assert!(one.sd.is_nan());
    assert_eq!(one.pct(), "25.0");
    assert_eq!(MeanSd::of(&[]).pct(), "-");
}

#[test]
fn groups_rank_classes_by_training_count_30_40_30() {
    let fashion = [6000, 3884, 2515, 1628, 1054, 682, 442, 286, 185, 120];
    let g = rank_groups(&fashion);
    assert_eq!(g[0], ("head".into(), vec![0, 1, 2]));
    assert_eq!(g[1], ("middle".into(), vec![3, 4, 5, 6]));
    assert_eq!(g[2], ("tail".into(), vec![7, 8, 9]));
    // Order comes from the counts, not the class index.
    let g = rank_groups(&[5, 500, 50]);
    assert_eq!(g, vec![("head".into(), vec![1]), ("middle".into(), vec![2]), ("tail".into(), vec![0])]);
    let g = rank_groups(&[10, 1]);
    assert_eq!(g, vec![("head".into(), vec![0]), ("tail".into(), vec![1])]);
}

#[test]
fn summaries_average_the_seeds_of_each_method() {
    let a = report();
    let mut b = report();
    // Seed 1: every per-class recall of the worst case 0.1 lower.
    b.worst_case.per_class.iter_mut().for_each(|r| *r -= 0.1);
    b.worst_case.balanced_accuracy -= 0.1;
    let runs = vec![
        StudyRun { method: "m".into(), seed: 0, report: a.clone(), metrics: None },
        StudyRun { method: "m".into(), seed: 1, report: b.clone(), metrics: None },
    ];
    let s = summarize(&runs).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].seeds, vec![0, 1]);
    let worst = s[0].figures.last().unwrap();
    assert_eq!(worst.name, "worst-case");
    for c in 0..10 {
        let (x, y) = (a.worst_case.per_class[c], b.worst_case.per_class[c]);
        assert!((worst.per_class[c].mean - (x + y) / 2.0).abs() < 1e-12);
        // sample sd of two values 0.1 apart: 0.1 / sqrt(2)
        assert!((worst.per_class[c].sd - 0.1 / 2f64.sqrt()).abs() < 1e-12);
    }
    // The tail group is the mean recall of classes 7, 8, 9, averaged over seeds.
    let tail = &worst.groups.iter().find(|(g, _)| g == "tail").unwrap().1;
    let by_hand = |r: &Report| (7..10).map(|c| r.worst_case.per_class[c]).sum::<f64>() / 3.0;
    assert!((tail.mean - (by_hand(&a) + by_hand(&b)) / 2.0).abs() < 1e-12);
    // Seeds evaluated differently are refused, naming the method.
    let mut c = report();
    c.images = 1000;
    let e = summarize(&[
        StudyRun { method: "m".into(), seed: 0, report: a, metrics: None },
        StudyRun { method: "m".into(), seed: 2, report: c, metrics: None },
    ])
    .unwrap_err()
    .to_string();
    assert!(e.contains("study method m") && e.contains("seed 2"), "{e}");
}
