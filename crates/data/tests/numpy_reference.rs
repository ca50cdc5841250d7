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

fn generator_fixture() -> serde_json::Value {
    let text = std::fs::read_to_string(support::fixtures().join("numpy_generator.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn usizes(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

#[test]
fn pcg64_default_rng_matches_numpy_raw_outputs() {
    // Fixtures from tests/fixtures/make_numpy_generator_fixtures.py (numpy 2.4.6).
    let f = generator_fixture();
    for (seed, raw) in f["raw"].as_object().unwrap() {
        let mut g = robal_data::NumpyGenerator::new(seed.parse().unwrap());
        for (k, want) in raw.as_array().unwrap().iter().enumerate() {
            assert_eq!(g.next_u64(), want.as_u64().unwrap(), "seed {seed}, output {k}");
        }
    }
}

#[test]
fn generator_shuffle_matches_numpy_with_state_carried_over() {
    let f = generator_fixture();
    let mut g = robal_data::NumpyGenerator::new(102);
    for case in f["shuffles"].as_array().unwrap() {
        let n = case["n"].as_u64().unwrap() as usize;
        let mut a: Vec<usize> = (0..n).collect();
        g.shuffle(&mut a);
        let head = usizes(&case["head"]);
        assert_eq!(a[..head.len()], head[..], "n = {n}");
        let weighted: u64 = a.iter().enumerate().map(|(i, &v)| (i * v) as u64).sum();
        assert_eq!(weighted, case["sum_of_index_times_value"].as_u64().unwrap(), "n = {n}: the whole permutation");
    }
}

/// The fixture script's labels: (i 7 + i / 13) mod 10 for 5,000 examples.
fn formula_labels() -> Vec<u32> {
    (0..5000u32).map(|i| (i * 7 + i / 13) % 10).collect()
}

#[test]
fn robustlt_and_mcat_splits_match_their_codes() {
    let f = generator_fixture();
    let labels = formula_labels();
    // RobustLT: int() counts, default_rng(102), train part then validation part of each class.
    let r = &f["robustlt_split"];
    let counts = Profile::Exp { ratio: 1.0 / 50.0 }.counts(10, 500.0).unwrap();
    assert_eq!(counts, usizes(&r["counts"]));
    let got = select(&labels, &counts, Selection::NumpyGenerator { seed: 102 }).unwrap();
    let (mut want, mut val) = (usizes(&r["train"]), usizes(&r["val"]));
    want.append(&mut val);
    let (mut got_sorted, mut want_sorted) = (got.clone(), want);
    got_sorted.sort_unstable();
    want_sorted.sort_unstable();
    assert_eq!(got_sorted, want_sorted, "the same training images (train and validation parts)");
    // Class by class, each class's first take_train images are RobustLT's train part.
    let train = usizes(&r["train"]);
    let mut offset = 0;
    let mut train_offset = 0;
    for &n in &counts {
        let take_train = n - (n as f64 * 0.2) as usize;
        assert_eq!(got[offset..offset + take_train], train[train_offset..train_offset + take_train]);
        offset += n;
        train_offset += take_train;
    }
    // MCAT: Python-rounded counts (half to even, at least 1, non-increasing), default_rng(0).
    let m = &f["mcat_split"];
    let counts =
        Profile::Exp { ratio: 1.0 / 50.0 }.counts_rounded(10, 500.0, robal_data::CountRounding::HalfEven).unwrap();
    assert_eq!(counts, usizes(&m["counts"]));
    let mut got = select(&labels, &counts, Selection::NumpyGenerator { seed: 0 }).unwrap();
    let mut want = usizes(&m["selected"]);
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "MCAT's images (its final shuffle only orders them)");
}
