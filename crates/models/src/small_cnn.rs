//! A small CNN for 28x28 single-channel digits (the embedded MNIST-LT default):
//! conv3x3(32)-BN-ReLU, conv3x3/2(64)-BN-ReLU, conv3x3/2(128)-BN-ReLU, global
//! average pool -> 128-d feature. About 93k parameters and 7.5M multiply-adds per
//! image, so adversarial training fits in minutes on two CPU cores.

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::{global_avg_pool, BatchNorm2d, Conv2d, ConvInput, Mode};
use crate::ops::{Tape, ValueId};
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

    /// [`Self::forward`] as steps of a tape (see [`crate::ops::Tape`]); in evaluation
    /// mode each BatchNorm-ReLU but the last runs inside the next convolution.
    pub(crate) fn tape(&self, t: &mut Tape, x: ValueId, mode: Mode) -> candle_core::Result<ValueId> {
        let mut input = ConvInput::Value(x);
        let mut last = None;
        for (conv, bn) in &self.layers {
            let out = conv.tape(t, &input)?;
            input = bn.tape_into_conv(t, out, mode)?;
            last = Some((out, bn));
        }
        let out = match (input, last) {
            (ConvInput::Value(v), _) => v,
            (ConvInput::Activated(..), Some((out, bn))) => bn.tape(t, out, true, mode)?,
            (ConvInput::Activated(v, _), None) => v,
        };
        Ok(t.pool(out))
    }

    /// Every parameter, in a fixed order.
    pub(crate) fn params(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        for (conv, bn) in &self.layers {
            conv.params(&mut out);
            bn.params(&mut out);
        }
        out
    }

    /// Feature dimension (128).
    pub fn feature_dim(&self) -> usize {
        128
    }
}
