//! Metrics against hand-worked confusion matrices.

use robal_eval::balanced_accuracy;
use robal_eval::metrics::{decile_groups, shot_groups, Confusion};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn three_class_example_worked_by_hand() {
    // true:      0 0 0 1 1 2
    // predicted: 0 1 0 1 2 2
    // confusion rows (true) x cols (predicted): [2 1 0] [0 1 1] [0 0 1]
    let c = Confusion::new(3, &[0, 0, 0, 1, 1, 2], &[0, 1, 0, 1, 2, 2]);
    assert_eq!(c.counts, vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]);
    assert!(close(c.accuracy(), 4.0 / 6.0));
    let m = c.class_metrics();
    for (got, want) in m.recall.iter().zip([2.0 / 3.0, 0.5, 1.0]) {
        assert!(close(*got, want), "recall {got} vs {want}");
    }
    for (got, want) in m.precision.iter().zip([1.0, 0.5, 0.5]) {
        assert!(close(*got, want), "precision {got} vs {want}");
    }
    // F1 = 2PR/(P+R): 2*(1)(2/3)/(5/3) = 0.8; 0.5; 2*(0.5)(1)/1.5 = 2/3.
    for (got, want) in m.f1.iter().zip([0.8, 0.5, 2.0 / 3.0]) {
        assert!(close(*got, want), "f1 {got} vs {want}");
    }
    assert_eq!(m.support, vec![3, 2, 1]);
    assert!(close(balanced_accuracy(&m.recall), (2.0 / 3.0 + 0.5 + 1.0) / 3.0));
}

#[test]
fn absent_and_never_predicted_classes() {
    // Class 3 has no test example and is never predicted; class 2 is never predicted.
    let c = Confusion::new(4, &[0, 1, 2, 2], &[0, 0, 1, 1]);
    let m = c.class_metrics();
    assert!(m.recall[3].is_nan());
    assert_eq!((m.precision[3], m.f1[3]), (0.0, 0.0));
    assert_eq!((m.recall[2], m.precision[2], m.f1[2]), (0.0, 0.0, 0.0));
    // precision of class 0: predicted twice, right once.
    assert!(close(m.precision[0], 0.5));
    // balanced accuracy over the three present classes: (1 + 0 + 0) / 3.
    assert!(close(balanced_accuracy(&m.recall), 1.0 / 3.0));
    // Shot groups by training count: many (>100), medium (20..=100), few (<20);
    // the absent class 3 is skipped in the few-shot mean.
    let g = shot_groups(&[0.9, 0.5, 0.25, f64::NAN], &[500, 50, 10, 5]);
    let names: Vec<&str> = g.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["many", "medium", "few"]);
    assert_eq!(g[2].classes, vec![2, 3]);
    assert!(close(g[0].mean, 0.9) && close(g[1].mean, 0.5) && close(g[2].mean, 0.25));
}

#[test]
fn groups_of_ten_for_a_hundred_classes() {
    let recall: Vec<f64> = (0..100).map(|c| c as f64 / 100.0).collect();
    let d = decile_groups(&recall);
    assert_eq!(d.len(), 10);
    for (g, group) in d.iter().enumerate() {
        assert_eq!(group.classes, (10 * g..10 * g + 10).collect::<Vec<_>>());
        assert!(close(group.mean, (10.0 * g as f64 + 4.5) / 100.0), "{}: {}", group.name, group.mean);
    }
    assert_eq!(d[0].name, "classes 0-9");
    assert!(decile_groups(&recall[..10]).is_empty());
}
