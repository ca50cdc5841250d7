//! The IDX file format of MNIST, Fashion-MNIST, KMNIST and EMNIST, raw or gzipped,
//! and the long-tailed `fashion-mnist-lt` set built from Debian's
//! `dataset-fashion-mnist` package.
//!
//! An IDX file is a 4-byte magic number `00 00 T D` (T the element type, 0x08 for
//! unsigned bytes, the only type these image sets use; D the number of dimensions),
//! D big-endian u32 sizes, then the elements in row-major order. Images are
//! `(N, rows, cols)` (`idx3`), labels `(N,)` (`idx1`). EMNIST stores each image
//! transposed (column-major); [`read_pair`] returns pixels as stored.
//!
//! Every error names the file and what was expected: a wrong magic number, an element
//! type other than u8, a truncated or over-long body, image and label counts that
//! differ, or a label outside the class range. A gzipped file is decompressed only
//! as far as its header promises (plus one byte to detect trailing data), so a
//! damaged header cannot make the reader allocate more than the file describes.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::cifar::Split;
use crate::dataset::{ImageSet, ImageShape, PadCropFlip};
use crate::error::{invalid, io_err, DataError, Result};
use crate::longtail::{select, Profile, Selection};
use crate::meta::ClassInfo;

/// Element type code of unsigned bytes, the only one the image sets use.
pub const U8: u8 = 0x08;

/// Largest element count accepted from a header (4 GiB of u8): larger headers are
/// damaged files, not data sets.
const MAX_ELEMENTS: usize = 1 << 32;

/// One IDX array: its sizes and its u8 elements in row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Sizes, outermost first (images: N, rows, cols; labels: N).
    pub dims: Vec<usize>,
    /// The elements, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

fn format_err(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Parse { path: path.to_path_buf(), line: 0, reason: reason.into() }
}

/// Read an IDX file, raw or gzipped (recognised by its `1f 8b` magic, whatever its name).
pub fn read(path: impl AsRef<Path>) -> Result<IdxArray> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    parse(path, std::io::BufReader::new(file))
}

/// Parse an IDX stream (raw or gzipped) named `path` in errors.
pub fn parse(path: &Path, mut reader: impl Read) -> Result<IdxArray> {
    let mut head = [0u8; 2];
    let got = read_up_to(path, &mut reader, &mut head)?;
    let chained = std::io::Cursor::new(head[..got].to_vec()).chain(reader);
    if got == 2 && head == [0x1f, 0x8b] {
        parse_raw(path, flate2::read::MultiGzDecoder::new(chained), true)
    } else {
        parse_raw(path, chained, false)
    }
}

/// Read until `buf` is full or the stream ends; the number of bytes read.
fn read_up_to(path: &Path, reader: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path)(e)),
        }
    }
    Ok(n)
}

fn parse_raw(path: &Path, mut reader: impl Read, gzipped: bool) -> Result<IdxArray> {
    let what = if gzipped { "gzipped IDX file" } else { "IDX file" };
    let mut magic = [0u8; 4];
    let n = read_up_to(path, &mut reader, &mut magic)?;
    if n < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(format_err(
            path,
            format!("not an {what}: magic number {:02x?}, expected 00 00 08 <dims>", &magic[..n]),
        ));
    }
    if magic[2] != U8 {
        return Err(format_err(
            path,
            format!("element type 0x{:02x}; only unsigned bytes (0x08) are supported", magic[2]),
        ));
    }
    let ndim = magic[3] as usize;
    if ndim == 0 {
        return Err(format_err(path, "0 dimensions in the header; expected 1 (labels) or 3 (images)"));
    }
    let mut sizes = vec![0u8; 4 * ndim];
    if read_up_to(path, &mut reader, &mut sizes)? < sizes.len() {
        return Err(format_err(path, format!("header cut short: {ndim} dimension sizes expected")));
    }
    let dims: Vec<usize> = sizes.chunks(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    let total = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&t| t <= MAX_ELEMENTS)
        .ok_or_else(|| format_err(path, format!("sizes {dims:?} describe more than {MAX_ELEMENTS} elements")))?;
    let mut data = Vec::new();
    // One byte more than promised, so that trailing data is seen without reading it all.
    let read = (&mut reader)
        .take(total as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| format_err(path, format!("cannot read the {what}'s body: {e}")))?;
    if read != total {
        return Err(format_err(
            path,
            if read < total {
                format!("truncated: the header {dims:?} promises {total} bytes of data, the file holds {read}")
            } else {
                format!("more data than the header {dims:?} promises ({total} bytes): not an IDX file of these sizes")
            },
        ));
    }
    Ok(IdxArray { dims, data })
}

/// Read an image file `(N, rows, cols)` and a label file `(N,)` of the same N into an
/// [`ImageSet`] with `class_names.len()` classes (labels must lie in that range; every
/// class counted as one training image until [`ImageSet::counted_as_training`]).
pub fn read_pair(images: &Path, labels: &Path, class_names: &[String]) -> Result<ImageSet> {
    let img = read(images)?;
    let lab = read(labels)?;
    let [n, rows, cols] = img.dims[..] else {
        return Err(format_err(images, format!("{} dimensions, expected 3 (images x rows x cols)", img.dims.len())));
    };
    let [n_labels] = lab.dims[..] else {
        return Err(format_err(labels, format!("{} dimensions, expected 1 (labels)", lab.dims.len())));
    };
    if n != n_labels {
        return Err(DataError::WrongRecordCount {
            path: labels.to_path_buf(),
            found: n_labels,
            expected: n,
            format: "IDX labels, one per image of the image file",
        });
    }
    if rows == 0 || cols == 0 {
        return Err(format_err(images, format!("images of {rows}x{cols} pixels")));
    }
    if let Some((record, &l)) = lab.data.iter().enumerate().find(|(_, &l)| l as usize >= class_names.len()) {
        return Err(DataError::LabelOutOfRange {
            path: labels.to_path_buf(),
            record,
            label: l as u32,
            kind: "class",
            num_classes: class_names.len(),
        });
    }
    let labels = lab.data.iter().map(|&l| l as u32).collect();
    ImageSet::new(
        img.data,
        labels,
        ImageShape::new(1, rows, cols),
        ClassInfo::new(class_names.to_vec(), vec![1; class_names.len()])?,
    )
}

/// The file of `split`'s images or labels under `dir` with the standard names
/// (`train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, ...), gzipped (`.gz`) or raw.
pub fn file_in(dir: &Path, split: Split, labels: bool) -> Result<PathBuf> {
    let prefix = if split == Split::Train { "train" } else { "t10k" };
    let stem = if labels { format!("{prefix}-labels-idx1-ubyte") } else { format!("{prefix}-images-idx3-ubyte") };
    let candidates = [dir.join(format!("{stem}.gz")), dir.join(&stem)];
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| DataError::Missing {
        path: candidates[0].clone(),
        hint: format!(
            "neither {stem}.gz nor {stem} is in {}; for Fashion-MNIST run `apt-get install dataset-fashion-mnist` \
             (it installs {FASHION_MNIST_DIR}) or set data.dir to a folder holding the four IDX files",
            dir.display()
        ),
    })
}

/// Where Debian's `dataset-fashion-mnist` package installs the four files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST's class names, label 0 to 9.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Training images per class of Fashion-MNIST (img_max of the long tail).
pub const FASHION_MNIST_PER_CLASS: usize = 6000;

/// Seed of the per-class image choice of `fashion-mnist-lt` (fixed: the data set is
/// the same for every training seed).
pub const FASHION_MNIST_LT_SEED: u64 = 0;

/// Training augmentation for Fashion-MNIST: shift by up to 2 pixels and flip
/// horizontally (garments are left-right symmetric, digits are not).
pub const FASHION_MNIST_AUGMENTATION: PadCropFlip = PadCropFlip { pad: 2, flip: true, reflect: false };

/// The whole Fashion-MNIST split (60,000 or 10,000 images) from `dir`.
pub fn fashion_mnist(dir: &Path, split: Split) -> Result<ImageSet> {
    let names: Vec<String> = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    read_pair(&file_in(dir, split, false)?, &file_in(dir, split, true)?, &names)
}

/// Fashion-MNIST-LT: the training split long-tailed by `profile` from img_max 6,000
/// (exp, ratio 0.02: 6000, 3884, 2515, 1628, 1054, 682, 442, 286, 185, 120; 16,796
/// images), each class's images chosen by a seeded draw ([`FASHION_MNIST_LT_SEED`]) and
/// kept in file order; the test split is all 10,000 t10k images (1,000 per class),
/// ordered by class (stable), so that N evenly spaced test images are N/10 per class.
/// Both splits carry the long-tailed training counts as metadata.
pub fn fashion_mnist_lt(dir: &Path, profile: Profile) -> Result<(ImageSet, ImageSet)> {
    let full = fashion_mnist(dir, Split::Train)?;
    let counts = profile.counts(FASHION_MNIST_CLASSES.len(), FASHION_MNIST_PER_CLASS as f64)?;
    let available = full.label_counts();
    if let Some((c, (&want, &have))) = counts.iter().zip(&available).enumerate().find(|(_, (w, h))| w > h) {
        return Err(invalid(
            "fashion-mnist-lt",
            format!("class {c} needs {want} training images, the files hold {have} (not the full Fashion-MNIST?)"),
        ));
    }
    let idx =
        select(crate::dataset::Dataset::labels(&full), &counts, Selection::Seeded { seed: FASHION_MNIST_LT_SEED })?;
    let train = full.subset(&idx)?.counted_as_training()?.with_augmentation(FASHION_MNIST_AUGMENTATION);
    let test = fashion_mnist(dir, Split::Test)?;
    let mut order: Vec<usize> = (0..crate::dataset::Dataset::len(&test)).collect();
    order.sort_by_key(|&i| crate::dataset::Dataset::labels(&test)[i]);
    let test = test.subset(&order)?.with_classes(train.classes_owned())?;
    Ok((train, test))
}
