//! WideResNet-D-K (Zagoruyko & Komodakis) in the pre-activation form of the
//! reference code: channels 16, 16K, 32K, 64K; (D-4)/6 basic blocks per group
//! (BN-ReLU-conv3x3, BN-ReLU-[dropout]-conv3x3, 1x1 shortcut where the shape
//! changes); final BN-ReLU and global average pool.

use candle_core::Tensor;

use crate::error::{invalid, Result};
use crate::layers::{dropout, dropout_mask, global_avg_pool, BatchNorm2d, Conv2d, ConvInput, Mode};
use crate::ops::{Tape, ValueId};
use crate::store::StorePath;

#[derive(Clone, Debug)]
struct Block {
    bn1: BatchNorm2d,
    conv1: Conv2d,
    bn2: BatchNorm2d,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    drop: f64,
}

impl Block {
    fn new(p: &StorePath, cin: usize, cout: usize, stride: usize, drop: f64) -> Result<Self> {
        Ok(Self {
            bn1: BatchNorm2d::new(&p.pp("bn1"), cin)?,
            conv1: Conv2d::new(&p.pp("conv1"), cin, cout, 3, stride, 1)?,
            bn2: BatchNorm2d::new(&p.pp("bn2"), cout)?,
            conv2: Conv2d::new(&p.pp("conv2"), cout, cout, 3, 1, 1)?,
            shortcut: if cin != cout {
                Some(Conv2d::new(&p.pp("convShortcut"), cin, cout, 1, stride, 0)?)
            } else {
                None
            },
            drop,
        })
    }

    fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        let a = self.bn1.forward_relu(x, mode)?;
        let out = self.conv1.forward(&a, mode)?;
        let out = self.bn2.forward_relu(&out, mode)?;
        let out = dropout(&out, self.drop, mode, seed)?;
        let out = self.conv2.forward(&out, mode)?;
        // As the reference: when the shape changes, the shortcut sees the pre-activated input.
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(&a, mode)?,
            None => x.clone(),
        };
        Ok((out + skip)?)
    }

    /// The same block as steps of a tape. In evaluation mode both BatchNorm-ReLUs run
    /// inside the convolutions that read them (dropout is the identity there).
    fn tape(&self, t: &mut Tape, x: ValueId, mode: Mode, seed: u64) -> candle_core::Result<ValueId> {
        let a = self.bn1.tape_into_conv(t, x, mode)?;
        let out = self.conv1.tape(t, &a)?;
        let out = if mode == Mode::Train && self.drop > 0.0 {
            let v = self.bn2.tape(t, out, true, mode)?;
            let len = t.dims(v).iter().product();
            ConvInput::Value(t.mask(v, dropout_mask(len, self.drop, seed))?)
        } else {
            self.bn2.tape_into_conv(t, out, mode)?
        };
        let out = self.conv2.tape(t, &out)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.tape(t, &a)?,
            None => x,
        };
        t.add(out, skip, false)
    }

    fn params(&self, out: &mut Vec<Tensor>) {
        self.bn1.params(out);
        self.conv1.params(out);
        self.bn2.params(out);
        self.conv2.params(out);
        if let Some(c) = &self.shortcut {
            c.params(out);
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
        if depth < 10 || (depth - 4) % 6 != 0 || widen == 0 {
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
                blocks.push(Block::new(&gp.pp(i), cin, ch[g + 1], if i == 0 { *stride } else { 1 }, drop)?);
            }
        }
        Ok(Self {
            conv1: Conv2d::new(&p.pp("conv1"), in_channels, 16, 3, 1, 1)?,
            blocks,
            bn1: BatchNorm2d::new(&p.pp("bn1"), ch[3])?,
            feature_dim: ch[3],
        })
    }

    /// Pooled feature (N, 64*widen). `seed` draws the dropout masks in training mode.
    pub fn forward(&self, x: &Tensor, mode: Mode, seed: u64) -> Result<Tensor> {
        let mut out = self.conv1.forward(x, mode)?;
        for (k, b) in self.blocks.iter().enumerate() {
            out = b.forward(&out, mode, seed.wrapping_add(k as u64))?;
        }
        global_avg_pool(&self.bn1.forward_relu(&out, mode)?)
    }

    /// [`Self::forward`] as steps of a tape (see [`crate::ops::Tape`]).
    pub(crate) fn tape(&self, t: &mut Tape, x: ValueId, mode: Mode, seed: u64) -> candle_core::Result<ValueId> {
        let mut out = self.conv1.tape(t, &ConvInput::Value(x))?;
        for (k, b) in self.blocks.iter().enumerate() {
            out = b.tape(t, out, mode, seed.wrapping_add(k as u64))?;
        }
        let out = self.bn1.tape(t, out, true, mode)?;
        Ok(t.pool(out))
    }

    /// Every parameter, in a fixed order.
    pub(crate) fn params(&self) -> Vec<Tensor> {
        let mut out = Vec::new();
        self.conv1.params(&mut out);
        for b in &self.blocks {
            b.params(&mut out);
        }
        self.bn1.params(&mut out);
        out
    }

    /// Feature dimension 64*widen.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}
