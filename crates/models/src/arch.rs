//! Architecture and head settings: serialisable, parsed from short names such as
//! `wrn-34-10`, and stored in checkpoints so a file rebuilds its own model.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{invalid, ModelError};

/// A backbone architecture.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Arch {
    /// WideResNet-depth-widen (pre-activation), optional dropout.
    WideResNet {
        /// Depth 6n+4.
        depth: usize,
        /// Width multiplier.
        widen: usize,
        /// Dropout probability inside blocks.
        dropout: f64,
    },
    /// The DeepMind-style WideResNet-depth-widen (Gowal et al. 2020's model zoo, RobustLT's
    /// Tiny-ImageNet model): the same topology with BatchNorm momentum 0.01 and the
    /// stride-2 convolutions padded by one zero row and column at the bottom and right only
    /// (TensorFlow's 'SAME'), no dropout. Even input sizes only, as the code (a stride-2
    /// shortcut and its convolution would disagree on odd ones).
    DeepMindWideResNet {
        /// Depth 6n+4.
        depth: usize,
        /// Width multiplier.
        widen: usize,
    },
    /// ResNet-18, CIFAR form.
    ResNet18,
    /// PreAct-ResNet-18, CIFAR form.
    PreActResNet18,
    /// ResNet-18, ImageNet form.
    ResNet18ImageNet,
    /// ResNet-50, ImageNet form.
    ResNet50ImageNet,
    /// The small CNN for 28x28 digits.
    SmallCnn,
}

impl Arch {
    /// The short name this parses from.
    pub fn name(&self) -> String {
        match self {
            Arch::WideResNet { depth, widen, .. } => format!("wrn-{depth}-{widen}"),
            Arch::DeepMindWideResNet { depth, widen } => format!("dm-wrn-{depth}-{widen}"),
            Arch::ResNet18 => "resnet18".into(),
            Arch::PreActResNet18 => "preact-resnet18".into(),
            Arch::ResNet18ImageNet => "resnet18-imagenet".into(),
            Arch::ResNet50ImageNet => "resnet50-imagenet".into(),
            Arch::SmallCnn => "small-cnn".into(),
        }
    }
}

/// One row of the architecture table [`ARCHITECTURES`]: a family, the smallest instance
/// of it, and the input it runs on.
pub struct ArchEntry {
    /// The `--arch` / `model.arch` name, or its pattern for a family (`wrn-D-K`).
    pub pattern: &'static str,
    /// What it is and who uses it.
    pub about: &'static str,
    /// A small instance (what the tests build, run forward and differentiate).
    pub example: Arch,
    /// Input channels, height and width of the example.
    pub input: (usize, usize, usize),
}

/// Every backbone robal-rs builds, one row per family (RobustBench's model-zoo table,
/// in small). A new backbone is its topology file, an [`Arch`] variant with its name,
/// and a row here; `tests/architectures.rs` then builds the row's example, checks its
/// name parses back, and runs it forward and backward in both modes.
pub static ARCHITECTURES: [ArchEntry; 7] = [
    ArchEntry {
        pattern: "wrn-D-K",
        about: "WideResNet, pre-activation (RoBal, AT-BSL, AWP, REAT, TAET: WRN-34-10, WRN-28-10)",
        example: Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 },
        input: (3, 32, 32),
    },
    ArchEntry {
        pattern: "dm-wrn-D-K",
        about: "DeepMind-style WideResNet: BN momentum 0.01, 'SAME' stride-2 padding (RobustLT, Tiny-ImageNet)",
        example: Arch::DeepMindWideResNet { depth: 10, widen: 1 },
        input: (3, 32, 32),
    },
    ArchEntry {
        pattern: "resnet18",
        about: "ResNet-18, CIFAR form (AT-BSL CIFAR-10, MCAT)",
        example: Arch::ResNet18,
        input: (3, 32, 32),
    },
    ArchEntry {
        pattern: "preact-resnet18",
        about: "PreAct-ResNet-18, CIFAR form (AT-BSL Tiny-ImageNet)",
        example: Arch::PreActResNet18,
        input: (3, 32, 32),
    },
    ArchEntry {
        pattern: "resnet18-imagenet",
        about: "ResNet-18, ImageNet form: 7x7 stem and max-pool (torchvision layout)",
        example: Arch::ResNet18ImageNet,
        input: (3, 64, 64),
    },
    ArchEntry {
        pattern: "resnet50-imagenet",
        about: "ResNet-50, ImageNet form (TAET's notebook, torchvision layout)",
        example: Arch::ResNet50ImageNet,
        input: (3, 32, 32),
    },
    ArchEntry {
        pattern: "small-cnn",
        about: "three-convolution CNN for 28x28 greyscale (the MNIST-LT and Fashion-MNIST-LT studies)",
        example: Arch::SmallCnn,
        input: (1, 28, 28),
    },
];

impl FromStr for Arch {
    type Err = ModelError;

    /// `wrn-D-K`, `dm-wrn-D-K`, `resnet18`, `preact-resnet18`, `resnet18-imagenet`, `resnet50-imagenet`, `small-cnn`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Ok(match lower.as_str() {
            "resnet18" | "resnet-18" => Arch::ResNet18,
            "preact-resnet18" | "preactresnet18" | "preact-resnet-18" => Arch::PreActResNet18,
            "resnet18-imagenet" => Arch::ResNet18ImageNet,
            "resnet50-imagenet" => Arch::ResNet50ImageNet,
            "small-cnn" | "smallcnn" => Arch::SmallCnn,
            other => {
                let parts: Vec<&str> = other.split('-').collect();
                match parts.as_slice() {
                    ["dm", "wrn", d, k] => Arch::DeepMindWideResNet {
                        depth: d.parse().map_err(|_| invalid("architecture", format!("{s:?}: depth {d:?} is not a number")))?,
                        widen: k.parse().map_err(|_| invalid("architecture", format!("{s:?}: width {k:?} is not a number")))?,
                    },
                    ["wrn", d, k] => Arch::WideResNet {
                        depth: d.parse().map_err(|_| invalid("architecture", format!("{s:?}: depth {d:?} is not a number")))?,
                        widen: k.parse().map_err(|_| invalid("architecture", format!("{s:?}: width {k:?} is not a number")))?,
                        dropout: 0.0,
                    },
                    _ => {
                        return Err(invalid(
                            "architecture",
                            format!("{s:?}; expected wrn-D-K, dm-wrn-D-K, resnet18, preact-resnet18, resnet18-imagenet, resnet50-imagenet or small-cnn"),
                        ))
                    }
                }
            }
        })
    }
}

/// A classifier head on the pooled feature.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum HeadConfig {
    /// z = W f + b, the bias as [`FcBias`] says (learned from 0 by default).
    Fc {
        /// How the bias b is initialised and whether it is trained.
        #[serde(default, skip_serializing_if = "FcBias::is_learned")]
        bias: FcBias,
    },
    /// z_c = s * <f/||f||, w_c/(||w_c|| + gamma)> (+ b_c if `bias`, else b = 0 frozen).
    Cosine {
        /// Logit scale s.
        scale: f64,
        /// gamma in the weight normaliser.
        gamma: f64,
        /// Learn a bias (off by default: frozen at zero).
        bias: bool,
    },
    /// tau-normalised FC weights: z_c = <w_c / ||w_c||^tau, f> (+ b_c if `bias`).
    TauNorm {
        /// Normalisation power tau.
        tau: f64,
        /// Add the trained FC bias (the default). `false` is the RoBal reference's
        /// `PostNorm` head (`bias: False`): the bias stays in the state but is not added.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
    /// Learnable weight scaling: z_c = g_c (W f + b)_c with learnable g (init 1).
    Lws {
        /// Add the FC bias (the default). `false` is the RoBal reference's LWS
        /// (`PostNorm(lws=True, bias=False)`): z_c = g_c (W f)_c, the trained bias kept in
        /// the state but not added.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
    },
}

fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// The bias of an FC head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FcBias {
    /// Learned, initialised at 0.
    #[default]
    Learned,
    /// **quirk** of the RoBal reference's focal baseline (`FC_Classifier(focal_init=True)`):
    /// learned, initialised at b_c = -log((1 - pi_c) / pi_c), pi_c = n_c / N the training
    /// prior ([`crate::Classifier::init_prior_bias`]; the trainer calls it).
    Prior,
    /// **quirk** of the RoBal reference's `Dot_Classifier` (logit adjustment): drawn at
    /// init as PyTorch's `nn.Linear` bias, U(-1/sqrt(d), 1/sqrt(d)), then frozen (a
    /// buffer, never updated by the optimiser).
    FrozenRandom,
}

impl FcBias {
    fn is_learned(&self) -> bool {
        *self == FcBias::Learned
    }
}

impl HeadConfig {
    /// The plain FC head: z = W f + b, b learned from 0.
    pub const FC: Self = HeadConfig::Fc { bias: FcBias::Learned };
    /// Learnable weight scaling on the trained FC head, bias added: z_c = g_c (W f + b)_c.
    pub const LWS: Self = HeadConfig::Lws { bias: true };
    /// The paper's cosine head for evaluation: s = 10, gamma = 0.03125, no bias.
    pub const ROBAL_EVAL: Self = HeadConfig::Cosine { scale: 10.0, gamma: 0.03125, bias: false };
}

/// Per-channel input normalisation inside the model: (x - mean_c) / std_c.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// Channel means.
    pub mean: Vec<f32>,
    /// Channel standard deviations.
    pub std: Vec<f32>,
}

/// Everything needed to rebuild a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Backbone.
    pub arch: Arch,
    /// Input channels (1 for digits, 3 for CIFAR/ImageNet).
    pub in_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Head.
    pub head: HeadConfig,
    /// Optional input normalisation.
    pub normalization: Option<Normalization>,
}
