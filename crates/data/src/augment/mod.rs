//! Automatic augmentation policies on u8 images, applied before pad-crop-flip, as
//! torchvision defines them (METHODS.md section 7): AutoAugment with the CIFAR-10
//! policy, RandAugment(N, M) and TrivialAugmentWide. The ops ([`ops`]) follow Pillow,
//! the backend torchvision uses for PIL images; the draws use the example's own
//! ChaCha8 stream, so runs are reproducible but not draw-for-draw torch's.

pub mod ops;
pub mod rotation;

pub use ops::{apply, Op};
use rand::Rng;
pub use rotation::RandomRotation;

use crate::image::{AugmentRng, ImageShape};

/// An augmentation policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// AutoAugment's CIFAR-10 policy: one of 25 sub-policies, each of two ops applied
    /// with its own probability at its own magnitude bin (10 bins).
    AutoAugmentCifar10,
    /// RandAugment: `n` ops drawn uniformly from 14, each at bin `m` of `bins` (31).
    RandAugment {
        /// Ops per image (2).
        n: usize,
        /// Magnitude bin (8 for AT-BSL; 9 is torchvision's default).
        m: usize,
        /// Number of bins (31).
        bins: usize,
    },
    /// TrivialAugmentWide: one op drawn uniformly from 14, at a uniform bin of 31 of
    /// its wide range.
    TrivialAugmentWide,
}

/// The ops torchvision samples from (AutoAugment adds Invert).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Identity.
    Identity,
    /// ShearX.
    ShearX,
    /// ShearY.
    ShearY,
    /// TranslateX.
    TranslateX,
    /// TranslateY.
    TranslateY,
    /// Rotate.
    Rotate,
    /// Brightness.
    Brightness,
    /// Color.
    Color,
    /// Contrast.
    Contrast,
    /// Sharpness.
    Sharpness,
    /// Posterize.
    Posterize,
    /// Solarize.
    Solarize,
    /// AutoContrast.
    AutoContrast,
    /// Equalize.
    Equalize,
    /// Invert.
    Invert,
}

use OpKind::*;

/// RandAugment's and TrivialAugment's 14 ops, in torchvision's order.
pub const SAMPLED_OPS: [OpKind; 14] = [
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
];

type SubPolicy = [(OpKind, f64, usize); 2];

/// AutoAugment's CIFAR-10 policy: (op, probability, magnitude bin) pairs.
pub const CIFAR10_POLICY: [SubPolicy; 25] = [
    [(Invert, 0.1, 0), (Contrast, 0.2, 6)],
    [(Rotate, 0.7, 2), (TranslateX, 0.3, 9)],
    [(Sharpness, 0.8, 1), (Sharpness, 0.9, 3)],
    [(ShearY, 0.5, 8), (TranslateY, 0.7, 9)],
    [(AutoContrast, 0.5, 0), (Equalize, 0.9, 0)],
    [(ShearY, 0.2, 7), (Posterize, 0.3, 7)],
    [(Color, 0.4, 3), (Brightness, 0.6, 7)],
    [(Sharpness, 0.3, 9), (Brightness, 0.7, 9)],
    [(Equalize, 0.6, 0), (Equalize, 0.5, 0)],
    [(Contrast, 0.6, 7), (Sharpness, 0.6, 5)],
    [(Color, 0.7, 7), (TranslateX, 0.5, 8)],
    [(Equalize, 0.3, 0), (AutoContrast, 0.4, 0)],
    [(TranslateY, 0.4, 3), (Sharpness, 0.2, 6)],
    [(Brightness, 0.9, 6), (Color, 0.2, 8)],
    [(Solarize, 0.5, 2), (Invert, 0.0, 0)],
    [(Equalize, 0.2, 0), (AutoContrast, 0.6, 0)],
    [(Equalize, 0.2, 0), (Equalize, 0.6, 0)],
    [(Color, 0.9, 9), (Equalize, 0.6, 0)],
    [(AutoContrast, 0.8, 0), (Solarize, 0.2, 8)],
    [(Brightness, 0.1, 3), (Color, 0.7, 0)],
    [(Solarize, 0.4, 5), (AutoContrast, 0.9, 0)],
    [(TranslateY, 0.9, 9), (TranslateY, 0.7, 9)],
    [(AutoContrast, 0.9, 0), (Solarize, 0.8, 3)],
    [(Equalize, 0.8, 0), (Invert, 0.1, 0)],
    [(TranslateY, 0.7, 9), (AutoContrast, 0.9, 0)],
];

/// torch.linspace(start, end, steps)[i] in float32 (its two-sided formula).
fn linspace(start: f32, end: f32, steps: usize, i: usize) -> f32 {
    if steps <= 1 {
        return start;
    }
    let step = (end - start) / (steps - 1) as f32;
    if i < steps / 2 {
        start + step * i as f32
    } else {
        end - step * (steps - i - 1) as f32
    }
}

/// Which magnitude range: torchvision's standard space or TrivialAugment's wide one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// AutoAugment and RandAugment.
    Standard,
    /// TrivialAugmentWide.
    Wide,
}

/// The magnitude of `kind` at bin `i` of `bins` for an image of `shape`, and whether
/// it takes a random sign (torchvision's `_augmentation_space`).
pub fn magnitude(kind: OpKind, space: Space, bins: usize, i: usize, shape: ImageShape) -> (f64, bool) {
    let wide = space == Space::Wide;
    let lin = |end: f32| linspace(0.0, end, bins, i) as f64;
    match kind {
        ShearX | ShearY => (lin(if wide { 0.99 } else { 0.3 }), true),
        TranslateX => (lin(if wide { 32.0 } else { 150.0 / 331.0 * shape.width as f32 }), true),
        TranslateY => (lin(if wide { 32.0 } else { 150.0 / 331.0 * shape.height as f32 }), true),
        Rotate => (lin(if wide { 135.0 } else { 30.0 }), true),
        Brightness | Color | Contrast | Sharpness => (lin(if wide { 0.99 } else { 0.9 }), true),
        Posterize => {
            let span = if wide { 6.0 } else { 4.0 };
            let q = (i as f32 / ((bins - 1) as f32 / span)).round_ties_even();
            ((8 - q as i64) as f64, false)
        }
        Solarize => (linspace(255.0, 0.0, bins, i) as f64, false),
        Identity | AutoContrast | Equalize | Invert => (0.0, false),
    }
}

/// The op of `kind` at magnitude `m`.
pub fn op(kind: OpKind, m: f64) -> Op {
    match kind {
        Identity => Op::Identity,
        ShearX => Op::ShearX(m),
        ShearY => Op::ShearY(m),
        TranslateX => Op::TranslateX(m),
        TranslateY => Op::TranslateY(m),
        Rotate => Op::Rotate(m),
        Brightness => Op::Brightness(m),
        Color => Op::Color(m),
        Contrast => Op::Contrast(m),
        Sharpness => Op::Sharpness(m),
        Posterize => Op::Posterize(m),
        Solarize => Op::Solarize(m),
        AutoContrast => Op::AutoContrast,
        Equalize => Op::Equalize,
        Invert => Op::Invert,
    }
}

impl Policy {
    /// RandAugment(n, m) on 31 bins.
    pub fn rand_augment(n: usize, m: usize) -> Self {
        Policy::RandAugment { n, m, bins: 31 }
    }

    /// The ops this policy applies to one image, drawn from `rng`, in order.
    pub fn draw(&self, shape: ImageShape, rng: &mut AugmentRng) -> Vec<Op> {
        match *self {
            Policy::AutoAugmentCifar10 => {
                let sub = CIFAR10_POLICY[rng.random_range(0..CIFAR10_POLICY.len())];
                let probs: [f64; 2] = [rng.random(), rng.random()];
                let signs: [bool; 2] = [rng.random(), rng.random()];
                sub.iter()
                    .zip(probs.iter().zip(signs))
                    .filter(|(&(_, p, _), (&u, _))| u <= p)
                    .map(|(&(kind, _, bin), (_, negative))| {
                        let (m, signed) = magnitude(kind, Space::Standard, 10, bin, shape);
                        op(kind, if signed && negative { -m } else { m })
                    })
                    .collect()
            }
            Policy::RandAugment { n, m, bins } => (0..n)
                .map(|_| {
                    let kind = SAMPLED_OPS[rng.random_range(0..SAMPLED_OPS.len())];
                    let (mag, signed) = magnitude(kind, Space::Standard, bins, m.min(bins - 1), shape);
                    let negative: bool = rng.random();
                    op(kind, if signed && negative { -mag } else { mag })
                })
                .collect(),
            Policy::TrivialAugmentWide => {
                let kind = SAMPLED_OPS[rng.random_range(0..SAMPLED_OPS.len())];
                let bin = rng.random_range(0..31);
                let (mag, signed) = magnitude(kind, Space::Wide, 31, bin, shape);
                let negative: bool = rng.random();
                vec![op(kind, if signed && negative { -mag } else { mag })]
            }
        }
    }

    /// Apply the policy to the CHW image `src`.
    pub fn apply(&self, src: &[u8], shape: ImageShape, rng: &mut AugmentRng) -> Vec<u8> {
        self.draw(shape, rng).into_iter().fold(src.to_vec(), |img, o| ops::apply(o, &img, shape))
    }
}
