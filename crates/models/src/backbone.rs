//! One type for every backbone, and the two ways it runs.

use candle_core::Tensor;

use crate::arch::Arch;
use crate::error::Result;
use crate::graph::{Eager, Graph, Recorder, TapeValue};
use crate::layers::Mode;
use crate::ops::{self, Kernels};
use crate::resnet::{ResNet, ResNetKind};
use crate::small_cnn::SmallCnn;
use crate::store::StorePath;
use crate::wideresnet::WideResNet;

/// The architectures (each topology written once, generic over [`Graph`]).
#[derive(Clone, Debug)]
enum Net {
    WideResNet(WideResNet),
    ResNet(ResNet),
    SmallCnn(SmallCnn),
}

/// A feature extractor: image batch (N, C, H, W) -> pooled feature (N, d).
#[derive(Clone, Debug)]
pub struct Backbone {
    net: Net,
    /// Where its tensors live in the model's store.
    path: StorePath,
    kernels: Kernels,
}

impl Backbone {
    /// Build `arch` under `p`.
    pub fn new(p: &StorePath, arch: &Arch, in_channels: usize) -> Result<Self> {
        let net = match *arch {
            Arch::WideResNet { depth, widen, dropout } => {
                Net::WideResNet(WideResNet::new(p, in_channels, depth, widen, dropout)?)
            }
            Arch::DeepMindWideResNet { depth, widen } => {
                Net::WideResNet(WideResNet::deepmind(p, in_channels, depth, widen)?)
            }
            Arch::ResNet18 => Net::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet18)?),
            Arch::PreActResNet18 => Net::ResNet(ResNet::new(p, in_channels, ResNetKind::PreActResNet18)?),
            Arch::ResNet18ImageNet => Net::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet18ImageNet)?),
            Arch::ResNet50ImageNet => Net::ResNet(ResNet::new(p, in_channels, ResNetKind::ResNet50ImageNet)?),
            Arch::SmallCnn => Net::SmallCnn(SmallCnn::new(p, in_channels)?),
        };
        Ok(Self { net, path: p.clone(), kernels: Kernels::Robal })
    }

    /// Run on these kernels from now on.
    pub fn set_kernels(&mut self, kernels: Kernels) {
        self.kernels = kernels;
    }

    /// The kernels it runs on.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// Pooled feature. `seed` draws dropout masks (training mode only).
    ///
    /// Where [`Self::runs_on_tape`] says so, the backbone is recorded on a
    /// [`crate::ops::Tape`] ([`Recorder`]) and runs as one candle op with its own
    /// backward pass: the same function, without candle's per-layer gradient
    /// bookkeeping; in evaluation mode (an attack step) it computes the input gradient
    /// only, in training the parameter gradients (and the input gradient if x takes
    /// part in autograd). Elsewhere it runs layer by layer ([`Eager`]).
    pub fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        if !self.runs_on_tape(x, mode) {
            return self.forward_layers(x, mode, seed);
        }
        let net = self.net.clone();
        let build = move |t: &mut ops::Tape, v: ops::ValueId| -> candle_core::Result<ops::ValueId> {
            let mut g = Recorder::new(t, mode);
            match graph(&net, &mut g, &TapeValue::Ready(v), seed).map_err(candle_core::Error::wrap)? {
                TapeValue::Ready(y) => Ok(y),
                TapeValue::Pending(..) => Err(candle_core::Error::Msg("backbone ended on a pending map".into())),
            }
        };
        Ok(match mode {
            Mode::Eval => ops::frozen_forward(x, build)?,
            Mode::Train => ops::train_forward(x, &self.params(), build)?,
        })
    }

    /// Whether [`Self::forward`] of `x` in `mode` runs on a tape: x an f32 CPU image
    /// batch, the backbone on [`Kernels::Robal`], and either training mode or evaluation mode with
    /// x taking part in autograd (an attack step). Inference without gradients keeps
    /// the layer-by-layer path, which frees each activation as soon as it is used.
    pub fn runs_on_tape(&self, x: &Tensor, mode: Mode) -> bool {
        self.kernels == Kernels::Robal
            && x.rank() == 4
            && ops::kernels_apply(x)
            && (mode == Mode::Train || x.track_op())
    }

    /// Pooled feature computed layer by layer through candle's autograd (what
    /// [`Self::forward`] runs where [`Self::runs_on_tape`] is false).
    pub fn forward_layers(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        graph(&self.net, &mut Eager { mode, kernels: self.kernels }, x, seed)
    }

    /// Every parameter of the backbone (convolution weights, BatchNorm γ and β), from
    /// the model's store, sorted by name.
    pub fn params(&self) -> Vec<Tensor> {
        self.path.params()
    }

    /// Feature dimension.
    pub fn feature_dim(&self) -> usize {
        match &self.net {
            Net::WideResNet(m) => m.feature_dim(),
            Net::ResNet(m) => m.feature_dim(),
            Net::SmallCnn(m) => m.feature_dim(),
        }
    }
}

/// The network's topology on graph `g`.
fn graph<G: Graph>(net: &Net, g: &mut G, x: &G::Value, seed: u64) -> Result<G::Value> {
    match net {
        Net::WideResNet(m) => m.graph(g, x, seed),
        Net::ResNet(m) => m.graph(g, x),
        Net::SmallCnn(m) => m.graph(g, x),
    }
}
