//! One image's shape and the random stream of its training augmentation: the two
//! types the data sets, the augmentations and the resizer share (in their own module
//! so that none of those imports another in a circle).

use rand_chacha::ChaCha8Rng;

/// The random stream handed to a data set for training augmentation of one example.
pub type AugmentRng = ChaCha8Rng;

/// Shape of one image, channels x height x width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    /// Channels (1 or 3).
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl ImageShape {
    /// A new shape.
    pub const fn new(channels: usize, height: usize, width: usize) -> Self {
        Self { channels, height, width }
    }

    /// Bytes (u8 pixels) per image: c * h * w.
    pub const fn numel(&self) -> usize {
        self.channels * self.height * self.width
    }
}
