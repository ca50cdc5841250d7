//! A small CNN for 28x28 single-channel digits (the embedded MNIST-LT default):
//! conv3x3(32)-BN-ReLU, conv3x3/2(64)-BN-ReLU, conv3x3/2(128)-BN-ReLU, global
//! average pool -> 128-d feature. About 93k parameters and 7.5M multiply-adds per
//! image, so adversarial training fits in minutes on two CPU cores.

use crate::error::Result;
use crate::graph::Graph;
use crate::layers::{BatchNorm2d, Conv2d};
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

    /// Pooled feature (N, 128) of `x` on graph `g`.
    pub fn graph<G: Graph>(&self, g: &mut G, x: &G::Value) -> Result<G::Value> {
        let mut out = x.clone();
        for (conv, bn) in &self.layers {
            out = g.conv(&out, conv)?;
            out = g.batch_norm(&out, bn, true)?;
        }
        g.global_avg_pool(&out)
    }

    /// Feature dimension (128).
    pub fn feature_dim(&self) -> usize {
        128
    }
}
