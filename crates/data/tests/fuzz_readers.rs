//! Property tests: the data readers fed arbitrary or damaged bytes return an error that
//! names the file, and never panic.

#[path = "../../../tests/support/fuzz.rs"]
mod fuzz;

use proptest::prelude::*;
use robal_data::{cifar, tiny_imagenet, Cifar, Split};

fn write(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `bytes` as a gzip stream.
fn gzipped(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One valid CIFAR-10 record: label byte + 3072 pixel bytes.
fn record(label: u8, fill: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend(std::iter::repeat_n(fill, 3072));
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(64), ..ProptestConfig::default() })]

    #[test]
    fn cifar_batch_files_of_any_bytes_read_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..8000)) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let p = write(tmp.path(), "data_batch_1.bin", &bytes);
            match cifar::read_batch_file(&p, Cifar::Cifar10) {
                Ok(set) => prop_assert_eq!(set.pixels().len(), bytes.len() / 3073 * 3072),
                Err(e) => prop_assert!(e.to_string().contains("data_batch_1.bin"), "{}", e),
            }
            Ok(())
        })?;
    }

    #[test]
    fn truncated_or_mislabelled_cifar_records_are_errors(n in 1usize..4, cut in 1usize..3073, label in 10u8..=255) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let mut bytes: Vec<u8> = (0..n).flat_map(|i| record(i as u8, 7)).collect();
            let good = write(tmp.path(), "good.bin", &bytes);
            prop_assert_eq!(cifar::read_batch_file(&good, Cifar::Cifar10).unwrap().pixels().len(), n * 3072);
            bytes.truncate(bytes.len() - cut);
            let short = write(tmp.path(), "short.bin", &bytes);
            let e = cifar::read_batch_file(&short, Cifar::Cifar10).unwrap_err().to_string();
            prop_assert!(e.contains("short.bin"), "{}", e);
            let mut bad: Vec<u8> = record(label, 1);
            bad.extend(record(0, 2));
            let wrong = write(tmp.path(), "wrong.bin", &bad);
            let e = cifar::read_batch_file(&wrong, Cifar::Cifar10).unwrap_err().to_string();
            prop_assert!(e.contains("wrong.bin"), "{}", e);
            Ok(())
        })?;
    }

    #[test]
    fn archives_of_any_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..4000), gzip in any::<bool>()) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            // A valid gzip stream around garbage: the tar reader sees the garbage.
            let bytes = if gzip { gzipped(&bytes) } else { bytes };
            let p = write(tmp.path(), "cifar-10-binary.tar.gz", &bytes);
            let r = cifar::read(&p, Cifar::Cifar10, Split::Test);
            prop_assert!(r.is_err());
            let e = r.unwrap_err().to_string();
            prop_assert!(e.contains("cifar-10-binary.tar.gz"), "{}", e);
            Ok(())
        })?;
    }

    #[test]
    fn npz_files_of_any_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let p = write(tmp.path(), "train.npz", &bytes);
            let e = tiny_imagenet::read_npz(&p, 200).unwrap_err().to_string();
            prop_assert!(e.contains("train.npz"), "{}", e);
            Ok(())
        })?;
    }

    #[test]
    fn idx_files_of_any_bytes_read_or_fail_cleanly(
        body in proptest::collection::vec(any::<u8>(), 0..600),
        dims in proptest::collection::vec(0u32..12, 0..4),
        header in any::<bool>(),
        gzip in any::<bool>(),
    ) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            // Half the cases start with a well-formed header, so the body checks are reached.
            let mut bytes = if header { vec![0, 0, 8, dims.len() as u8] } else { Vec::new() };
            if header {
                dims.iter().for_each(|d| bytes.extend_from_slice(&d.to_be_bytes()));
            }
            bytes.extend_from_slice(&body);
            let bytes = if gzip { gzipped(&bytes) } else { bytes };
            let tmp = tempfile::tempdir().unwrap();
            let p = write(tmp.path(), "images-idx3-ubyte", &bytes);
            match robal_data::idx::read(&p) {
                Ok(a) => prop_assert_eq!(a.data.len(), a.dims.iter().product::<usize>()),
                Err(e) => prop_assert!(e.to_string().contains("images-idx3-ubyte"), "{}", e),
            }
            Ok(())
        })?;
    }
}
