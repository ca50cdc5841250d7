//! Real CIFAR-10 records from `../shared/data/cifar-10-partial` through the real reader.
//! Expected values are those of the folder's SOURCE.md.

mod support;

use robal_data::cifar::read_batch_file;
use robal_data::{long_tailed, Cifar, Dataset, Profile, Selection};
use support::{sha256, shared_cifar};

const SUMS: [(&str, &str); 4] = [
    ("test_batch_first1017.bin", "c77ad46116beb3508f55d38aa34893560beae9515f9aca4a4dd0ea3617ac289e"),
    ("data_batch_1_first1017.bin", "ea2c7a46f23371a3f814ce8e198838201147e8e6d1f8a84baa3583ebbec03247"),
    ("test_batch_labels_all10000.bin", "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5"),
    ("data_batch_1_labels_all10000.bin", "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9"),
];

#[test]
fn files_match_their_sha256() {
    let Some(dir) = shared_cifar("files_match_their_sha256") else { return };
    for (name, sum) in SUMS {
        assert_eq!(sha256(&std::fs::read(dir.join(name)).unwrap()), sum, "{name}");
    }
}

#[test]
fn records_labels_and_counts_are_as_documented() {
    let Some(dir) = shared_cifar("records_labels_and_counts_are_as_documented") else { return };
    for (file, labels_file, counts) in [
        ("test_batch_first1017.bin", "test_batch_labels_all10000.bin", [105, 93, 100, 104, 92, 87, 114, 102, 110, 110]),
        (
            "data_batch_1_first1017.bin",
            "data_batch_1_labels_all10000.bin",
            [103, 113, 102, 94, 103, 86, 109, 102, 101, 104],
        ),
    ] {
        let set = read_batch_file(dir.join(file), Cifar::Cifar10).unwrap();
        assert_eq!(set.len(), 1017);
        assert_eq!(set.label_counts(), counts, "{file}");
        let all: Vec<u32> = std::fs::read(dir.join(labels_file)).unwrap().into_iter().map(u32::from).collect();
        assert_eq!(set.labels(), &all[..1017], "{file}: record labels equal the label file's prefix");
    }
    let test = read_batch_file(dir.join("test_batch_first1017.bin"), Cifar::Cifar10).unwrap();
    assert_eq!(&test.labels()[..5], &[3, 8, 8, 0, 6]);
    let names = std::fs::read_to_string(dir.join("batches.meta.txt")).unwrap();
    let names: Vec<&str> = names.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(test.classes().names(), names.as_slice());
}

#[test]
fn pixel_statistics_look_like_cifar() {
    let Some(dir) = shared_cifar("pixel_statistics_look_like_cifar") else { return };
    let set = read_batch_file(dir.join("test_batch_first1017.bin"), Cifar::Cifar10).unwrap();
    // CIFAR-10 channel means are about 0.49, 0.48, 0.45 (R, G, B); 1017 images are close.
    let mut sums = [0f64; 3];
    for i in 0..set.len() {
        for (c, s) in sums.iter_mut().enumerate() {
            *s += set.image(i)[c * 1024..(c + 1) * 1024].iter().map(|&p| p as f64).sum::<f64>();
        }
    }
    let means: Vec<f64> = sums.iter().map(|s| s / (set.len() as f64 * 1024.0 * 255.0)).collect();
    for (m, want) in means.iter().zip([0.49, 0.48, 0.45]) {
        assert!((m - want).abs() < 0.03, "channel means {means:?}");
    }
    assert!(means[0] > means[2], "red above blue as in CIFAR: {means:?}");
    let (min, max) = set.pixels().iter().fold((255u8, 0u8), |(a, b), &p| (a.min(p), b.max(p)));
    assert_eq!((min, max), (0, 255));
}

#[test]
fn long_tailed_subset_of_real_records() {
    let Some(dir) = shared_cifar("long_tailed_subset_of_real_records") else { return };
    let set = read_batch_file(dir.join("data_batch_1_first1017.bin"), Cifar::Cifar10).unwrap();
    let lt = long_tailed(&set, Profile::Exp { ratio: 0.1 }, Selection::Reference { seed: 0 }).unwrap();
    // img_max = 1017 / 10 = 101.7: floor(101.7 * 0.1^(c/9)), from Python:
    // [int(101.7*0.1**(c/9)) for c in range(10)].
    let expected = [101, 78, 60, 47, 36, 28, 21, 16, 13, 10];
    assert_eq!(lt.label_counts(), expected);
    assert_eq!(lt.classes().train_counts(), expected);
    let groups: Vec<&str> = lt.classes().shot_groups().iter().map(|g| g.name()).collect();
    assert_eq!(groups, ["many", "medium", "medium", "medium", "medium", "medium", "medium", "few", "few", "few"]);
    // Every kept image is one of the originals, unchanged.
    let first = lt.image(0);
    assert!((0..set.len()).any(|i| set.image(i) == first));
}

#[test]
fn truncated_real_file_is_rejected_naming_file_and_record() {
    let Some(dir) = shared_cifar("truncated_real_file_is_rejected_naming_file_and_record") else { return };
    let bytes = std::fs::read(dir.join("test_batch_first1017.bin")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("test_batch_cut.bin");
    std::fs::write(&p, &bytes[..bytes.len() - 1000]).unwrap();
    let e = read_batch_file(&p, Cifar::Cifar10).unwrap_err().to_string();
    assert!(e.contains("test_batch_cut.bin") && e.contains("record 1016 is cut short: 2073 of 3073"), "{e}");
}
