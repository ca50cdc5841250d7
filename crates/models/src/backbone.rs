//! One type for every backbone.

use candle_core::Tensor;

use crate::arch::Arch;
use crate::error::Result;
use crate::layers::Mode;
use crate::resnet::{ResNet, ResNetKind};
use crate::small_cnn::SmallCnn;
use crate::store::StorePath;
use crate::wideresnet::WideResNet;

/// A feature extractor: image batch (N, C, H, W) -> pooled feature (N, d).
#[derive(Clone, Debug)]
pub enum Backbone {
    /// WideResNet.
    WideResNet(WideResNet),
    /// ResNet family.
    ResNet(ResNet),
    /// Small CNN.
    SmallCnn(SmallCnn),
}

impl Backbone {
    /// Build `arch` under `p`.
    pub fn new(p: &StorePath, arch: &Arch, in_channels: usize) -> Result<Self> {
        Ok(match *arch {
            Arch::WideResNet { depth, widen, dropout } => {
                Backbone::WideResNet(WideResNet::new(p, in_channels, depth, widen, dropout)?)
            }
            Arch::ResNet18 => Backbone::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet18)?),
            Arch::PreActResNet18 => Backbone::ResNet(ResNet::new(p, in_channels, ResNetKind::PreActResNet18)?),
            Arch::ResNet18ImageNet => Backbone::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet18ImageNet)?),
            Arch::ResNet50ImageNet => Backbone::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet50ImageNet)?),
            Arch::SmallCnn => Backbone::SmallCnn(SmallCnn::new(p, in_channels)?),
        })
    }

    /// Pooled feature. `seed` draws dropout masks (training mode only).
    pub fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        match self {
            Backbone::WideResNet(m) => m.forward(x, mode, seed),
            Backbone::ResNet(m) => m.forward(x, mode),
            Backbone::SmallCnn(m) => m.forward(x, mode),
        }
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        match self {
            Backbone::WideResNet(m) => m.feature_dim(),
            Backbone::ResNet(m) => m.feature_dim(),
            Backbone::SmallCnn(m) => m.feature_dim(),
        }
    }
}
