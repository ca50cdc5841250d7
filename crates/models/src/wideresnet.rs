//! WideResNet-D-K (Zagoruyko & Komodakis) in the pre-activation form of the
//! reference code: channels 16, 16K, 32K, 64K; (D-4)/6 basic blocks per group
//! (BN-ReLU-conv3x3, BN-ReLU-[dropout]-conv3x3, 1x1 shortcut where the shape
//! changes); final BN-ReLU and global average pool. The DeepMind-style variant
//! ([`WideResNet::deepmind`]) differs in BatchNorm momentum (0.01) and in how a stride-2
//! convolution pads (one zero row and column at the bottom and right, then no padding).

use crate::error::{invalid, Result};
use crate::graph::Graph;
use crate::layers::{BatchNorm2d, Conv2d};
use crate::store::StorePath;

#[derive(Clone, Debug)]
struct Block {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    drop: f64,
    /// Stride-2 first convolution padded at the bottom and right only (DeepMind style).
    pad_after: bool,
}

impl Block {
    fn new(p: &StorePath, cin: usize, cout: usize, stride: usize, drop: f64, style: Style) -> Result<Self> {
        let pad_after = style == Style::DeepMind && stride == 2;
        Ok(Self {
            bn1: BatchNorm2d::with_momentum(&p.pp("bn1"), cin, style.momentum())?,
            conv1: Conv2d::new(&p.pp("conv1"), cin, cout, 3, stride, if pad_after { 0 } else { 1 })?,
            bn2: BatchNorm2d::with_momentum(&p.pp("bn2"), cout, style.momentum())?,
            conv2: Conv2d::new(&p.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(Conv2d::new(&p.pp("convShortcut"), cin, cout, 1, stride, 0)?)
            } else {
                None
            },
            drop,
            pad_after,
        })
    }

    /// BN-ReLU, conv3x3, BN-ReLU, dropout, conv3x3, plus the input or, when the shape
    /// changes, a 1x1 convolution of the pre-activated input (as the reference).
    fn graph<G: Graph>(&self, g: &mut G, x: &G::Value, seed: u64) -> Result<G::Value> {
        let a = g.batch_norm(x, &self.bn1, true)?;
        let padded = if self.pad_after { g.pad_after(&a, 1)? } else { a.clone() };
        let out = g.conv(&padded, &self.conv1)?;
        let out = g.batch_norm(&out, &self.bn2, true)?;
        let out = g.dropout(&out, self.drop, seed)?;
        let out = g.conv(&out, &self.conv2)?;
        let skip = match &self.shortcut {
            Some(conv) => g.conv(&a, conv)?,
            None => x.clone(),
        };
        g.add(&out, &skip, false)
    }
}

/// Which WideResNet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Zagoruyko & Komodakis's, as the reference codes.
    Standard,
    /// DeepMind's model zoo (BatchNorm momentum 0.01, 'SAME' stride-2 padding).
    DeepMind,
}

impl Style {
    fn momentum(self) -> f64 {
        match self {
            Style::Standard => 0.1,
            Style::DeepMind => 0.01,
        }
    }
}

/// WideResNet-`depth`-`widen` feature extractor giving a 64*widen-d feature.
#[derive(Clone, Debug)]
pub struct WideResNet {
    conv1: Conv2d,
    blocks: Vec<Block>,
    bn1: BatchNorm2d,
    feature_dim: usize,
}

impl WideResNet {
    /// Build under `p`; `depth` must be 6n+4 (n >= 1), `widen` >= 1, `dropout` in [0, 1).
    pub fn new(p: &StorePath, in_channels: usize, depth: usize, widen: usize, drop: f64) -> Result<Self> {
        Self::build(p, in_channels, depth, widen, drop, Style::Standard)
    }

    /// The DeepMind-style WideResNet (Gowal et al. 2020's model zoo; RobustLT's
    /// `tiny_wideresnet`): BatchNorm momentum 0.01, and each stride-2 convolution applied
    /// to its input padded by one zero row and column at the bottom and right (no other
    /// padding), where the standard one pads one on every side. Same tensor names.
    pub fn deepmind(p: &StorePath, in_channels: usize, depth: usize, widen: usize) -> Result<Self> {
        Self::build(p, in_channels, depth, widen, 0.0, Style::DeepMind)
    }

    fn build(p: &StorePath, in_channels: usize, depth: usize, widen: usize, drop: f64, style: Style) -> Result<Self> {
        if depth < 10 || !(depth - 4).is_multiple_of(6) || widen == 0 {
            return Err(invalid(
                "WideResNet",
                format!("depth {depth}, width {widen}: need depth = 6n+4 >= 10, width >= 1"),
            ));
        }
        if !(0.0..1.0).contains(&drop) {
            return Err(invalid("WideResNet dropout", format!("{drop}: need 0 <= p < 1")));
        }
        let n = (depth - 4) / 6;
        let ch = [16, 16 * widen, 32 * widen, 64 * widen];
        let mut blocks = Vec::new();
        for (g, stride) in [1usize, 2, 2].iter().enumerate() {
            let gp = p.pp(format!("block{}", g + 1)).pp("layer");
            for i in 0..n {
                let cin = if i == 0 { ch[g] } else { ch[g + 1] };
                blocks.push(Block::new(&gp.pp(i), cin, ch[g + 1], if i == 0 { *stride } else { 1 }, drop, style)?);
            }
        }
        Ok(Self {
            conv1: Conv2d::new(&p.pp("conv1"), in_channels, 16, 3, 1, 1)?,
            blocks,
            bn1: BatchNorm2d::with_momentum(&p.pp("bn1"), ch[3], style.momentum())?,
            feature_dim: ch[3],
        })
    }

    /// Pooled feature (N, 64*widen) of `x` on graph `g`; `seed` draws the dropout masks
    /// in training mode.
    pub fn graph<G: Graph>(&self, g: &mut G, x: &G::Value, seed: u64) -> Result<G::Value> {
        let mut out = g.conv(x, &self.conv1)?;
        for (k, b) in self.blocks.iter().enumerate() {
            out = b.graph(g, &out, seed.wrapping_add(k as u64))?;
        }
        let out = g.batch_norm(&out, &self.bn1, true)?;
        g.global_avg_pool(&out)
    }

    /// Feature dimension 64*widen.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}
