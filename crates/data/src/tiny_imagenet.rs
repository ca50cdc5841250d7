//! Tiny-ImageNet (200 classes, 64x64 RGB) and its long-tailed versions (METHODS.md
//! section 6): the cs231n folder layout and the `.npz` repack AT-BSL reads.
//!
//! - Folder: `<root>/train/<wnid>/images/*.JPEG` (500 per class) and
//!   `<root>/val/images/*.JPEG` with `<root>/val/val_annotations.txt` (`file wnid ...`
//!   tab-separated). Labels are the wnids' positions in sorted order (torchvision's
//!   `ImageFolder` rule); files are read in sorted name order; greyscale JPEGs become RGB.
//! - `.npz` (DM-Improves-AT's repack, `train.npz` / `val.npz`): `image` u8 (N, 64, 64, 3)
//!   and `label` (N,) of any integer type; label order as stored.
//!
//! The long-tailed training sets are [`crate::long_tailed`] of these with the `exp`
//! profile: AT-BSL's 200 classes at r = 0.1 (500 494 ... 50, 39,072 images, numpy seed-0
//! reference selection) and RobustLT's first 20 classes at r = 0.1 (500 ... 50).

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

use crate::dataset::{ImageSet, ImageShape, PadCropFlip};
use crate::error::{invalid, io_err, DataError, Result};
use crate::meta::ClassInfo;
use crate::Split;

/// 3 x 64 x 64.
pub const TINY_SHAPE: ImageShape = ImageShape::new(3, 64, 64);

/// Number of classes.
pub const TINY_CLASSES: usize = 200;

/// The `.npz` repack of METHODS.md section 6 (DM-Improves-AT's): file names and md5s.
/// Where it is hosted is not part of the record, so downloads take a base URL.
pub const NPZ_FILES: [(&str, &str); 2] =
    [("train.npz", "db414016436353892fdf00cb30b9ee57"), ("val.npz", "7762694b6217fec8ba1a7be3c20ef218")];

/// Training images per class of the full set: the class metadata of both splits (as
/// CIFAR's test sets carry the training counts), until a long-tailed subset replaces it.
pub const TRAIN_PER_CLASS: usize = 500;

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io_err(dir))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Decode one JPEG as 64x64 RGB, CHW u8.
fn decode(path: &Path) -> Result<Vec<u8>> {
    let img = image::open(path).map_err(|e| DataError::Image { path: path.to_path_buf(), reason: e.to_string() })?;
    let rgb = img.to_rgb8();
    if rgb.dimensions() != (64, 64) {
        return Err(DataError::Image {
            path: path.to_path_buf(),
            reason: format!("is {}x{}, expected 64x64 (Tiny-ImageNet)", rgb.width(), rgb.height()),
        });
    }
    let mut out = vec![0u8; TINY_SHAPE.numel()];
    for (k, px) in rgb.pixels().enumerate() {
        for c in 0..3 {
            out[c * 64 * 64 + k] = px[c];
        }
    }
    Ok(out)
}

/// The wnids of `<root>/train`, sorted (the label order).
pub fn wnids(root: &Path) -> Result<Vec<String>> {
    let train = root.join("train");
    let names: Vec<String> = sorted_dir(&train)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(invalid("Tiny-ImageNet folder", format!("{} has no class folders", train.display())));
    }
    Ok(names)
}

/// Read a split of the folder layout under `root` (the `tiny-imagenet-200` folder).
pub fn read_folder(root: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let root = root.as_ref();
    let names = wnids(root)?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    match split {
        Split::Train => {
            for (label, wnid) in names.iter().enumerate() {
                let dir = root.join("train").join(wnid).join("images");
                for f in sorted_dir(&dir)?.into_iter().filter(|p| p.is_file()) {
                    pixels.extend(decode(&f)?);
                    labels.push(label as u32);
                }
            }
        }
        Split::Test => {
            let ann = root.join("val").join("val_annotations.txt");
            let text = std::fs::read_to_string(&ann).map_err(io_err(&ann))?;
            for (k, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let mut fields = line.split('\t');
                let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
                    return Err(DataError::Parse {
                        path: ann.clone(),
                        line: k + 1,
                        reason: format!("expected `file<TAB>wnid<TAB>...`, found {line:?}"),
                    });
                };
                let label = names.iter().position(|n| n == wnid).ok_or_else(|| DataError::Parse {
                    path: ann.clone(),
                    line: k + 1,
                    reason: format!("wnid {wnid:?} is not a class folder of {}", root.join("train").display()),
                })?;
                pixels.extend(decode(&root.join("val").join("images").join(file))?);
                labels.push(label as u32);
            }
        }
    }
    let classes = ClassInfo::new(names.clone(), vec![TRAIN_PER_CLASS; names.len()])?;
    Ok(ImageSet::new(pixels, labels, TINY_SHAPE, classes)?.with_augmentation(PadCropFlip::CIFAR))
}

/// Read an `.npz` repack (`image` u8 (N, 64, 64, 3), `label` (N,)); `classes` names the
/// label space (200 for Tiny-ImageNet).
pub fn read_npz(path: impl AsRef<Path>, classes: usize) -> Result<ImageSet> {
    let path = path.as_ref();
    let bad = |reason: String| DataError::Image { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(DataError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such .npz file"),
        });
    }
    let arrays = Tensor::read_npz_by_name(path, &["image", "label"])
        .map_err(|e| bad(format!("expected arrays `image` and `label`: {e}")))?;
    let (images, labels) = (&arrays[0], &arrays[1]);
    if images.dtype() != DType::U8 || images.rank() != 4 || images.dims()[1..] != [64, 64, 3] {
        return Err(bad(format!("`image` is {:?} {:?}, expected u8 (N, 64, 64, 3)", images.dtype(), images.dims())));
    }
    let n = images.dims()[0];
    if labels.dims() != [n] {
        return Err(bad(format!("`label` has shape {:?}, expected ({n},)", labels.dims())));
    }
    let hwc = images.flatten_all().and_then(|t| t.to_vec1::<u8>()).map_err(|e| bad(e.to_string()))?;
    let labels: Vec<i64> =
        labels.to_dtype(DType::I64).and_then(|t| t.to_vec1::<i64>()).map_err(|e| bad(format!("`label`: {e}")))?;
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l < 0 || l as usize >= classes) {
        return Err(bad(format!("label {l} of example {i} is outside 0..{classes}")));
    }
    let plane = 64 * 64;
    let mut pixels = vec![0u8; n * TINY_SHAPE.numel()];
    for (img, out) in hwc.chunks(plane * 3).zip(pixels.chunks_mut(plane * 3)) {
        for k in 0..plane {
            for c in 0..3 {
                out[c * plane + k] = img[k * 3 + c];
            }
        }
    }
    let names = (0..classes).map(|c| c.to_string()).collect();
    let classes = ClassInfo::new(names, vec![TRAIN_PER_CLASS; classes])?;
    let labels = labels.into_iter().map(|l| l as u32).collect();
    Ok(ImageSet::new(pixels, labels, TINY_SHAPE, classes)?.with_augmentation(PadCropFlip::CIFAR))
}

/// A split from `dir`: `dir/{train,val}.npz` if present, else the folder layout in
/// `dir/tiny-imagenet-200` or `dir` itself.
pub fn read(dir: impl AsRef<Path>, split: Split) -> Result<ImageSet> {
    let dir = dir.as_ref();
    let npz = dir.join(if split == Split::Train { "train.npz" } else { "val.npz" });
    if npz.is_file() {
        return read_npz(npz, TINY_CLASSES);
    }
    let nested = dir.join("tiny-imagenet-200");
    let root = if nested.join("train").is_dir() { nested } else { dir.to_path_buf() };
    if !root.join("train").is_dir() {
        return Err(invalid(
            "Tiny-ImageNet",
            format!(
                "{} has neither train.npz/val.npz nor a tiny-imagenet-200 folder (train/<wnid>/images, val/images)",
                dir.display()
            ),
        ));
    }
    read_folder(root, split)
}

/// Only the examples of the first `classes` classes, with that label space (RobustLT's
/// 20-class Tiny-ImageNet-LT).
pub fn first_classes(set: &ImageSet, classes: usize) -> Result<ImageSet> {
    use crate::Dataset;
    let keep: Vec<usize> = (0..set.len()).filter(|&i| (set.labels()[i] as usize) < classes).collect();
    let names = set.classes().names()[..classes].to_vec();
    let counts = set.classes().train_counts()[..classes].to_vec();
    let sub = set.subset(&keep)?;
    let labels = sub.labels().to_vec();
    ImageSet::new(sub.pixels().to_vec(), labels, TINY_SHAPE, ClassInfo::new(names, counts)?)
        .map(|s| s.with_augmentation(set.augmentation()).with_policy(set.policy()))
}
