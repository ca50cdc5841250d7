//! ImageNet-LT: the standard split files (`relative/path.JPEG label` per line) over
//! an image root, decoded with the `image` crate and cropped to a fixed size.

use std::path::{Path, PathBuf};

use image::imageops::{self, FilterType};
use image::RgbImage;
use rand::Rng;

use crate::dataset::{AugmentRng, Dataset, ImageShape};
use crate::error::{invalid, io_err, DataError, Result};
use crate::meta::{count_labels, ClassInfo};

/// One parsed line of a split file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitEntry {
    /// Image path relative to the image root.
    pub path: String,
    /// Class label.
    pub label: u32,
}

/// Parse a split file: one `relative/path label` per non-empty line.
/// Labels must be below `num_classes`.
pub fn read_split_file(path: impl AsRef<Path>, num_classes: usize) -> Result<Vec<SplitEntry>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let mut entries = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parse_err = |reason: String| DataError::Parse { path: path.to_path_buf(), line: k + 1, reason };
        let (file, label) = line
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| parse_err(format!("expected `relative/path.JPEG label`, found {line:?}")))?;
        let label: u32 =
            label.parse().map_err(|_| parse_err(format!("label {label:?} is not a non-negative integer")))?;
        if label as usize >= num_classes {
            return Err(parse_err(format!("label {label} is outside 0..{num_classes}")));
        }
        entries.push(SplitEntry { path: file.trim().to_string(), label });
    }
    if entries.is_empty() {
        return Err(DataError::Parse { path: path.to_path_buf(), line: 0, reason: "no entries".into() });
    }
    Ok(entries)
}

/// Class metadata from a training split: counts per class and generic names
/// (`class_000`, ...) unless `names` is given.
pub fn classes_from_split(train: &[SplitEntry], num_classes: usize, names: Option<Vec<String>>) -> Result<ClassInfo> {
    let labels: Vec<u32> = train.iter().map(|e| e.label).collect();
    let names = names.unwrap_or_else(|| (0..num_classes).map(|c| format!("class_{c:03}")).collect());
    ClassInfo::new(names, count_labels(&labels, num_classes))
}

/// Crop and resize settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropConfig {
    /// Output side length (224 for the standard ImageNet-LT models).
    pub size: usize,
    /// Test transform: resize the shorter side to this, then centre-crop `size` (256 for 224).
    pub resize: usize,
    /// Training random-resized-crop area fraction range (0.08, 1.0 as torchvision).
    pub scale: (f64, f64),
    /// Training aspect-ratio range (3/4, 4/3 as torchvision), sampled log-uniformly.
    pub ratio: (f64, f64),
}

impl CropConfig {
    /// The standard settings for an output side `size`: resize = size * 256 / 224.
    pub fn standard(size: usize) -> Self {
        Self { size, resize: (size * 256).div_ceil(224), scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }
}

/// An ImageNet-LT split over an image root, decoded lazily.
#[derive(Clone, Debug)]
pub struct ImageNetLt {
    root: PathBuf,
    paths: Vec<String>,
    labels: Vec<u32>,
    classes: ClassInfo,
    crop: CropConfig,
}

impl ImageNetLt {
    /// Open `split_file` over `root` with the classes of the training split.
    pub fn open(
        root: impl Into<PathBuf>,
        split_file: impl AsRef<Path>,
        classes: ClassInfo,
        crop: CropConfig,
    ) -> Result<Self> {
        if crop.size == 0 || crop.resize < crop.size {
            return Err(invalid(
                "crop",
                format!("size {} and resize {} (need 0 < size <= resize)", crop.size, crop.resize),
            ));
        }
        let entries = read_split_file(split_file, classes.num_classes())?;
        let (paths, labels) = entries.into_iter().map(|e| (e.path, e.label)).unzip();
        Ok(Self { root: root.into(), paths, labels, classes, crop })
    }

    /// Full path of example `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.root.join(&self.paths[i])
    }

    fn decode(&self, i: usize) -> Result<RgbImage> {
        let path = self.path(i);
        let reader = image::ImageReader::open(&path).map_err(io_err(&path))?;
        let img = reader.with_guessed_format().map_err(io_err(&path))?.decode();
        Ok(img.map_err(|e| DataError::Image { path, reason: e.to_string() })?.to_rgb8())
    }
}

/// Random-resized-crop window (x, y, w, h) as torchvision: up to 10 tries of an
/// area fraction in `scale` and log-uniform aspect ratio in `ratio`; else a centre
/// crop with the ratio clamped to the range.
pub fn random_resized_window(width: u32, height: u32, crop: &CropConfig, rng: &mut AugmentRng) -> (u32, u32, u32, u32) {
    let (w0, h0) = (width as f64, height as f64);
    let area = w0 * h0;
    let (lr0, lr1) = (crop.ratio.0.ln(), crop.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(crop.scale.0..=crop.scale.1);
        let aspect = rng.random_range(lr0..=lr1).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w > 0.0 && h > 0.0 && w <= w0 && h <= h0 {
            let (w, h) = (w as u32, h as u32);
            let x = rng.random_range(0..=width - w);
            let y = rng.random_range(0..=height - h);
            return (x, y, w, h);
        }
    }
    let in_ratio = w0 / h0;
    let (w, h) = if in_ratio < crop.ratio.0 {
        (w0, (w0 / crop.ratio.0).round())
    } else if in_ratio > crop.ratio.1 {
        ((h0 * crop.ratio.1).round(), h0)
    } else {
        (w0, h0)
    };
    let (w, h) = (w as u32, h as u32);
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Resize so the shorter side is `resize`, then take the centred `size` x `size` crop.
pub fn resize_centre_crop(img: &RgbImage, resize: u32, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = if w <= h {
        (resize, ((h as u64 * resize as u64) as f64 / w as f64).round().max(resize as f64) as u32)
    } else {
        (((w as u64 * resize as u64) as f64 / h as f64).round().max(resize as f64) as u32, resize)
    };
    let resized = imageops::resize(img, nw, nh, FilterType::Triangle);
    imageops::crop_imm(&resized, (nw - size) / 2, (nh - size) / 2, size, size).to_image()
}

fn write_chw(img: &RgbImage, out: &mut [u8]) {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    for (k, px) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + k] = px.0[c];
        }
    }
}

impl Dataset for ImageNetLt {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn labels(&self) -> &[u32] {
        &self.labels
    }
    fn classes(&self) -> &ClassInfo {
        &self.classes
    }
    fn shape(&self) -> ImageShape {
        ImageShape::new(3, self.crop.size, self.crop.size)
    }
    fn write_example(&self, index: usize, augment: Option<&mut AugmentRng>, out: &mut [u8]) -> Result<()> {
        if index >= self.len() {
            return Err(invalid("example index", format!("{index} out of range for {} examples", self.len())));
        }
        let img = self.decode(index)?;
        let size = self.crop.size as u32;
        let out_img = match augment {
            Some(rng) => {
                let (x, y, w, h) = random_resized_window(img.width(), img.height(), &self.crop, rng);
                let window = imageops::crop_imm(&img, x, y, w, h).to_image();
                let mut r = imageops::resize(&window, size, size, FilterType::Triangle);
                if rng.random_bool(0.5) {
                    imageops::flip_horizontal_in_place(&mut r);
                }
                r
            }
            None => resize_centre_crop(&img, self.crop.resize as u32, size),
        };
        write_chw(&out_img, out);
        Ok(())
    }
}
