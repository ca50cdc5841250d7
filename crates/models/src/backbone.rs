//! One type for every backbone.

use candle_core::Tensor;

use crate::arch::Arch;
use crate::error::Result;
use crate::layers::Mode;
use crate::ops;
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
    ///
    /// In evaluation mode, when x takes part in autograd (an attack step) and the
    /// CPU kernels apply, the whole backbone runs as one frozen op with its own
    /// input-gradient pass ([`crate::ops::frozen_forward`]): the same function, without
    /// candle's per-layer gradient bookkeeping. Inference without gradients keeps the
    /// layer-by-layer path, which frees each activation as soon as it is used.
    pub fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        if self.runs_frozen(x, mode) {
            let me = self.clone();
            return Ok(ops::frozen_forward(x, move |g, v| me.frozen(g, v))?);
        }
        self.forward_layers(x, mode, seed)
    }

    /// Whether [`Self::forward`] of `x` in `mode` runs the frozen op: evaluation mode,
    /// x an f32 CPU image batch that takes part in autograd, the CPU kernels on, and a
    /// backbone with a frozen form (all but the ImageNet ResNets).
    pub fn runs_frozen(&self, x: &Tensor, mode: Mode) -> bool {
        mode == Mode::Eval && x.rank() == 4 && x.track_op() && ops::kernels_apply(x) && self.has_frozen_form()
    }

    /// Pooled feature computed layer by layer through candle's autograd (what
    /// [`Self::forward`] runs outside the frozen case).
    pub fn forward_layers(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        match self {
            Backbone::WideResNet(m) => m.forward(x, mode, seed),
            Backbone::ResNet(m) => m.forward(x, mode),
            Backbone::SmallCnn(m) => m.forward(x, mode),
        }
    }

    fn has_frozen_form(&self) -> bool {
        match self {
            Backbone::ResNet(m) => m.has_frozen_form(),
            Backbone::WideResNet(_) | Backbone::SmallCnn(_) => true,
        }
    }

    fn frozen(&self, g: &mut ops::FrozenGraph, x: ops::ValueId) -> candle_core::Result<ops::ValueId> {
        match self {
            Backbone::WideResNet(m) => m.frozen(g, x),
            Backbone::ResNet(m) => m.frozen(g, x),
            Backbone::SmallCnn(m) => m.frozen(g, x),
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
