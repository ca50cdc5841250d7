//! A small CNN for 28x28 single-channel digits (the embedded MNIST-LT default):
//! conv3x3(32)-BN-ReLU, conv3x3/2(64)-BN-ReLU, conv3x3/2(128)-BN-ReLU, global
//! average pool -> 128-d feature. About 93k parameters and 7.5M multiply-adds per
//! image, so adversarial training fits in minutes on two CPU cores.

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::{global_avg_pool, BatchNorm2d, Conv2d, Mode};
use crate::ops::{FrozenGraph, ValueId};
use crate::store::StorePath;

/// The small CNN feature extractor.
#[derive(Clone, Debug)]
pub struct SmallCnn {
    layers: Vec<(Conv2d, BatchNorm2d)>,
}

impl SmallCnn {
    /// Build under `p` for `in_channels`-channel input.
    pub fn new(p: &StorePath, in_channels: usize) -> Result<Self> {
        let spec = [(in_channels, 32, 1), (32, 64, 2), (64, 128, 2)];
        let layers = spec
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout, s))| {
                Ok((
                    Conv2d::new(&p.pp(format!("conv{}", i + 1)), cin, cout, 3, s, 1)?,
                    BatchNorm2d::new(&p.pp(format!("bn{}", i + 1)), cout)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Pooled feature (N, 128).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut out = x.clone();
        for (conv, bn) in &self.layers {
            out = bn.forward_relu(&conv.forward(&out, mode)?, mode)?;
        }
        global_avg_pool(&out)
    }

    /// The evaluation-mode forward pass as steps of a frozen graph (see
    /// [`crate::ops::frozen_forward`]): each BatchNorm-ReLU but the last runs inside the
    /// next convolution.
    pub(crate) fn frozen(&self, g: &mut FrozenGraph, x: ValueId) -> candle_core::Result<ValueId> {
        let (mut out, mut pending) = (x, None);
        for (conv, bn) in &self.layers {
            out = conv.frozen(g, out, pending)?;
            pending = Some(bn);
        }
        if let Some(bn) = pending {
            out = bn.frozen(g, out, true)?;
        }
        Ok(g.pool(out))
    }

    /// Feature dimension (128).
    pub fn feature_dim(&self) -> usize {
        128
    }
}
