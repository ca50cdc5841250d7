//! Training configuration: TOML presets under `configs/`, command-line overrides
//! (`--set train.epochs=2`), and validation that names the offending field.

use std::path::Path;

use robal_models::{Arch, HeadConfig};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result, TrainError};
use crate::losses::{class_balanced_weights, LossConfig, WeightedMean};
pub use crate::objective::{AttackBatchNorm, AttackStart};
use crate::objective::{
    AwpConfig, BnPasses, ClassBudget, EtfConfig, EtfRegularized, InnerAttack, InnerLoss, Method, Objective, PgdAt,
    Plain, Reat, ReatConfig, Robal, Taet, Trades,
};

/// The training data sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataName {
    /// The embedded MNIST-LT set (real digits, exp long tail, r = 0.01).
    MnistLt,
    /// CIFAR-10 with an LDAM-style long tail (SPEC section 1).
    #[serde(rename = "cifar10-lt")]
    Cifar10Lt,
    /// CIFAR-100 with an LDAM-style long tail.
    #[serde(rename = "cifar100-lt")]
    Cifar100Lt,
    /// Tiny-ImageNet (200 classes, 64x64) with the same construction (AT-BSL's Tiny-ImageNet-LT).
    TinyImagenetLt,
    /// The first 20 classes of Tiny-ImageNet, long-tailed (RobustLT's Tiny-ImageNet-LT;
    /// its images as `data.selection` says: RobustLT's own split is `numpy-generator`, seed 102).
    #[serde(rename = "tiny-imagenet-lt-20")]
    TinyImagenetLt20,
    /// Fashion-MNIST (Debian's `dataset-fashion-mnist`: 60,000 + 10,000 real 28x28
    /// greyscale images) with an exp long tail from 6,000 per class (ratio 0.02: 16,796
    /// images, 6,000 down to 120), tested on all 10,000 t10k images.
    FashionMnistLt,
}

impl std::fmt::Display for DataName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataName::MnistLt => "mnist-lt",
            DataName::Cifar10Lt => "cifar10-lt",
            DataName::Cifar100Lt => "cifar100-lt",
            DataName::TinyImagenetLt => "tiny-imagenet-lt",
            DataName::TinyImagenetLt20 => "tiny-imagenet-lt-20",
            DataName::FashionMnistLt => "fashion-mnist-lt",
        })
    }
}

/// Shape of the long tail: n_c = floor(img_max r^(c/(C-1))) (`exp`), or half the
/// classes at img_max and half at floor(img_max r) (`step`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LtProfile {
    /// Exponential decay.
    #[default]
    Exp,
    /// Two steps.
    Step,
}

/// Order of training examples.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainSampler {
    /// A fresh permutation each epoch.
    #[default]
    Shuffle,
    /// Class-aware re-sampling: each draw picks a class uniformly, then an example.
    ClassBalanced,
    /// **quirk** of the RoBal reference's re-sampling baseline (its `ClassAwareSampler`):
    /// epochs of max_c n_c * C draws, classes and each class's examples visited in
    /// shuffled rounds ([`robal_data::Sampler::ClassAware`]).
    ClassAware,
}

/// Which images of each class the long-tailed training subset keeps (CIFAR and
/// Tiny-ImageNet; [`robal_data::Selection`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SubsetSelection {
    /// The LDAM-DRW / RoBal reference's numpy legacy `RandomState(seed)` shuffles (seed 0
    /// is the paper's subset).
    Reference {
        /// numpy seed.
        seed: u32,
    },
    /// **quirk** of RobustLT and MCAT: numpy's `default_rng(seed)` (PCG64) shuffles, one
    /// generator for all classes in order (RobustLT seeds 102-104, MCAT 0).
    NumpyGenerator {
        /// `default_rng` seed.
        seed: u64,
    },
}

impl Default for SubsetSelection {
    fn default() -> Self {
        SubsetSelection::Reference { seed: 0 }
    }
}

impl SubsetSelection {
    fn is_default(&self) -> bool {
        *self == SubsetSelection::default()
    }

    /// The data crate's selection.
    pub fn selection(&self) -> robal_data::Selection {
        match *self {
            SubsetSelection::Reference { seed } => robal_data::Selection::Reference { seed },
            SubsetSelection::NumpyGenerator { seed } => robal_data::Selection::NumpyGenerator { seed },
        }
    }
}

/// How the long tail's per-class counts are rounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CountRounding {
    /// `int(x)`: LDAM-DRW, the RoBal reference, RobustLT.
    #[default]
    Floor,
    /// **quirk** of MCAT's `exp_decay_counts`: Python's `round` (half to even), at least
    /// 1, never more than the class before.
    HalfEven,
}

impl CountRounding {
    fn is_floor(&self) -> bool {
        *self == CountRounding::Floor
    }

    /// The data crate's rounding.
    pub fn rounding(&self) -> robal_data::CountRounding {
        match self {
            CountRounding::Floor => robal_data::CountRounding::Floor,
            CountRounding::HalfEven => robal_data::CountRounding::HalfEven,
        }
    }
}

/// Automatic augmentation before pad-crop-flip (robal_data::augment).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum AugmentPolicy {
    /// Pad-crop-flip only.
    #[default]
    None,
    /// AutoAugment, CIFAR-10 policy.
    AutoAugment,
    /// RandAugment(n, m) on 31 magnitude bins.
    RandAugment {
        /// Ops per image.
        n: usize,
        /// Magnitude bin, 0..=30.
        m: usize,
    },
    /// TrivialAugmentWide.
    TrivialAugment,
}

impl TrainSampler {
    /// The data crate's sampler.
    pub fn sampler(&self) -> robal_data::Sampler {
        match self {
            TrainSampler::Shuffle => robal_data::Sampler::Shuffle,
            TrainSampler::ClassBalanced => robal_data::Sampler::ClassBalanced,
            TrainSampler::ClassAware => robal_data::Sampler::ClassAware,
        }
    }
}

impl AugmentPolicy {
    /// The data crate's policy.
    pub fn policy(&self) -> Option<robal_data::Policy> {
        match *self {
            AugmentPolicy::None => None,
            AugmentPolicy::AutoAugment => Some(robal_data::Policy::AutoAugmentCifar10),
            AugmentPolicy::RandAugment { n, m } => Some(robal_data::Policy::rand_augment(n, m)),
            AugmentPolicy::TrivialAugment => Some(robal_data::Policy::TrivialAugmentWide),
        }
    }
}

/// Padding of the training crop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CropPadding {
    /// Zeros.
    #[default]
    Zero,
    /// Mirror without repeating the edge.
    Reflect,
}

/// The input normalisation (x - mean_c) / std_c inside the model.
///
/// In a preset: `"dataset"` (the default), `"none"`, or the constants themselves,
/// `{ mean = [0.5071, 0.4865, 0.4409], std = [0.2673, 0.2564, 0.2762] }`.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum InputNormalization {
    /// CIFAR-10's channel mean/std, (0.4914, 0.4822, 0.4465) / (0.2471, 0.2435, 0.2616),
    /// for 3-channel data (SPEC section "normalisation lives inside the model"); none
    /// for greyscale data.
    #[default]
    Dataset,
    /// Raw \[0, 1\] pixels into the first layer, as the RoBal reference code, AT-BSL,
    /// TRADES-AWP and TAET train.
    None,
    /// These per-channel constants (an official code's own: AT-AWP's CIFAR-100 statistics,
    /// RobustLT's per-data-set `DATA_DESC`).
    Constants {
        /// Channel means.
        mean: Vec<f64>,
        /// Channel standard deviations (each > 0).
        std: Vec<f64>,
    },
}

/// CIFAR-10's training-set channel means (`InputNormalization::Dataset`).
pub const CIFAR10_MEAN: [f64; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10's training-set channel standard deviations (`InputNormalization::Dataset`).
pub const CIFAR10_STD: [f64; 3] = [0.2471, 0.2435, 0.2616];

impl InputNormalization {
    /// The model's normalisation for images of `channels` channels, or an error naming
    /// `model.normalization` when the constants do not fit.
    pub fn resolve(&self, channels: usize) -> Result<Option<robal_models::Normalization>> {
        let to32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        match self {
            InputNormalization::None => Ok(None),
            InputNormalization::Dataset if channels == 3 => {
                Ok(Some(robal_models::Normalization { mean: to32(&CIFAR10_MEAN), std: to32(&CIFAR10_STD) }))
            }
            InputNormalization::Dataset => Ok(None),
            InputNormalization::Constants { mean, std } => {
                if mean.len() != channels || std.len() != channels {
                    return Err(invalid(
                        "model.normalization",
                        format!(
                            "{} means and {} stds for images of {channels} channels: expected {channels} of each",
                            mean.len(),
                            std.len()
                        ),
                    ));
                }
                Ok(Some(robal_models::Normalization { mean: to32(mean), std: to32(std) }))
            }
        }
    }

    fn check(&self) -> Result<()> {
        if let InputNormalization::Constants { mean, std } = self {
            if mean.is_empty() || mean.len() != std.len() {
                return Err(invalid(
                    "model.normalization",
                    format!("{} means and {} stds: expected one of each per channel", mean.len(), std.len()),
                ));
            }
            if mean.iter().any(|m| !m.is_finite()) || std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(invalid(
                    "model.normalization",
                    format!("mean {mean:?}, std {std:?}: expected finite means and stds > 0"),
                ));
            }
        }
        Ok(())
    }
}

impl Serialize for InputNormalization {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        match self {
            InputNormalization::Dataset => s.serialize_str("dataset"),
            InputNormalization::None => s.serialize_str("none"),
            InputNormalization::Constants { mean, std } => {
                let mut st = s.serialize_struct("InputNormalization", 2)?;
                st.serialize_field("mean", mean)?;
                st.serialize_field("std", std)?;
                st.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for InputNormalization {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Constants {
            mean: Vec<f64>,
            std: Vec<f64>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Constants(Constants),
        }
        const EXPECTED: &str = "expected \"dataset\", \"none\" or { mean = [...], std = [...] }";
        match Repr::deserialize(d).map_err(|_| serde::de::Error::custom(EXPECTED))? {
            Repr::Name(n) if n == "dataset" => Ok(InputNormalization::Dataset),
            Repr::Name(n) if n == "none" => Ok(InputNormalization::None),
            Repr::Name(n) => Err(serde::de::Error::custom(format!("{n:?}: {EXPECTED}"))),
            Repr::Constants(Constants { mean, std }) => Ok(InputNormalization::Constants { mean, std }),
        }
    }
}

/// Which data set to train on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `mnist-lt` (embedded), `cifar10-lt`, `cifar100-lt`, `tiny-imagenet-lt`,
    /// `tiny-imagenet-lt-20` or `fashion-mnist-lt`.
    pub name: DataName,
    /// Folder holding the CIFAR archive or its extracted folder; for Tiny-ImageNet,
    /// `train.npz` + `val.npz` or the `tiny-imagenet-200` folder; for Fashion-MNIST the
    /// four IDX files. Default: `data`, or for `fashion-mnist-lt` Debian's
    /// `/usr/share/datasets/fashion-mnist` ([`DataConfig::dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// n_min / n_max of the long-tailed subset (CIFAR, Tiny-ImageNet, Fashion-MNIST).
    #[serde(default = "default_ratio")]
    pub ratio: f64,
    /// `exp` or `step` (CIFAR only).
    #[serde(default)]
    pub profile: LtProfile,
    /// `shuffle`, `class-balanced` (class-aware re-sampling, i.i.d. draws) or `class-aware`
    /// (the RoBal reference's `ClassAwareSampler`).
    #[serde(default)]
    pub sampler: TrainSampler,
    /// Training augmentation on.
    #[serde(default = "yes")]
    pub augment: bool,
    /// Use only about this many training images, each class keeping its share and at
    /// least one image (0 = all; for smoke runs and tests). Counts and prior follow the subset.
    #[serde(default)]
    pub limit: usize,
    /// CIFAR only: read the training images from this one CIFAR-format batch file
    /// (any whole number of records) instead of the official set under `dir`; the
    /// long-tailed subset is then drawn from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_file: Option<String>,
    /// Augmentation policy applied before pad-crop-flip in training (torchvision's
    /// definitions, Pillow's ops): none, `{ kind = "auto-augment" }` (CIFAR-10 policy),
    /// `{ kind = "rand-augment", n = 2, m = 8 }` or `{ kind = "trivial-augment" }`.
    #[serde(default)]
    pub policy: AugmentPolicy,
    /// Fraction of each class's training images held out as a validation split for
    /// model selection (0 = none; e.g. 0.2 as RobustLT). See [`crate::selection`].
    #[serde(default)]
    pub validation: f64,
    /// Padding of the random crop: `zero` (SPEC) or `reflect` (AT-AWP).
    #[serde(default)]
    pub padding: CropPadding,
    /// Resize every training and test image to `[height, width]` first (Pillow's bilinear
    /// resize, as torchvision's `Resize((224, 224))` in TAET's notebook;
    /// [`robal_data::resize_bilinear`]). Held in memory at the new size: CIFAR-10-LT at
    /// 224 px is ~150 KB an image. None by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[usize; 2]>,
    /// Random rotation after crop and flip, largest angle in degrees (0 = none):
    /// torchvision's `RandomRotation(15)` in AT-AWP's and RobustLT's CIFAR-100 transform
    /// ([`robal_data::augment::RandomRotation`]).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub rotation: f64,
    /// CIFAR only: read the test images from this batch file instead of `dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_file: Option<String>,
    /// CIFAR and Tiny-ImageNet: which images of each class the long tail keeps
    /// (`{ kind = "reference", seed = 0 }` by default, or `{ kind = "numpy-generator",
    /// seed = 102 }`).
    #[serde(default, skip_serializing_if = "SubsetSelection::is_default")]
    pub selection: SubsetSelection,
    /// CIFAR and Tiny-ImageNet: how the per-class counts are rounded (`floor` by default,
    /// or `half-even` as MCAT).
    #[serde(default, skip_serializing_if = "CountRounding::is_floor")]
    pub count_rounding: CountRounding,
    /// Drop each epoch's last partial batch (the default, as the RoBal reference and
    /// AT-BSL's CIFAR loaders). `false` keeps it, as the loaders of AT-AWP, TRADES-AWP,
    /// REAT, TAET, RobustLT and AT-BSL's Tiny-ImageNet do (`drop_last=False`).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub drop_last: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}
fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

impl DataConfig {
    /// The data folder: `dir` if set, else the data set's default (`data`; Debian's
    /// [`robal_data::FASHION_MNIST_DIR`] for `fashion-mnist-lt`).
    pub fn dir(&self) -> std::path::PathBuf {
        match (&self.dir, self.name) {
            (Some(d), _) => d.into(),
            (None, DataName::FashionMnistLt) => robal_data::FASHION_MNIST_DIR.into(),
            (None, _) => "data".into(),
        }
    }
}
fn default_ratio() -> f64 {
    0.02
}
fn yes() -> bool {
    true
}

/// The network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Architecture name (`small-cnn`, `wrn-34-10`, `resnet18`, ...).
    pub arch: String,
    /// Head used in training.
    pub head: HeadConfig,
    /// Head settings used at evaluation (e.g. cosine s = 10); defaults to `head`.
    #[serde(default)]
    pub eval_head: Option<HeadConfig>,
    /// Post-hoc boundary adjustment tau_p at evaluation (none by default).
    #[serde(default)]
    pub posthoc_tau: Option<f64>,
    /// Input normalisation inside the model: `"dataset"` (CIFAR-10's constants for colour
    /// images), `"none"`, or `{ mean = [...], std = [...] }` ([`InputNormalization`]).
    #[serde(default)]
    pub normalization: InputNormalization,
}

/// Re-weighting of the loss by class.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Reweight {
    /// No re-weighting.
    None,
    /// Class-balanced weights (effective number) from the start.
    ClassBalanced {
        /// beta (0.9999).
        beta: f64,
        /// How the weighted per-example losses are averaged.
        #[serde(default)]
        average: WeightedMean,
    },
    /// Deferred re-weighting: class-balanced weights from `from_epoch` on.
    Drw {
        /// beta (0.9999).
        beta: f64,
        /// First epoch (0-based) with weights.
        from_epoch: usize,
        /// How the weighted per-example losses are averaged.
        #[serde(default)]
        average: WeightedMean,
    },
}

impl Reweight {
    /// Class weights and their averaging at `epoch` (0-based), if any.
    pub fn at_epoch(&self, counts: &[usize], epoch: usize) -> Option<(Vec<f64>, WeightedMean)> {
        match self {
            Reweight::ClassBalanced { beta, average } => Some((class_balanced_weights(counts, *beta), *average)),
            Reweight::Drw { beta, from_epoch, average } if epoch >= *from_epoch => {
                Some((class_balanced_weights(counts, *beta), *average))
            }
            _ => None,
        }
    }
}

/// Training schedule and objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// The training objective: `plain`, `pgd-at`, `trades`, `robal`, `taet` or `reat`.
    pub mode: Method,
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    #[serde(default = "momentum")]
    pub momentum: f64,
    /// Weight decay.
    #[serde(default = "weight_decay")]
    pub weight_decay: f64,
    /// Nesterov momentum (RobustLT's optimiser).
    #[serde(default)]
    pub nesterov: bool,
    /// Epochs at which the learning rate is multiplied by `lr_gamma`.
    #[serde(default)]
    pub milestones: Vec<usize>,
    /// Learning-rate decay factor.
    #[serde(default = "lr_gamma")]
    pub lr_gamma: f64,
    /// How the lr follows `milestones`: `step` (lr gamma^(milestones <= epoch), epochs
    /// 0-based) or `cumulative` (**quirk** of the RoBal reference code: the current lr is
    /// multiplied every epoch, milestones counted from 1; [`crate::optim::cumulative_learning_rate`]).
    #[serde(default, skip_serializing_if = "LrRule::is_step")]
    pub lr_rule: LrRule,
    /// Linear warm-up epochs.
    #[serde(default)]
    pub warmup_epochs: usize,
    /// Seed of initialisation, data order, augmentation and attack starts.
    #[serde(default)]
    pub seed: u64,
    /// Checkpoint every N epochs (and always at the end).
    #[serde(default = "one")]
    pub checkpoint_every: usize,
    /// Weight of the adversarial term (RoBal).
    #[serde(default = "unit")]
    pub beta_adv: f64,
    /// Weight of the natural term (RoBal).
    #[serde(default)]
    pub beta_nat: f64,
    /// Weight of the KL term (TRADES beta, RoBal beta_reg).
    #[serde(default)]
    pub beta_reg: f64,
    /// Re-weighting.
    #[serde(default = "no_reweight")]
    pub reweight: Reweight,
    /// Epochs of plain CE training before the objective takes over (TAET's first
    /// stage: 40 of 100 epochs).
    #[serde(default)]
    pub clean_epochs: usize,
    /// Train-mode forward passes per step: `minimal` (one per distinct input) or
    /// `reference` (the RoBal/TRADES reference code's order, which updates the
    /// BatchNorm running statistics once more per step). Gradients are the same.
    #[serde(default)]
    pub bn_passes: BnPasses,
    /// **quirk** of RobustLT's trainer: after each update its accuracy log runs the
    /// model on x_adv and then x in train mode (under no_grad), two more BatchNorm
    /// running-statistics updates per step with the new weights (one, on x, in clean
    /// epochs). Weights and gradients are unchanged. Off by default.
    #[serde(default)]
    pub log_passes: bool,
    /// Statistics-only train-mode passes some codes make besides the method's own (their
    /// outputs are discarded; only BatchNorm's running statistics move), e.g.
    /// `[{ at = "after-update", input = "clean" }]` ([`ExtraPass`]). None by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_passes: Vec<ExtraPass>,
    /// HARL's weights of the class-mean loss, its variance and the squared shares (TAET).
    #[serde(default = "harl_weights")]
    pub harl_weights: [f64; 3],
}

/// A statistics-only train-mode forward pass at a point of the training step: a
/// **quirk** of the codes whose loops run the model once more than their loss needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraPass {
    /// When in the step.
    pub at: PassPoint,
    /// On which input (an `adv` pass is skipped in steps without adversarial examples).
    pub input: PassInput,
}

/// A point of the training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassPoint {
    /// After the attack, before AWP's perturbation, in the attack's BatchNorm mode (a
    /// pass only with `attack.batch_norm = "train"`, as AT-AWP's final `all_loss` forward).
    AfterAttack,
    /// Before the method's own passes (after AWP's perturbation): TAET's `model(inputs)`.
    BeforeOuter,
    /// After the method's own passes, before the update: RobustLT's AT-BSL clean pass,
    /// TRADES-AWP's third pass.
    AfterOuter,
    /// After the update (and AWP's restore): AT-AWP's clean accuracy pass.
    AfterUpdate,
}

/// The input of an extra pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassInput {
    /// The clean batch x.
    Clean,
    /// The adversarial batch x_adv.
    Adv,
}

/// How the learning rate follows the milestones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrRule {
    /// lr gamma^(number of milestones <= epoch), epochs 0-based; linear warm-up
    /// within the first `warmup_epochs` ([`crate::optim::learning_rate`]).
    #[default]
    Step,
    /// **quirk** of the RoBal reference code: the current lr multiplied at the start
    /// of every epoch by gamma^(milestones passed), epochs and milestones counted from 1
    /// ([`crate::optim::cumulative_learning_rate`]).
    Cumulative,
}

impl LrRule {
    fn is_step(&self) -> bool {
        *self == LrRule::Step
    }
}

impl TrainSection {
    /// The learning rate at 0-based `epoch`, fraction `t` in [0, 1) through it, under `lr_rule`.
    pub fn learning_rate(&self, epoch: usize, t: f64) -> f64 {
        match self.lr_rule {
            LrRule::Step => {
                crate::optim::learning_rate(self.lr, epoch, t, self.warmup_epochs, &self.milestones, self.lr_gamma)
            }
            LrRule::Cumulative => crate::optim::cumulative_learning_rate(
                self.lr,
                epoch,
                self.warmup_epochs,
                &self.milestones,
                self.lr_gamma,
            ),
        }
    }
}

fn harl_weights() -> [f64; 3] {
    [0.1, 0.1, 0.1]
}

fn momentum() -> f64 {
    0.9
}
fn weight_decay() -> f64 {
    2e-4
}
fn lr_gamma() -> f64 {
    0.1
}
fn one() -> usize {
    1
}
fn unit() -> f64 {
    1.0
}
fn no_reweight() -> Reweight {
    Reweight::None
}

/// The attack that generates training examples (SPEC section 5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    /// L-inf radius.
    pub eps: f64,
    /// Step size.
    pub step_size: f64,
    /// Steps.
    pub steps: usize,
    /// Start of the inner attack; the method's own default when absent (uniform in
    /// the ball; x + 0.001 N(0, 1) for TRADES and TAET).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_start: Option<AttackStart>,
    /// RobustLT's per-class budgets eps_c with warm-up (METHODS.md section 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_budget: Option<ClassBudget>,
    /// Which BatchNorm statistics the attack's forward passes use (`eval`: the running
    /// ones, SPEC section 5, the default).
    #[serde(default, skip_serializing_if = "AttackBatchNorm::is_default")]
    pub batch_norm: AttackBatchNorm,
}

/// Evaluation during and after training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSection {
    /// L-inf radius.
    pub eps: f64,
    /// PGD step size.
    pub step_size: f64,
    /// PGD steps (20).
    pub steps: usize,
    /// Test images used by the final evaluation (0 = all).
    #[serde(default)]
    pub limit: usize,
    /// Quick evaluation every N epochs (0 = never).
    #[serde(default)]
    pub every: usize,
    /// Test images of the quick evaluation.
    #[serde(default = "quick")]
    pub quick_limit: usize,
    /// With a validation split: select on AutoAttack (APGD-CE + APGD-T) robust accuracy
    /// of this many validation images (evenly spread over the split) instead of PGD on
    /// all of it (0 = PGD).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub selection_autoattack: usize,
    /// **quirk** of MCAT's code (its trainer keeps `ckpt_best.pth` by PGD-20 on the test
    /// set): after every `eval.every` epochs and the last, run PGD (`eval.eps`,
    /// `eval.step_size`, `eval.steps`, uniform start) on the whole test set and keep the
    /// epoch with the best overall robust accuracy in `best.safetensors`. Selection on
    /// the test set inflates the kept model's numbers; off by default (`data.validation`
    /// selects without the test set). Not with `data.validation`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub select_on_test: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn quick() -> usize {
    500
}

/// Which second stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage2Kind {
    /// Classifier re-training: a fresh FC head on the frozen backbone.
    Crt,
    /// Learnable weight scaling: per-class gains on the trained FC head.
    Lws,
}

/// BatchNorm during the second stage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage2BatchNorm {
    /// Running statistics, unchanged: the backbone is frozen, statistics included.
    #[default]
    Frozen,
    /// **quirk** of the RoBal reference's second stages (`model.train()` in its loop):
    /// batch statistics in the forward pass, running statistics updated every step;
    /// the backbone's weights still do not move (their lr is 0).
    Train,
}

impl Stage2BatchNorm {
    fn is_frozen(&self) -> bool {
        *self == Stage2BatchNorm::Frozen
    }
}

/// A second stage on a frozen backbone (classifier re-training or learnable weight scaling).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage2Section {
    /// `crt` (re-train the FC head, class-balanced sampling) or `lws` (learn per-class gains).
    pub kind: Stage2Kind,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Stage epochs at which the lr is multiplied by `train.lr_gamma`, under `train.lr_rule`
    /// (`step`: 0-based stage epochs; `cumulative`: 1-based, the reference's global
    /// milestones minus the first stage's epochs, e.g. [83, 86] after 80 -> [3, 6]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub milestones: Vec<usize>,
    /// crt only: start from the trained FC head (the reference's `RS-fine`, which loads
    /// the first stage's classifier) instead of a fresh one. Off by default.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_head: bool,
    /// lws only: add the FC bias to the scaled logits (the default); `false` is the
    /// reference's `PostNorm(lws=True, bias=False)`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub lws_bias: bool,
    /// BatchNorm in the stage's forward passes: `frozen` (default) or `train`.
    #[serde(default, skip_serializing_if = "Stage2BatchNorm::is_frozen")]
    pub batch_norm: Stage2BatchNorm,
    /// The stage's sampler: `class-balanced` (default: i.i.d. class-uniform draws, one
    /// pass's worth per epoch) or `class-aware` (the reference's `ClassAwareSampler`:
    /// max_c n_c * C draws per epoch).
    #[serde(default = "class_balanced", skip_serializing_if = "is_class_balanced")]
    pub sampler: TrainSampler,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn class_balanced() -> TrainSampler {
    TrainSampler::ClassBalanced
}
fn is_class_balanced(s: &TrainSampler) -> bool {
    *s == TrainSampler::ClassBalanced
}

impl Stage2Section {
    /// The stage's learning rate at 0-based stage `epoch`: `lr` under `train`'s lr rule
    /// and gamma with this stage's milestones, no warm-up.
    pub fn learning_rate(&self, train: &TrainSection, epoch: usize) -> f64 {
        match train.lr_rule {
            LrRule::Step => crate::optim::learning_rate(self.lr, epoch, 0.0, 0, &self.milestones, train.lr_gamma),
            LrRule::Cumulative => {
                crate::optim::cumulative_learning_rate(self.lr, epoch, 0, &self.milestones, train.lr_gamma)
            }
        }
    }
}

/// A whole training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Data.
    pub data: DataConfig,
    /// Model.
    pub model: ModelSection,
    /// Loss on the (adversarial) logits.
    pub loss: LossConfig,
    /// Schedule and objective.
    pub train: TrainSection,
    /// Training-time attack (unused in `plain` mode).
    pub attack: AttackSection,
    /// Evaluation.
    pub eval: EvalSection,
    /// Optional second stage.
    #[serde(default)]
    pub stage2: Option<Stage2Section>,
    /// Adversarial weight perturbation (AWP) around the objective's outer loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awp: Option<AwpConfig>,
    /// REAT's settings (`train.mode = "reat"`); defaults when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reat: Option<ReatConfig>,
    /// MCAT's ETF regulariser on the head weights, added to any method's outer loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etf: Option<EtfConfig>,
}

/// The leaf keys of a TOML table as `(dotted.key, value)` pairs, in key order: tables
/// (inline ones too) are walked, arrays are one value. The inverse view of
/// [`apply_override`]'s dotted keys.
pub fn toml_leaves(table: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(inner) => walk(&key, inner, out),
                other => out.push((key, other.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", table, &mut out);
    out
}

/// Set `dotted.key = value` in a TOML table; the value is parsed as TOML
/// (`2`, `0.1`, `true`, `"x"`, `[60, 75]`) and taken as a string otherwise.
pub fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| invalid("--set", format!("{assignment:?}: expected key=value, e.g. train.epochs=2")))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut table = doc;
    for p in &parts[..parts.len() - 1] {
        table = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| invalid("--set", format!("{key}: {p} is not a table")))?;
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

impl TrainConfig {
    /// Parse TOML text (named `source` in errors) with overrides applied, then validate.
    pub fn from_toml(text: &str, source: &str, overrides: &[String]) -> Result<Self> {
        let mut doc: toml::Table = toml::from_str(text)
            .map_err(|e| TrainError::Config { origin: source.to_string(), reason: e.to_string() })?;
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        // Through the text again so that serde_path_to_error can name the field.
        let text =
            toml::to_string(&doc).map_err(|e| TrainError::Config { origin: source.into(), reason: e.to_string() })?;
        let de = toml::Deserializer::parse(&text)
            .map_err(|e| TrainError::Config { origin: source.to_string(), reason: e.to_string() })?;
        let cfg: TrainConfig = serde_path_to_error::deserialize(de).map_err(|e| TrainError::Config {
            origin: source.to_string(),
            reason: format!("{}: {}", e.path(), e.inner().message()),
        })?;
        cfg.validate().map_err(|e| match e {
            TrainError::Invalid { what, reason } => {
                TrainError::Config { origin: source.to_string(), reason: format!("{what}: {reason}") }
            }
            other => other,
        })?;
        Ok(cfg)
    }

    /// Read a preset file.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::Config {
            origin: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// The architecture.
    pub fn arch(&self) -> Result<Arch> {
        self.model.arch.parse().map_err(|e: robal_models::ModelError| invalid("model.arch", e.to_string()))
    }

    /// The reference-code quirks this config turns on, as `field = value` (empty for the
    /// clean behaviour of our own presets).
    pub fn quirks(&self) -> Vec<String> {
        use crate::objective::{AwpProxy, BnPasses};
        let mut q = Vec::new();
        let mut on = |cond: bool, text: &str| {
            if cond {
                q.push(text.to_string());
            }
        };
        on(self.train.lr_rule == LrRule::Cumulative, "train.lr_rule = \"cumulative\" (RoBal reference)");
        on(self.train.bn_passes == BnPasses::Reference, "train.bn_passes = \"reference\" (reference pass order)");
        on(self.train.log_passes, "train.log_passes = true (RobustLT's logging passes)");
        on(!self.train.extra_passes.is_empty(), "train.extra_passes (the code's statistics-only passes)");
        on(self.train.bn_passes == BnPasses::AdvFirst, "train.bn_passes = \"adv-first\" (TRADES-AWP's order)");
        on(
            self.data.sampler == TrainSampler::ClassAware,
            "data.sampler = \"class-aware\" (the reference's ClassAwareSampler)",
        );
        if let Some(s2) = &self.stage2 {
            on(s2.keep_head, "stage2.keep_head = true (RS-fine: the trained classifier fine-tuned)");
            on(!s2.lws_bias, "stage2.lws_bias = false (PostNorm LWS without bias)");
            on(
                s2.batch_norm == Stage2BatchNorm::Train,
                "stage2.batch_norm = \"train\" (the reference's train-mode stage 2)",
            );
            on(s2.sampler == TrainSampler::ClassAware, "stage2.sampler = \"class-aware\" (ClassAwareSampler)");
        }
        on(
            matches!(self.data.selection, SubsetSelection::NumpyGenerator { .. }),
            "data.selection = numpy-generator (RobustLT's / MCAT's default_rng split)",
        );
        on(self.data.count_rounding == CountRounding::HalfEven, "data.count_rounding = \"half-even\" (MCAT's counts)");
        on(self.data.resize.is_some(), "data.resize (images resized before training, TAET's notebook)");
        on(!self.data.drop_last, "data.drop_last = false (the last partial batch is trained on)");
        on(
            matches!(self.model.head, HeadConfig::Fc { bias: robal_models::FcBias::Prior }),
            "model.head.bias = \"prior\" (the reference's focal-loss bias init)",
        );
        on(
            matches!(self.model.head, HeadConfig::Fc { bias: robal_models::FcBias::FrozenRandom }),
            "model.head.bias = \"frozen-random\" (the reference's Dot head)",
        );
        on(
            matches!(self.model.eval_head, Some(HeadConfig::TauNorm { bias: false, .. })),
            "model.eval_head.bias = false (the reference's PostNorm head)",
        );
        on(
            matches!(self.model.normalization, InputNormalization::Constants { .. }),
            "model.normalization = { mean, std } (the code's own constants)",
        );
        on(
            self.attack.random_start == Some(AttackStart::OneSided),
            "attack.random_start = \"one-sided\" (RoBal reference)",
        );
        on(self.attack.batch_norm == AttackBatchNorm::Train, "attack.batch_norm = \"train\" (AT-AWP)");
        on(
            self.attack.batch_norm == AttackBatchNorm::TrainExceptEpochStart,
            "attack.batch_norm = \"train-except-epoch-start\" (AT-AWP's CIFAR-10 script)",
        );
        on(
            self.attack.class_budget.is_some_and(|b| b.shared_start),
            "attack.class_budget.shared_start = true (RobustLT)",
        );
        on(self.awp.is_some_and(|a| a.proxy == AwpProxy::Optimizer), "awp.proxy = \"optimizer\" (RobustLT)");
        on(
            self.model.arch == "resnet18-imagenet"
                && matches!(self.data.name, DataName::Cifar10Lt | DataName::Cifar100Lt),
            "model.arch = \"resnet18-imagenet\" on 32x32 images (MCAT's default resnet18)",
        );
        on(self.eval.select_on_test, "eval.select_on_test = true (MCAT's code: the best epoch by PGD on the test set)");
        if let Some(r) = &self.reat {
            on(r.tail == crate::losses::TailReduction::Official, "reat.tail = \"official\" (REAT's code)");
            on(!r.clamp_counts, "reat.clamp_counts = false (REAT's code)");
            on(
                r.count == crate::objective::PredictionCount::AfterUpdate,
                "reat.count = \"after-update\" (RobustLT's REAT)",
            );
        }
        q
    }

    /// Check every field that serde cannot: ranges, names, and combinations.
    pub fn validate(&self) -> Result<()> {
        self.model.normalization.check()?;
        if !(self.data.ratio > 0.0 && self.data.ratio <= 1.0) {
            return Err(invalid("data.ratio", format!("{} is outside (0, 1]", self.data.ratio)));
        }
        self.arch()?;
        for (name, v) in [
            ("attack.eps", self.attack.eps),
            ("attack.step_size", self.attack.step_size),
            ("eval.eps", self.eval.eps),
            ("eval.step_size", self.eval.step_size),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(invalid(name, format!("{v}: must be a finite number >= 0")));
            }
        }
        if self.train.epochs == 0 || self.train.batch_size == 0 {
            return Err(invalid("train.epochs / train.batch_size", "must be at least 1"));
        }
        if !(self.train.lr.is_finite() && self.train.lr > 0.0) {
            return Err(invalid("train.lr", format!("{}: must be a finite number > 0", self.train.lr)));
        }
        let cosine = matches!(self.model.head, HeadConfig::Cosine { .. });
        match &self.loss {
            // RoBal's margin loss is defined on cosine logits. LDAM's CE(s (z - Delta_y)) is
            // defined on any logits: the RoBal reference runs it on an FC head with s = 1.
            LossConfig::RobalMargin { .. } if !cosine => {
                return Err(invalid(
                    "loss.kind",
                    "robal-margin works on cosine logits: set model.head.kind = \"cosine\"",
                ));
            }
            _ => {}
        }
        if let Some(tau) = self.model.posthoc_tau {
            if !tau.is_finite() {
                return Err(invalid("model.posthoc_tau", format!("{tau} is not finite")));
            }
        }
        if self.train.mode == Method::Robal && self.train.beta_adv == 0.0 && self.train.beta_nat == 0.0 {
            return Err(invalid("train.beta_adv", "robal mode needs beta_adv or beta_nat > 0"));
        }
        if let Some(s2) = &self.stage2 {
            if s2.kind == Stage2Kind::Lws && cosine {
                return Err(invalid("stage2.kind", "lws rescales an FC head: set model.head.kind = \"fc\""));
            }
            if s2.keep_head && (s2.kind != Stage2Kind::Crt || cosine) {
                return Err(invalid(
                    "stage2.keep_head",
                    "keeps a trained FC head for crt: needs kind = \"crt\" and an fc head",
                ));
            }
            if !s2.lws_bias && s2.kind != Stage2Kind::Lws {
                return Err(invalid("stage2.lws_bias", "only applies to kind = \"lws\""));
            }
            if !(s2.lr.is_finite() && s2.lr >= 0.0) {
                return Err(invalid("stage2.lr", format!("{}: must be a finite number >= 0", s2.lr)));
            }
        }
        if !(0.0..0.9).contains(&self.data.validation) {
            return Err(invalid(
                "data.validation",
                format!("{}: expected a fraction in [0, 0.9)", self.data.validation),
            ));
        }
        if matches!(self.data.name, DataName::MnistLt | DataName::FashionMnistLt)
            && !(self.data.selection.is_default() && self.data.count_rounding.is_floor())
        {
            return Err(invalid(
                "data.selection / data.count_rounding",
                format!("apply to CIFAR and Tiny-ImageNet subsets; {} has its own", self.data.name),
            ));
        }
        if let Some([h, w]) = self.data.resize {
            if h == 0 || w == 0 || h > 4096 || w > 4096 {
                return Err(invalid("data.resize", format!("[{h}, {w}]: expected [height, width] in 1..=4096")));
            }
        }
        if !(self.data.rotation.is_finite() && (0.0..=180.0).contains(&self.data.rotation)) {
            return Err(invalid(
                "data.rotation",
                format!("{}: expected degrees in [0, 180] (0 = no rotation)", self.data.rotation),
            ));
        }
        if let AugmentPolicy::RandAugment { n, m } = self.data.policy {
            if n == 0 || m > 30 {
                return Err(invalid(
                    "data.policy",
                    format!("rand-augment n = {n}, m = {m}: expected n >= 1 and m in 0..=30"),
                ));
            }
        }
        if let Some(b) = &self.attack.class_budget {
            b.validate()?;
        }
        if let Some(e) = &self.etf {
            if !(e.weight.is_finite() && e.weight >= 0.0) {
                return Err(invalid("etf.weight", format!("{}: expected a finite number >= 0", e.weight)));
            }
        }
        if let Some(a) = &self.awp {
            a.validate(self.train.mode)?;
        }
        if self.eval.select_on_test && self.data.validation > 0.0 {
            return Err(invalid(
                "eval.select_on_test",
                "selects on the test set; data.validation selects on a held-out split: set one of them",
            ));
        }
        if self.reat.is_some_and(|r| r.count == crate::objective::PredictionCount::AfterUpdate)
            && !self.train.log_passes
        {
            return Err(invalid(
                "reat.count",
                "\"after-update\" counts the logging pass after each update: set train.log_passes = true",
            ));
        }
        if self.train.clean_epochs > self.train.epochs {
            return Err(invalid(
                "train.clean_epochs",
                format!("{} is more than train.epochs = {}", self.train.clean_epochs, self.train.epochs),
            ));
        }
        Ok(())
    }
}

/// How a config becomes the objects of training. These sit here, not in
/// [`crate::objective`], so that the objectives know nothing of the config: the arrow
/// goes one way, config -> objective.
impl TrainConfig {
    /// The objective `train.mode` names, with its inner attack from `[attack]`, and
    /// MCAT's ETF term on top when `[etf]` is set.
    pub fn objective(&self) -> Box<dyn Objective> {
        let method = self.method();
        match self.etf {
            Some(config) => Box::new(EtfRegularized { inner: method, config }),
            None => method,
        }
    }

    fn method(&self) -> Box<dyn Objective> {
        let t = &self.train;
        let passes = t.bn_passes;
        let attack = |loss, default_start| InnerAttack::from_config(self, loss, default_start);
        match t.mode {
            Method::Plain => Box::new(Plain),
            Method::PgdAt => Box::new(PgdAt { attack: attack(InnerLoss::CrossEntropy, AttackStart::Uniform) }),
            Method::Trades => {
                Box::new(Trades { attack: attack(InnerLoss::TradesKl, AttackStart::Normal), beta: t.beta_reg, passes })
            }
            Method::Robal => Box::new(Robal {
                attack: attack(InnerLoss::CrossEntropy, AttackStart::Uniform),
                beta_adv: t.beta_adv,
                beta_nat: t.beta_nat,
                beta_reg: t.beta_reg,
                passes,
            }),
            Method::Taet => {
                Box::new(Taet { attack: attack(InnerLoss::CrossEntropy, AttackStart::Normal), weights: t.harl_weights })
            }
            Method::Reat => Box::new(Reat::new(
                attack(InnerLoss::CrossEntropy, AttackStart::Uniform),
                self.reat.unwrap_or_default(),
            )),
        }
    }
}

impl InnerAttack {
    /// The training attack of `cfg.attack` on `loss`, starting as `attack.random_start`
    /// says or, when absent, as the method's `default_start`.
    pub fn from_config(cfg: &TrainConfig, loss: InnerLoss, default_start: AttackStart) -> Self {
        Self {
            eps: cfg.attack.eps,
            step_size: cfg.attack.step_size,
            steps: cfg.attack.steps,
            start: cfg.attack.random_start.unwrap_or(default_start),
            loss,
            shared_start: cfg.attack.class_budget.is_some_and(|b| b.shared_start),
            batch_norm: cfg.attack.batch_norm,
        }
    }
}
