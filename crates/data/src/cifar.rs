//! Readers for the official CIFAR-10 and CIFAR-100 binary formats (SPEC section 2),
//! from single batch files, an extracted folder, or the official `.tar.gz`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::{ImageSet, ImageShape, PadCropFlip};
use crate::error::{io_err, DataError, Result};
use crate::meta::ClassInfo;

/// Which CIFAR data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cifar {
    /// CIFAR-10: records of 1 label byte + 3072 pixel bytes.
    Cifar10,
    /// CIFAR-100: records of 1 coarse-label byte, 1 fine-label byte, 3072 pixel bytes.
    Cifar100,
}

/// Training or test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training files.
    Train,
    /// The test file.
    Test,
}

/// Image shape of every CIFAR image: 3 x 32 x 32.
pub const CIFAR_SHAPE: ImageShape = ImageShape::new(3, 32, 32);

impl Cifar {
    /// Short name: `cifar10` or `cifar100`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
        }
    }

    /// Number of (fine) classes: 10 or 100.
    pub fn num_classes(self) -> usize {
        match self {
            Self::Cifar10 => 10,
            Self::Cifar100 => 100,
        }
    }

    /// Label bytes at the start of each record (the last one is the class label).
    pub fn label_bytes(self) -> usize {
        match self {
            Self::Cifar10 => 1,
            Self::Cifar100 => 2,
        }
    }

    /// Bytes per record: label bytes + 3072.
    pub fn record_len(self) -> usize {
        self.label_bytes() + CIFAR_SHAPE.numel()
    }

    fn format(self) -> &'static str {
        match self {
            Self::Cifar10 => "CIFAR-10 binary",
            Self::Cifar100 => "CIFAR-100 binary",
        }
    }

    /// Folder the official archive extracts to.
    pub fn folder(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-batches-bin",
            Self::Cifar100 => "cifar-100-binary",
        }
    }

    /// File name of the official archive.
    pub fn archive_name(self) -> &'static str {
        match self {
            Self::Cifar10 => "cifar-10-binary.tar.gz",
            Self::Cifar100 => "cifar-100-binary.tar.gz",
        }
    }

    /// Official download URL of the archive.
    pub fn url(self) -> String {
        format!("https://www.cs.toronto.edu/~kriz/{}", self.archive_name())
    }

    /// md5 of the official archive (SPEC section 2).
    pub fn archive_md5(self) -> &'static str {
        match self {
            Self::Cifar10 => "c32a1d4ab5d03f1284b67883e8d87530",
            Self::Cifar100 => "03b5dce01913d631647c71ecec9e9cb8",
        }
    }

    /// The official files of a split, in the order their records are concatenated,
    /// with the number of records each holds.
    pub fn files(self, split: Split) -> &'static [(&'static str, usize)] {
        match (self, split) {
            (Self::Cifar10, Split::Train) => &[
                ("data_batch_1.bin", 10_000),
                ("data_batch_2.bin", 10_000),
                ("data_batch_3.bin", 10_000),
                ("data_batch_4.bin", 10_000),
                ("data_batch_5.bin", 10_000),
            ],
            (Self::Cifar10, Split::Test) => &[("test_batch.bin", 10_000)],
            (Self::Cifar100, Split::Train) => &[("train.bin", 50_000)],
            (Self::Cifar100, Split::Test) => &[("test.bin", 10_000)],
        }
    }

    /// Images per class in the full balanced training set: 5000 or 500.
    pub fn train_per_class(self) -> usize {
        50_000 / self.num_classes()
    }

    /// Class names in label order (the official meta files' order).
    pub fn class_names(self) -> Vec<String> {
        let names: &[&str] = match self {
            Self::Cifar10 => &CIFAR10_NAMES,
            Self::Cifar100 => &CIFAR100_NAMES,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Metadata for the full balanced training set (every class `train_per_class`).
    pub fn balanced_classes(self) -> ClassInfo {
        ClassInfo::new(self.class_names(), vec![self.train_per_class(); self.num_classes()])
            .expect("built-in CIFAR metadata is consistent")
    }
}

const CIFAR10_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

const CIFAR100_NAMES: [&str; 100] = [
    "apple",
    "aquarium_fish",
    "baby",
    "bear",
    "beaver",
    "bed",
    "bee",
    "beetle",
    "bicycle",
    "bottle",
    "bowl",
    "boy",
    "bridge",
    "bus",
    "butterfly",
    "camel",
    "can",
    "castle",
    "caterpillar",
    "cattle",
    "chair",
    "chimpanzee",
    "clock",
    "cloud",
    "cockroach",
    "couch",
    "crab",
    "crocodile",
    "cup",
    "dinosaur",
    "dolphin",
    "elephant",
    "flatfish",
    "forest",
    "fox",
    "girl",
    "hamster",
    "house",
    "kangaroo",
    "keyboard",
    "lamp",
    "lawn_mower",
    "leopard",
    "lion",
    "lizard",
    "lobster",
    "man",
    "maple_tree",
    "motorcycle",
    "mountain",
    "mouse",
    "mushroom",
    "oak_tree",
    "orange",
    "orchid",
    "otter",
    "palm_tree",
    "pear",
    "pickup_truck",
    "pine_tree",
    "plain",
    "plate",
    "poppy",
    "porcupine",
    "possum",
    "rabbit",
    "raccoon",
    "ray",
    "road",
    "rocket",
    "rose",
    "sea",
    "seal",
    "shark",
    "shrew",
    "skunk",
    "skyscraper",
    "snail",
    "snake",
    "spider",
    "squirrel",
    "streetcar",
    "sunflower",
    "sweet_pepper",
    "table",
    "tank",
    "telephone",
    "television",
    "tiger",
    "tractor",
    "train",
    "trout",
    "tulip",
    "turtle",
    "wardrobe",
    "whale",
    "willow_tree",
    "wolf",
    "woman",
    "worm",
];

/// Layout of a fixed-size record file: `label_bytes` label bytes (the last is the
/// class label, any before it must be below `aux_classes`) followed by pixels.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordLayout {
    pub label_bytes: usize,
    pub aux_classes: usize,
    pub shape: ImageShape,
    pub num_classes: usize,
    pub format: &'static str,
}

impl RecordLayout {
    pub fn record_len(&self) -> usize {
        self.label_bytes + self.shape.numel()
    }
}

impl From<Cifar> for RecordLayout {
    fn from(kind: Cifar) -> Self {
        Self {
            label_bytes: kind.label_bytes(),
            aux_classes: 20,
            shape: CIFAR_SHAPE,
            num_classes: kind.num_classes(),
            format: kind.format(),
        }
    }
}

/// Split the records of `bytes` (named `path` in errors) into pixels and labels,
/// appending to `pixels` and `labels`. Any whole number of records is accepted.
pub(crate) fn parse_records(
    path: &Path,
    bytes: &[u8],
    layout: RecordLayout,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<usize> {
    let rl = layout.record_len();
    if !bytes.len().is_multiple_of(rl) || bytes.is_empty() {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            record_len: rl,
            record: bytes.len() / rl,
            partial: bytes.len() % rl,
            format: layout.format,
        });
    }
    let n = bytes.len() / rl;
    pixels.reserve(n * layout.shape.numel());
    labels.reserve(n);
    for (r, rec) in bytes.chunks_exact(rl).enumerate() {
        let (lab, px) = rec.split_at(layout.label_bytes);
        for &aux in &lab[..layout.label_bytes - 1] {
            if aux as usize >= layout.aux_classes {
                return Err(DataError::LabelOutOfRange {
                    path: path.to_path_buf(),
                    record: r,
                    label: aux as u32,
                    kind: "coarse",
                    num_classes: layout.aux_classes,
                });
            }
        }
        let label = lab[layout.label_bytes - 1];
        if label as usize >= layout.num_classes {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                record: r,
                label: label as u32,
                kind: if layout.label_bytes == 2 { "fine" } else { "class" },
                num_classes: layout.num_classes,
            });
        }
        labels.push(label as u32);
        pixels.extend_from_slice(px);
    }
    Ok(n)
}

fn finish(kind: Cifar, pixels: Vec<u8>, labels: Vec<u32>) -> Result<ImageSet> {
    Ok(ImageSet::new(pixels, labels, CIFAR_SHAPE, kind.balanced_classes())?.with_augmentation(PadCropFlip::CIFAR))
}

/// Read one CIFAR batch file holding any whole number of records.
///
/// Class metadata is that of the full balanced training set; CIFAR's training
/// augmentation (pad 4, crop, flip) is attached for training loaders.
pub fn read_batch_file(path: impl AsRef<Path>, kind: Cifar) -> Result<ImageSet> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    parse_records(path, &bytes, kind.into(), &mut pixels, &mut labels)?;
    finish(kind, pixels, labels)
}

fn check_count(path: &Path, kind: Cifar, found: usize, expected: usize) -> Result<()> {
    if found != expected {
        return Err(DataError::WrongRecordCount { path: path.to_path_buf(), found, expected, format: kind.format() });
    }
    Ok(())
}

/// Read a split from an extracted official folder. `dir` may be the folder itself
/// (`cifar-10-batches-bin`, `cifar-100-binary`) or its parent. Every official file
/// must be present with exactly its official record count.
pub fn read_dir(dir: impl AsRef<Path>, kind: Cifar, split: Split) -> Result<ImageSet> {
    let dir = resolve_dir(dir.as_ref(), kind);
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for &(name, expected) in kind.files(split) {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::Missing {
                path: path.clone(),
                hint: format!("expected the official {} layout; run `cargo xtask data {}`", kind.format(), kind.name()),
            },
            _ => DataError::Io { path: path.clone(), source: e },
        })?;
        let n = parse_records(&path, &bytes, kind.into(), &mut pixels, &mut labels)?;
        check_count(&path, kind, n, expected)?;
    }
    finish(kind, pixels, labels)
}

fn resolve_dir(dir: &Path, kind: Cifar) -> PathBuf {
    let nested = dir.join(kind.folder());
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// Read a split straight from the official `.tar.gz` archive (no extraction to disk).
pub fn read_tar_gz(archive: impl AsRef<Path>, kind: Cifar, split: Split) -> Result<ImageSet> {
    let archive = archive.as_ref();
    let file = std::fs::File::open(archive).map_err(io_err(archive))?;
    let wanted: HashMap<&str, usize> = kind.files(split).iter().copied().collect();
    let mut found: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = tar.entries().map_err(io_err(archive))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(archive))?;
        let path = entry.path().map_err(io_err(archive))?.into_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        if wanted.contains_key(name.as_str()) {
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(io_err(archive.join(&path)))?;
            found.insert(name, buf);
        }
    }
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for &(name, expected) in kind.files(split) {
        let member = archive.join(kind.folder()).join(name);
        let bytes = found.get(name).ok_or_else(|| DataError::Missing {
            path: member.clone(),
            hint: format!("the archive lacks this member; expected the official {}", kind.archive_name()),
        })?;
        let n = parse_records(&member, bytes, kind.into(), &mut pixels, &mut labels)?;
        check_count(&member, kind, n, expected)?;
    }
    finish(kind, pixels, labels)
}

/// Read a split from `path`: an official `.tar.gz`, an extracted folder (or its
/// parent), or a single batch file.
pub fn read(path: impl AsRef<Path>, kind: Cifar, split: Split) -> Result<ImageSet> {
    let path = path.as_ref();
    if path.is_dir() {
        read_dir(path, kind, split)
    } else if path.to_string_lossy().ends_with(".tar.gz") || path.to_string_lossy().ends_with(".tgz") {
        read_tar_gz(path, kind, split)
    } else if path.exists() {
        read_batch_file(path, kind)
    } else {
        Err(DataError::Missing {
            path: path.to_path_buf(),
            hint: format!(
                "expected a {} folder, archive or batch file; run `cargo xtask data {}`",
                kind.format(),
                kind.name()
            ),
        })
    }
}
