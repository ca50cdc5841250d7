//! The reference long-tailed selection against numpy itself.
//!
//! Fixtures made once with numpy 2.4.6 by `tests/fixtures/make_numpy_fixtures.py`
//! (its docstring says exactly what each file holds).

mod support;

use robal_data::{select, NumpyLegacyRng, Profile, Selection};
use support::{read_numbers, shared_cifar};

#[test]
fn mt19937_matches_numpy_random_state_0() {
    let expected = read_numbers("mt19937_seed0_raw.txt");
    assert_eq!(expected.len(), 1500);
    let mut rng = NumpyLegacyRng::new(0);
    for (k, &e) in expected.iter().enumerate() {
        assert_eq!(rng.next_u32() as u64, e, "raw output {k}");
    }
}

#[test]
fn legacy_shuffle_matches_numpy_with_state_carried_over() {
    let text = std::fs::read_to_string(support::fixtures().join("legacy_shuffle_seed0.txt")).unwrap();
    let sizes = [1usize, 2, 3, 7, 10, 100, 1000, 4097];
    let mut rng = NumpyLegacyRng::new(0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), sizes.len());
    for (&n, line) in sizes.iter().zip(lines) {
        let expected: Vec<usize> = line.split_whitespace().map(|t| t.parse().unwrap()).collect();
        let mut a: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut a);
        assert_eq!(a, expected, "shuffle of arange({n})");
    }
}

#[test]
fn interval_stays_in_range_and_hits_every_value() {
    let mut rng = NumpyLegacyRng::new(7);
    for max in [0u32, 1, 2, 5, 8, 255, 256] {
        let mut seen = vec![false; max as usize + 1];
        for _ in 0..4000 {
            let v = rng.interval(max);
            assert!(v <= max);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s), "interval({max}) misses values");
    }
}

#[test]
fn reference_selection_matches_numpy_on_real_cifar_labels() {
    let Some(dir) = shared_cifar("reference_selection_matches_numpy_on_real_cifar_labels") else { return };
    let labels: Vec<u32> =
        std::fs::read(dir.join("data_batch_1_labels_all10000.bin")).unwrap().into_iter().map(u32::from).collect();
    let counts = Profile::Exp { ratio: 0.01 }.counts(10, labels.len() as f64 / 10.0).unwrap();
    assert_eq!(counts, [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]);
    let got = select(&labels, &counts, Selection::Reference { seed: 0 }).unwrap();
    let expected: Vec<usize> = read_numbers("reference_lt_batch1.txt").into_iter().map(|v| v as usize).collect();
    assert_eq!(got, expected);
}
