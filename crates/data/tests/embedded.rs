//! The embedded MNIST-LT set: integrity, counts and contents.

mod support;

use robal_data::embedded::{TEST_PER_CLASS, TRAIN_IMG_MAX, TRAIN_RATIO};
use robal_data::{load_embedded, Dataset, Profile, ShotGroup, Split};

#[test]
fn committed_files_match_data_readme_sums() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for name in ["train.bin.gz", "test.bin.gz"] {
        let sum = support::sha256(&std::fs::read(dir.join("mnist-lt").join(name)).unwrap());
        assert!(
            readme.contains(&format!("{sum}  mnist-lt/{name}")),
            "crates/data/data/README.md lacks the sha256 of {name} ({sum})"
        );
    }
}

#[test]
fn splits_have_the_documented_counts() {
    let train = load_embedded("mnist-lt", Split::Train).unwrap();
    let test = load_embedded("mnist-lt", Split::Test).unwrap();
    let counts = Profile::Exp { ratio: TRAIN_RATIO }.counts(10, TRAIN_IMG_MAX).unwrap();
    assert_eq!(counts, [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]);
    assert_eq!(train.label_counts(), counts);
    assert_eq!(train.classes().train_counts(), counts);
    assert_eq!(test.label_counts(), vec![TEST_PER_CLASS; 10]);
    assert_eq!(test.classes(), train.classes(), "the test split carries the training counts");
    let g = train.classes().shot_groups();
    assert_eq!(g.iter().filter(|&&x| x == ShotGroup::Few).count(), 3);
    assert_eq!(g.iter().filter(|&&x| x == ShotGroup::Medium).count(), 3);
    assert!((train.classes().prior().iter().sum::<f64>() - 1.0).abs() < 1e-12);
}

#[test]
fn images_look_like_digits() {
    let test = load_embedded("mnist-lt", Split::Test).unwrap();
    // MNIST: mostly black background, mean grey level about 0.13, white strokes.
    let px = test.pixels();
    let mean = px.iter().map(|&p| p as f64).sum::<f64>() / (px.len() as f64 * 255.0);
    assert!((mean - 0.13).abs() < 0.02, "mean grey {mean}");
    let zeros = px.iter().filter(|&&p| p == 0).count() as f64 / px.len() as f64;
    assert!(zeros > 0.7, "background share {zeros}");
    assert_eq!(px.iter().copied().max(), Some(255));
    // Borders are empty in MNIST (digits are centred in the 20x20 box).
    for i in 0..test.len() {
        assert_eq!(test.image(i)[..28].iter().map(|&p| p as u32).sum::<u32>(), 0, "top row of image {i}");
    }
    // No duplicates between train and test.
    let train = load_embedded("mnist-lt", Split::Train).unwrap();
    let test_set: std::collections::HashSet<&[u8]> = (0..test.len()).map(|i| test.image(i)).collect();
    assert!((0..train.len()).all(|i| !test_set.contains(train.image(i))));
}

#[test]
fn unknown_names_are_rejected() {
    let e = load_embedded("cifar-lt", Split::Train).unwrap_err().to_string();
    assert!(e.contains("cifar-lt") && e.contains("mnist-lt"), "{e}");
}
