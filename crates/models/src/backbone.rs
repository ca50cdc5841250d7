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
    /// Where [`Self::runs_on_tape`] says so, the whole backbone runs as one candle op
    /// with its own backward pass ([`crate::ops::Tape`]): the same function, without
    /// candle's per-layer gradient bookkeeping; in evaluation mode (an attack step) it
    /// computes the input gradient only, in training the parameter gradients (and the
    /// input gradient if x takes part in autograd).
    pub fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        if self.runs_on_tape(x, mode) {
            let me = self.clone();
            let build = move |t: &mut ops::Tape, v| me.tape(t, v, mode, seed);
            return Ok(match mode {
                Mode::Eval => ops::frozen_forward(x, build)?,
                Mode::Train => ops::train_forward(x, &self.params(), build)?,
            });
        }
        self.forward_layers(x, mode, seed)
    }

    /// Whether [`Self::forward`] of `x` in `mode` runs on a tape: x an f32 CPU image
    /// batch with the CPU kernels on, a backbone with a tape form (all but the ImageNet
    /// ResNets), and either training mode or evaluation mode with x taking part in
    /// autograd (an attack step). Inference without gradients keeps the layer-by-layer
    /// path, which frees each activation as soon as it is used.
    pub fn runs_on_tape(&self, x: &Tensor, mode: Mode) -> bool {
        x.rank() == 4 && ops::kernels_apply(x) && self.has_tape_form() && (mode == Mode::Train || x.track_op())
    }

    /// Pooled feature computed layer by layer through candle's autograd (what
    /// [`Self::forward`] runs where [`Self::runs_on_tape`] is false).
    pub fn forward_layers(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        match self {
            Backbone::WideResNet(m) => m.forward(x, mode, seed),
            Backbone::ResNet(m) => m.forward(x, mode),
            Backbone::SmallCnn(m) => m.forward(x, mode),
        }
    }

    fn has_tape_form(&self) -> bool {
        match self {
            Backbone::ResNet(m) => m.has_tape_form(),
            Backbone::WideResNet(_) | Backbone::SmallCnn(_) => true,
        }
    }

    fn tape(&self, t: &mut ops::Tape, x: ops::ValueId, mode: Mode, seed: u64) -> candle_core::Result<ops::ValueId> {
        match self {
            Backbone::WideResNet(m) => m.tape(t, x, mode, seed),
            Backbone::ResNet(m) => m.tape(t, x, mode),
            Backbone::SmallCnn(m) => m.tape(t, x, mode),
        }
    }

    /// Every parameter of the backbone (convolution weights, BatchNorm γ and β).
    pub fn params(&self) -> Vec<Tensor> {
        match self {
            Backbone::WideResNet(m) => m.params(),
            Backbone::ResNet(m) => m.params(),
            Backbone::SmallCnn(m) => m.params(),
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
