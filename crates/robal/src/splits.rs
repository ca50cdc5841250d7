//! The data a training config names: its long-tailed training split, the optional
//! validation hold-out and the test split, with the config's augmentation, resizing
//! and `data.limit` applied. The readers themselves live in robal-data; this module
//! only maps the config's `[data]` section onto them.

use robal_data::augment::RandomRotation;
use robal_data::{
    cifar, load_embedded, long_tailed_rounded, tiny_imagenet, Cifar, Dataset, ImageSet, PadCropFlip, Profile,
    Selection, Split,
};

use crate::config::{CropPadding, DataName, LtProfile, TrainConfig};
use crate::error::Result;
use crate::selection::split_validation;

/// Load the training, validation (if `data.validation` > 0) and test splits a config names.
pub fn load_splits(cfg: &TrainConfig) -> Result<(ImageSet, Option<ImageSet>, ImageSet)> {
    let (train, test) = load_data(cfg)?;
    let (train, validation) = split_validation(train, cfg.data.validation, cfg.train.seed)?;
    let test = test.with_classes(train.classes().clone())?;
    Ok((train, validation, test))
}

/// Load the training and test splits a config names (the training split before any
/// validation hold-out; see [`load_splits`]).
pub fn load_data(cfg: &TrainConfig) -> Result<(ImageSet, ImageSet)> {
    let profile = match cfg.data.profile {
        LtProfile::Step => Profile::Step { ratio: cfg.data.ratio },
        LtProfile::Exp => Profile::Exp { ratio: cfg.data.ratio },
    };
    // The long-tailed training subset of a full CIFAR or Tiny-ImageNet training set.
    let subset = |full: &ImageSet| {
        long_tailed_rounded(full, profile, cfg.data.count_rounding.rounding(), cfg.data.selection.selection())
    };
    let (train, test) = match cfg.data.name {
        DataName::MnistLt => (load_embedded("mnist-lt", Split::Train)?, load_embedded("mnist-lt", Split::Test)?),
        DataName::FashionMnistLt => robal_data::fashion_mnist_lt(&cfg.data.dir(), profile)?,
        DataName::TinyImagenetLt | DataName::TinyImagenetLt20 => {
            let (mut full, mut test) =
                (tiny_imagenet::read(cfg.data.dir(), Split::Train)?, tiny_imagenet::read(cfg.data.dir(), Split::Test)?);
            if cfg.data.name == DataName::TinyImagenetLt20 {
                (full, test) = (tiny_imagenet::first_classes(&full, 20)?, tiny_imagenet::first_classes(&test, 20)?);
            }
            let train = subset(&full)?;
            let test = test.with_classes(train.classes().clone())?;
            (train, test)
        }
        name => {
            let kind = if name == DataName::Cifar10Lt { Cifar::Cifar10 } else { Cifar::Cifar100 };
            let read = |file: &Option<String>, split| match file {
                Some(f) => cifar::read_batch_file(f, kind),
                None => cifar::read(cfg.data.dir(), kind, split),
            };
            let full = read(&cfg.data.train_file, Split::Train)?;
            let train = subset(&full)?;
            let test = read(&cfg.data.test_file, Split::Test)?.with_classes(train.classes().clone())?;
            (train, test)
        }
    };
    let pad_crop = PadCropFlip { reflect: cfg.data.padding == CropPadding::Reflect, ..train.augmentation() };
    let (train, test) = match cfg.data.resize {
        // Resized once, before augmentation, as torchvision's Resize runs first in the
        // notebook's transform (after the subset: only its images are held at 224 px).
        Some([h, w]) => (train.resized(h, w)?, test.resized(h, w)?),
        None => (train, test),
    };
    let rotation = (cfg.data.rotation > 0.0).then_some(RandomRotation { degrees: cfg.data.rotation });
    let train = train.with_augmentation(pad_crop).with_policy(cfg.data.policy.policy()).with_rotation(rotation);
    if cfg.data.limit > 0 && cfg.data.limit < train.len() {
        // Stratified: each class keeps its share (at least one image), so no class vanishes.
        let counts: Vec<usize> = train
            .label_counts()
            .iter()
            .map(|&n| ((n * cfg.data.limit) as f64 / train.len() as f64).round().max(1.0).min(n as f64) as usize)
            .collect();
        let idx = robal_data::select(train.labels(), &counts, Selection::Seeded { seed: cfg.train.seed })?;
        let train = train.subset(&idx)?.counted_as_training()?;
        let test = test.with_classes(train.classes().clone())?;
        return Ok((train, test));
    }
    Ok((train, test))
}
