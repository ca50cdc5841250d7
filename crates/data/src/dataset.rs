//! Data sets as the batch pipeline sees them, and the in-memory image set
//! that CIFAR and MNIST-LT load into.

use rand::Rng;

use crate::augment::{Policy, RandomRotation};
use crate::error::{invalid, Result};
pub use crate::image::{AugmentRng, ImageShape};
use crate::meta::{count_labels, ClassInfo};

/// Something the batch pipeline can draw examples from.
///
/// `write_example` must be deterministic given `index` and the state of `augment`,
/// and safe to call from several threads at once.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether the set is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Labels of all examples, in index order.
    fn labels(&self) -> &[u32];
    /// Class metadata (names, training counts of the training split it belongs to).
    fn classes(&self) -> &ClassInfo;
    /// Shape of every example written by [`Dataset::write_example`].
    fn shape(&self) -> ImageShape;
    /// Write example `index` as u8 CHW pixels into `out` (`shape().numel()` bytes).
    /// With `augment = Some(rng)` apply the set's training augmentation; with `None`
    /// its deterministic test transform.
    fn write_example(&self, index: usize, augment: Option<&mut AugmentRng>, out: &mut [u8]) -> Result<()>;
}

/// Training augmentation for small in-memory images (SPEC section 2):
/// a random crop of the original size from the image padded by `pad` on
/// every side (zeros, or a mirror image without the edge repeated if `reflect`),
/// then a horizontal flip with probability 1/2 if `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PadCropFlip {
    /// Padding on each side before the crop (4 on CIFAR).
    pub pad: usize,
    /// Flip horizontally with probability 1/2 (off for digits).
    pub flip: bool,
    /// Reflect padding (index -k reads k, w - 1 + k reads w - 1 - k; AT-AWP's crop)
    /// instead of zeros.
    pub reflect: bool,
}

impl PadCropFlip {
    /// CIFAR's augmentation: pad 4, flip.
    pub const CIFAR: Self = Self { pad: 4, flip: true, reflect: false };
    /// No augmentation.
    pub const NONE: Self = Self { pad: 0, flip: false, reflect: false };

    /// Apply to one CHW image `src` of `shape`, writing into `out`.
    ///
    /// Output pixel (c, y, x) = padded(c, y + dy, x' + dx) where dy, dx are uniform in
    /// `0..=2*pad`, x' = w-1-x when flipped, and padded pixels outside the image are 0.
    pub fn apply(&self, src: &[u8], shape: ImageShape, rng: &mut AugmentRng, out: &mut [u8]) {
        let (h, w) = (shape.height as isize, shape.width as isize);
        let p = self.pad as i32;
        // Draw in a fixed order so results never depend on the options' branches.
        let dy = (rng.random_range(0..=2 * p) - p) as isize;
        let dx = (rng.random_range(0..=2 * p) - p) as isize;
        let flip = rng.random_bool(0.5) && self.flip;
        for c in 0..shape.channels {
            let plane = &src[c * shape.height * shape.width..(c + 1) * shape.height * shape.width];
            let dst = &mut out[c * shape.height * shape.width..(c + 1) * shape.height * shape.width];
            let mirror = |v: isize, n: isize| {
                let v = if v < 0 { -v } else { v };
                if v >= n {
                    2 * (n - 1) - v
                } else {
                    v
                }
            };
            for y in 0..h {
                let mut sy = y + dy;
                let row = &mut dst[(y * w) as usize..((y + 1) * w) as usize];
                if (sy < 0 || sy >= h) && self.reflect {
                    sy = mirror(sy, h);
                }
                if sy < 0 || sy >= h {
                    row.fill(0);
                    continue;
                }
                for x in 0..w {
                    let xc = if flip { w - 1 - x } else { x };
                    let mut sx = xc + dx;
                    if (sx < 0 || sx >= w) && self.reflect {
                        sx = mirror(sx, w);
                    }
                    row[x as usize] = if sx < 0 || sx >= w { 0 } else { plane[(sy * w + sx) as usize] };
                }
            }
        }
    }
}

/// Images held in memory as u8 CHW pixels with u32 labels (CIFAR, MNIST-LT, subsets).
#[derive(Clone, Debug)]
pub struct ImageSet {
    pixels: Vec<u8>,
    labels: Vec<u32>,
    shape: ImageShape,
    classes: ClassInfo,
    augmentation: PadCropFlip,
    policy: Option<Policy>,
    rotation: Option<RandomRotation>,
}

impl ImageSet {
    /// Build from raw pixels (`labels.len() * shape.numel()` bytes), labels and class metadata.
    /// Labels must be in `0..classes.num_classes()`.
    pub fn new(pixels: Vec<u8>, labels: Vec<u32>, shape: ImageShape, classes: ClassInfo) -> Result<Self> {
        if pixels.len() != labels.len() * shape.numel() {
            return Err(invalid(
                "image set",
                format!(
                    "{} pixel bytes for {} labels of shape {:?} (expected {})",
                    pixels.len(),
                    labels.len(),
                    shape,
                    labels.len() * shape.numel()
                ),
            ));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes.num_classes()) {
            return Err(invalid(
                "image set",
                format!("example {i} has label {l}, expected 0..{}", classes.num_classes()),
            ));
        }
        Ok(Self { pixels, labels, shape, classes, augmentation: PadCropFlip::NONE, policy: None, rotation: None })
    }

    /// The same set with a training augmentation (used when the loader asks for one).
    pub fn with_augmentation(mut self, augmentation: PadCropFlip) -> Self {
        self.augmentation = augmentation;
        self
    }

    /// The training augmentation in use.
    pub fn augmentation(&self) -> PadCropFlip {
        self.augmentation
    }

    /// The same set with an augmentation policy applied before pad-crop-flip in
    /// training (`None`: pad-crop-flip only).
    pub fn with_policy(mut self, policy: Option<Policy>) -> Self {
        self.policy = policy;
        self
    }

    /// The augmentation policy in use, if any.
    pub fn policy(&self) -> Option<Policy> {
        self.policy
    }

    /// The same set with a random rotation applied after pad-crop-flip in training
    /// (torchvision's `RandomCrop, RandomHorizontalFlip, RandomRotation` order).
    pub fn with_rotation(mut self, rotation: Option<RandomRotation>) -> Self {
        self.rotation = rotation;
        self
    }

    /// Pixels of example `i`, u8 CHW.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.shape.numel();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// All pixels, example after example.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Count of each label in this set (not the training counts of the metadata).
    pub fn label_counts(&self) -> Vec<usize> {
        count_labels(&self.labels, self.classes.num_classes())
    }

    /// The examples at `indices`, in that order, with the same metadata.
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let n = self.shape.numel();
        let mut pixels = Vec::with_capacity(indices.len() * n);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            if i >= self.labels.len() {
                return Err(invalid("subset", format!("index {i} out of range for {} examples", self.labels.len())));
            }
            pixels.extend_from_slice(self.image(i));
            labels.push(self.labels[i]);
        }
        Ok(Self {
            pixels,
            labels,
            shape: self.shape,
            classes: self.classes.clone(),
            augmentation: self.augmentation,
            policy: self.policy,
            rotation: self.rotation,
        })
    }

    /// Every image resized to `height` x `width` by Pillow's bilinear resize
    /// ([`crate::resize::resize_bilinear`]), labels, metadata and augmentation kept (the
    /// augmentation then runs at the new size, as torchvision's `Resize` before
    /// `RandomCrop`).
    pub fn resized(&self, height: usize, width: usize) -> Result<Self> {
        let shape = ImageShape::new(self.shape.channels, height, width);
        let pixels = crate::resize::resize_all(&self.pixels, self.shape, height, width)?;
        Ok(Self {
            pixels,
            shape,
            labels: self.labels.clone(),
            classes: self.classes.clone(),
            augmentation: self.augmentation,
            policy: self.policy,
            rotation: self.rotation,
        })
    }

    /// The same images with other class metadata (e.g. the training counts of a long-tailed subset).
    pub fn with_classes(mut self, classes: ClassInfo) -> Result<Self> {
        if classes.num_classes() != self.classes.num_classes() {
            return Err(invalid(
                "class metadata",
                format!("{} classes for a set with {}", classes.num_classes(), self.classes.num_classes()),
            ));
        }
        self.classes = classes;
        Ok(self)
    }

    /// This set's own label counts become the training counts of its metadata
    /// (call on a training split so prior and shot groups describe it).
    pub fn counted_as_training(self) -> Result<Self> {
        let counts = self.label_counts();
        let names = self.classes.names().to_vec();
        self.with_classes(ClassInfo::new(names, counts)?)
    }
}

impl Dataset for ImageSet {
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
        self.shape
    }
    fn write_example(&self, index: usize, augment: Option<&mut AugmentRng>, out: &mut [u8]) -> Result<()> {
        if index >= self.labels.len() {
            return Err(invalid("example index", format!("{index} out of range for {} examples", self.labels.len())));
        }
        match augment {
            Some(rng) => {
                match &self.policy {
                    Some(p) => {
                        let img = p.apply(self.image(index), self.shape, rng);
                        self.augmentation.apply(&img, self.shape, rng, out)
                    }
                    None => self.augmentation.apply(self.image(index), self.shape, rng, out),
                }
                if let Some(r) = &self.rotation {
                    let rotated = r.apply(out, self.shape, rng);
                    out.copy_from_slice(&rotated);
                }
            }
            None => out.copy_from_slice(self.image(index)),
        }
        Ok(())
    }
}

impl ImageSet {
    /// A copy of the class metadata.
    pub fn classes_owned(&self) -> ClassInfo {
        self.classes.clone()
    }
}
