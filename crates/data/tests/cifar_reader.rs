//! CIFAR binary readers on synthetic records whose every byte is known.

use std::io::Write;
use std::path::Path;

use robal_data::cifar::{read, read_batch_file, read_dir, read_tar_gz};
use robal_data::{Cifar, Dataset, Split};

/// Record r of a synthetic CIFAR-10 file: label r % 10, pixel p = (r * 31 + p) % 256.
fn c10_records(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..n {
        out.push((r % 10) as u8);
        out.extend((0..3072).map(|p| ((r * 31 + p) % 256) as u8));
    }
    out
}

fn c100_records(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for r in 0..n {
        out.push((r % 20) as u8);
        out.push((r % 100) as u8);
        out.extend((0..3072).map(|p| ((r * 17 + p) % 256) as u8));
    }
    out
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::File::create(path).unwrap().write_all(bytes).unwrap();
}

#[test]
fn batch_file_with_any_whole_number_of_records() {
    let dir = tempfile::tempdir().unwrap();
    for n in [1usize, 7, 1017] {
        let p = dir.path().join(format!("b{n}.bin"));
        write(&p, &c10_records(n));
        let set = read_batch_file(&p, Cifar::Cifar10).unwrap();
        assert_eq!(set.len(), n);
        let last = n - 1;
        assert_eq!(set.labels()[last], (last % 10) as u32);
        assert_eq!(set.image(last)[1024], ((last * 31 + 1024) % 256) as u8, "G plane starts at pixel 1024");
    }
}

#[test]
fn cifar100_uses_the_fine_label() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("train.bin");
    write(&p, &c100_records(150));
    let set = read_batch_file(&p, Cifar::Cifar100).unwrap();
    assert_eq!(set.labels()[123], 23);
    assert_eq!(set.image(5)[0], 85, "record 5, pixel 0: (5 * 17 + 0) % 256");
    assert_eq!(set.classes().num_classes(), 100);
    assert_eq!(set.classes().names()[99], "worm");
}

#[test]
fn truncated_file_names_file_record_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data_batch_1.bin");
    let mut bytes = c10_records(5);
    bytes.truncate(4 * 3073 + 100);
    write(&p, &bytes);
    let e = read_batch_file(&p, Cifar::Cifar10).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin"), "{e}");
    assert!(e.contains("record 4 is cut short: 100 of 3073 bytes"), "{e}");
    let empty = dir.path().join("empty.bin");
    write(&empty, &[]);
    assert!(read_batch_file(&empty, Cifar::Cifar10).unwrap_err().to_string().contains("empty.bin"));
}

#[test]
fn out_of_range_labels_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.bin");
    let mut bytes = c10_records(3);
    bytes[2 * 3073] = 10;
    write(&p, &bytes);
    let e = read_batch_file(&p, Cifar::Cifar10).unwrap_err().to_string();
    assert!(e.contains("record 2 has label 10, expected a class label in 0..10"), "{e}");

    let mut bytes = c100_records(3);
    bytes[3074 + 1] = 100;
    write(&p, &bytes);
    let e = read_batch_file(&p, Cifar::Cifar100).unwrap_err().to_string();
    assert!(e.contains("record 1 has label 100, expected a fine label"), "{e}");
    let mut bytes = c100_records(3);
    bytes[0] = 20;
    write(&p, &bytes);
    let e = read_batch_file(&p, Cifar::Cifar100).unwrap_err().to_string();
    assert!(e.contains("record 0 has label 20, expected a coarse label"), "{e}");
}

#[test]
fn folder_reader_checks_official_counts_and_names_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&folder).unwrap();
    write(&folder.join("test_batch.bin"), &c10_records(3));
    let e = read_dir(dir.path(), Cifar::Cifar10, Split::Test).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin: holds 3 records, expected 10000"), "{e}");
    let e = read_dir(dir.path(), Cifar::Cifar10, Split::Train).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin: not found") && e.contains("cargo xtask data cifar10"), "{e}");
    write(&folder.join("test_batch.bin"), &c10_records(10_001));
    let e = read_dir(&folder, Cifar::Cifar10, Split::Test).unwrap_err().to_string();
    assert!(e.contains("holds 10001 records, expected 10000"), "{e}");
}

#[test]
fn tar_gz_and_folder_give_identical_sets() {
    let dir = tempfile::tempdir().unwrap();
    let records = c10_records(10_000);
    let archive = dir.path().join("cifar-10-binary.tar.gz");
    {
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&archive).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_size(records.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "cifar-10-batches-bin/test_batch.bin", records.as_slice()).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let from_tar = read_tar_gz(&archive, Cifar::Cifar10, Split::Test).unwrap();
    let folder = dir.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&folder).unwrap();
    write(&folder.join("test_batch.bin"), &records);
    let from_dir = read(dir.path(), Cifar::Cifar10, Split::Test).unwrap();
    assert_eq!(from_tar.len(), 10_000);
    assert_eq!(from_tar.labels(), from_dir.labels());
    assert_eq!(from_tar.pixels(), from_dir.pixels());
    let e = read_tar_gz(&archive, Cifar::Cifar10, Split::Train).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("lacks this member"), "{e}");
}

#[test]
fn missing_path_error_says_how_to_get_the_data() {
    let e = read("/nonexistent/cifar", Cifar::Cifar100, Split::Train).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/cifar") && e.contains("cargo xtask data cifar100"), "{e}");
}
