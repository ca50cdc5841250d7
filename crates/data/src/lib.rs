//! # robal-data
//!
//! Long-tailed image classification data for robal-rs, usable on its own:
//!
//! - [`cifar`]: the official CIFAR-10/100 binary formats, from batch files,
//!   folders or the `.tar.gz` ([`cifar::read`]);
//! - [`download`]: resumable, md5-checked, atomically extracted downloads;
//! - [`longtail`]: `exp`/`step` long-tailed subsets with the reference code's
//!   exact image choice ([`Selection::Reference`]) or our own seeded one;
//! - [`imagenet_lt`]: ImageNet-LT split files over an image root;
//! - [`tiny_imagenet`]: Tiny-ImageNet (folder layout or `.npz` repack) for Tiny-ImageNet-LT;
//! - [`embedded`]: the compiled-in default set `mnist-lt`;
//! - [`idx`]: the IDX format of MNIST / Fashion-MNIST / KMNIST / EMNIST (raw or gzipped)
//!   and the full-scale `fashion-mnist-lt` set;
//! - [`loader`]: the threaded batch pipeline producing candle tensors;
//! - [`augment`]: AutoAugment, RandAugment and TrivialAugment as torchvision defines them;
//! - [`image`]: one image's shape and the random stream of its augmentation;
//! - [`meta`]: class names, counts, prior pi and shot groups;
//! - [`atomic`]: temp-file-and-rename writes.
//!
//! ```
//! use std::sync::Arc;
//! use robal_data::{load_embedded, Dataset, Loader, LoaderConfig, Split};
//! # fn main() -> robal_data::Result<()> {
//! let train = load_embedded("mnist-lt", Split::Train)?;
//! println!("prior {:?}", train.classes().prior());
//! let loader = Loader::new(Arc::new(train), LoaderConfig::train(64, 0), candle_core::Device::Cpu)?;
//! let batch = loader.epoch(0).next().expect("one batch")?;
//! assert_eq!(batch.images.dims(), &[64, 1, 28, 28]);
//! # Ok(()) }
//! ```

pub mod atomic;
pub mod augment;
pub mod cifar;
pub mod dataset;
pub mod download;
pub mod embedded;
pub mod error;
pub mod idx;
pub mod image;
pub mod imagenet_lt;
pub mod loader;
pub mod longtail;
pub mod meta;
pub mod numpy_generator;
pub mod numpy_rng;
pub mod resize;
pub mod tiny_imagenet;

pub use atomic::write_atomic;
pub use augment::Policy;
pub use cifar::{Cifar, Split};
pub use dataset::{Dataset, ImageSet, PadCropFlip};
pub use embedded::{load_embedded, MNIST_LT};
pub use error::{DataError, Result};
pub use idx::{fashion_mnist_lt, IdxArray, FASHION_MNIST_DIR};
pub use image::{AugmentRng, ImageShape};
pub use imagenet_lt::{CropConfig, ImageNetLt};
pub use loader::{Batch, Batches, Loader, LoaderConfig, Sampler};
pub use longtail::{long_tailed, long_tailed_rounded, select, CountRounding, Profile, Selection};
pub use meta::{mean_present, ClassInfo, ShotGroup};
pub use numpy_generator::NumpyGenerator;
pub use numpy_rng::NumpyLegacyRng;
pub use resize::resize_bilinear;
