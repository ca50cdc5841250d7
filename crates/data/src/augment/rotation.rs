//! torchvision's `RandomRotation(degrees)` on PIL images, applied after pad-crop-flip
//! (AT-AWP's and RobustLT's CIFAR-100 training transform).

use rand::Rng;

use crate::augment::ops::{apply, Op};
use crate::image::{AugmentRng, ImageShape};

/// A rotation by an angle drawn uniformly from \[-degrees, degrees\], about the image
/// centre (w/2, h/2), nearest-neighbour, corners filled with 0: torchvision's
/// `RandomRotation(degrees)` with its defaults (`InterpolationMode.NEAREST`,
/// `expand=False`, `fill=0`), which calls Pillow's `Image.rotate`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomRotation {
    /// Largest angle, degrees (15 in AT-AWP's and RobustLT's CIFAR-100 transform).
    pub degrees: f64,
}

impl RandomRotation {
    /// The angle of one draw, uniform in \[-degrees, degrees\) (counter-clockwise positive).
    pub fn angle(&self, rng: &mut AugmentRng) -> f64 {
        if self.degrees == 0.0 {
            return 0.0;
        }
        rng.random_range(-self.degrees..self.degrees)
    }

    /// `src` (CHW u8 of `shape`) rotated by one drawn angle (Pillow's `rotate`, the op the
    /// automatic augmentation policies use).
    pub fn apply(&self, src: &[u8], shape: ImageShape, rng: &mut AugmentRng) -> Vec<u8> {
        apply(Op::Rotate(self.angle(rng)), src, shape)
    }
}
