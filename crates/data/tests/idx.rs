//! The IDX reader on files the tests write (good raw and gzipped, truncated, wrong
//! magic, wrong element type, count mismatch, labels out of range, trailing bytes),
//! and on Debian's real Fashion-MNIST when `dataset-fashion-mnist` is installed
//! (CI installs it; there a missing package is a failure, not a skip).

use std::io::Write;
use std::path::{Path, PathBuf};

use robal_data::idx::{self, FASHION_MNIST_DIR};
use robal_data::{Dataset, Profile, Split};

fn header(ty: u8, dims: &[u32]) -> Vec<u8> {
    let mut h = vec![0, 0, ty, dims.len() as u8];
    dims.iter().for_each(|d| h.extend_from_slice(&d.to_be_bytes()));
    h
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// n images of 3x2 pixels (pixel k of image i = 10 i + k) and labels i mod 3.
fn images(n: u32) -> Vec<u8> {
    let mut b = header(0x08, &[n, 3, 2]);
    (0..n).for_each(|i| b.extend((0..6).map(|k| (10 * i + k) as u8)));
    b
}

fn labels(n: u32) -> Vec<u8> {
    let mut b = header(0x08, &[n]);
    b.extend((0..n).map(|i| (i % 3) as u8));
    b
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|c| format!("c{c}")).collect()
}

#[test]
fn raw_and_gzipped_files_read_the_same_pixels_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    for gz in [false, true] {
        let enc = |b: Vec<u8>| if gz { gzip(&b) } else { b };
        let im = write(tmp.path(), "im", &enc(images(4)));
        let lb = write(tmp.path(), "lb", &enc(labels(4)));
        let set = idx::read_pair(&im, &lb, &names(3)).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.shape(), robal_data::ImageShape::new(1, 3, 2));
        assert_eq!(set.labels(), &[0, 1, 2, 0]);
        assert_eq!(set.image(2), &[20, 21, 22, 23, 24, 25]);
    }
}

#[test]
fn a_truncated_file_names_the_file_and_the_missing_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = images(4);
    b.truncate(b.len() - 5);
    for (name, bytes) in [("cut", b.clone()), ("cut.gz", gzip(&b))] {
        let p = write(tmp.path(), name, &bytes);
        let e = idx::read(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains("truncated") && e.contains("24 bytes") && e.contains("19"), "{e}");
    }
    let p = write(tmp.path(), "header", &images(4)[..9]);
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("header") && e.contains("cut short"), "{e}");
}

#[test]
fn a_wrong_magic_number_or_element_type_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = images(2);
    b[0] = 0x42;
    let p = write(tmp.path(), "magic.idx", &b);
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("magic.idx") && e.contains("magic number"), "{e}");
    let mut b = header(0x0D, &[2, 3, 2]);
    b.extend([0u8; 48]);
    let p = write(tmp.path(), "float.idx", &b);
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("float.idx") && e.contains("0x0d") && e.contains("unsigned bytes"), "{e}");
}

#[test]
fn trailing_bytes_after_the_promised_data_are_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = labels(5);
    b.push(0);
    let p = write(tmp.path(), "long.idx", &gzip(&b));
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("long.idx") && e.contains("more data than the header"), "{e}");
}

#[test]
fn image_and_label_counts_must_agree_and_labels_fit_the_classes() {
    let tmp = tempfile::tempdir().unwrap();
    let im = write(tmp.path(), "im", &images(4));
    let lb = write(tmp.path(), "lb3", &labels(3));
    let e = idx::read_pair(&im, &lb, &names(3)).unwrap_err().to_string();
    assert!(e.contains("lb3") && e.contains("holds 3") && e.contains("expected 4"), "{e}");
    let lb = write(tmp.path(), "lb4", &labels(4));
    let e = idx::read_pair(&im, &lb, &names(2)).unwrap_err().to_string();
    assert!(e.contains("lb4") && e.contains("record 2") && e.contains("label 2"), "{e}");
    // Images where labels belong, and the reverse.
    let e = idx::read_pair(&lb, &im, &names(3)).unwrap_err().to_string();
    assert!(e.contains("lb4") && e.contains("expected 3"), "{e}");
}

#[test]
fn a_huge_header_is_refused_without_allocating_it() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "huge.gz", &gzip(&header(0x08, &[u32::MAX, u32::MAX, 28])));
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("huge.gz") && e.contains("more than"), "{e}");
    let p = write(tmp.path(), "big.gz", &gzip(&header(0x08, &[60000, 28, 28])));
    let e = idx::read(&p).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("47040000"), "{e}");
}

#[test]
fn missing_files_name_the_debian_package() {
    let tmp = tempfile::tempdir().unwrap();
    let e = robal_data::fashion_mnist_lt(tmp.path(), Profile::Exp { ratio: 0.02 }).unwrap_err().to_string();
    assert!(e.contains("train-images-idx3-ubyte.gz") && e.contains("apt-get install dataset-fashion-mnist"), "{e}");
}

#[test]
fn a_standard_folder_builds_the_long_tail_from_6000_per_class() {
    // A synthetic folder with the standard file names: 6,000 tiny images per class.
    let tmp = tempfile::tempdir().unwrap();
    let n = 60_000u32;
    let mut im = header(0x08, &[n, 1, 1]);
    im.extend((0..n).map(|i| (i % 251) as u8));
    let mut lb = header(0x08, &[n]);
    lb.extend((0..n).map(|i| (i % 10) as u8));
    write(tmp.path(), "train-images-idx3-ubyte.gz", &gzip(&im));
    write(tmp.path(), "train-labels-idx1-ubyte", &lb);
    let mut tim = header(0x08, &[30, 1, 1]);
    tim.extend(0..30u8);
    let mut tlb = header(0x08, &[30]);
    tlb.extend((0..30u8).map(|i| 9 - i % 10));
    write(tmp.path(), "t10k-images-idx3-ubyte", &tim);
    write(tmp.path(), "t10k-labels-idx1-ubyte.gz", &gzip(&tlb));
    let (train, test) = robal_data::fashion_mnist_lt(tmp.path(), Profile::Exp { ratio: 0.02 }).unwrap();
    // floor(6000 * 0.02^(c/9)), computed by hand in Python:
    // [int(6000 * 0.02 ** (c / 9)) for c in range(10)]
    let expected = [6000, 3884, 2515, 1628, 1054, 682, 442, 286, 185, 120];
    assert_eq!(train.label_counts(), expected);
    assert_eq!(train.classes().train_counts(), expected);
    assert_eq!(train.len(), 16_796);
    assert_eq!(train.classes().names()[9], "Ankle boot");
    // The test split is sorted by class, stably, and carries the training counts.
    assert_eq!(test.labels()[..4], [0, 0, 0, 1]);
    assert_eq!(test.image(0), &[9]);
    assert_eq!(test.image(1), &[19]);
    assert_eq!(test.classes().train_counts(), expected);
    // The choice is seeded and fixed: the same images every time.
    let (again, _) = robal_data::fashion_mnist_lt(tmp.path(), Profile::Exp { ratio: 0.02 }).unwrap();
    assert_eq!(again.pixels(), train.pixels());
}

/// Debian's `dataset-fashion-mnist`, read whole. The expected values were computed
/// from the same files with Python's gzip, hashlib and collections:
///
/// ```python
/// im = gzip.open(s + '-images-idx3-ubyte.gz').read()[16:]
/// lb = gzip.open(s + '-labels-idx1-ubyte.gz').read()[8:]
/// print(len(lb), sum(im), list(lb[:10]), sha256(im).hexdigest()[:16], sha256(lb).hexdigest()[:16])
/// # train 60000 3431114169 [9, 0, 0, 3, 0, 2, 7, 2, 5, 5] 2e487a6c89124f78 657fbd221bfc9f41
/// # t10k  10000  573469082 [9, 2, 1, 1, 6, 1, 4, 6, 5, 7] c867c93ff9536059 3d0e6c6ea990b53b
/// ```
#[test]
fn debian_fashion_mnist_reads_as_python_reads_it() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.join("train-images-idx3-ubyte.gz").is_file() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs dataset-fashion-mnist (.ci/run), but {FASHION_MNIST_DIR} has no train-images-idx3-ubyte.gz"
        );
        eprintln!("SKIPPED: {FASHION_MNIST_DIR} is absent (apt-get install dataset-fashion-mnist)");
        return;
    }
    use sha2::Digest;
    let hex16 = |b: &[u8]| sha2::Sha256::digest(b).iter().take(8).map(|x| format!("{x:02x}")).collect::<String>();
    for (split, n, sum, first, h_im, h_lb) in [
        (
            Split::Train,
            60_000,
            3_431_114_169u64,
            [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
            "2e487a6c89124f78",
            "657fbd221bfc9f41",
        ),
        (Split::Test, 10_000, 573_469_082, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7], "c867c93ff9536059", "3d0e6c6ea990b53b"),
    ] {
        let set = idx::fashion_mnist(dir, split).unwrap();
        assert_eq!(set.len(), n);
        assert_eq!(set.shape(), robal_data::ImageShape::new(1, 28, 28));
        assert_eq!(set.pixels().iter().map(|&p| p as u64).sum::<u64>(), sum);
        assert_eq!(set.labels()[..10], first);
        assert_eq!(hex16(set.pixels()), h_im);
        let label_bytes: Vec<u8> = set.labels().iter().map(|&l| l as u8).collect();
        assert_eq!(hex16(&label_bytes), h_lb);
        assert!(set.label_counts().iter().all(|&c| c == n / 10));
    }
    let (train, test) = robal_data::fashion_mnist_lt(dir, Profile::Exp { ratio: 0.02 }).unwrap();
    assert_eq!(train.label_counts(), [6000, 3884, 2515, 1628, 1054, 682, 442, 286, 185, 120]);
    assert_eq!(test.len(), 10_000);
    assert!(test.labels().windows(2).all(|w| w[0] <= w[1]));
}
