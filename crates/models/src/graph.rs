//! One definition per backbone: each topology is written once, generic over [`Graph`]
//! (convolution, BatchNorm(+ReLU), add(+ReLU), dropout, max-pool, global average pool,
//! zero padding at the bottom and right),
//! and runs on either implementation:
//!
//! - [`Eager`]: candle tensors, layer by layer, through candle's autograd (any device
//!   and dtype; what CUDA and float64 run);
//! - [`Recorder`]: steps of a [`Tape`] on the CPU kernels, run as one candle op with its
//!   own backward pass. An evaluation-mode BatchNorm(-ReLU) is a per-channel affine map
//!   that stays pending ([`TapeValue::Pending`]) until something reads it: a convolution
//!   applies it while gathering its input (the map's output is never stored), anything
//!   else materialises it.

use candle_core::Tensor;

use crate::error::Result;
use crate::layers::{dropout, dropout_mask, global_avg_pool, BatchNorm2d, Conv2d, Mode};
use crate::ops::{self, Affine, Kernels, Pool2d, Tape, ValueId};

/// The operations backbones are made of. `Value` is an activation (N, C, H, W).
pub trait Graph {
    /// An activation.
    type Value: Clone;

    /// y = conv(x, W) with the layer's stride and zero padding.
    fn conv(&mut self, x: &Self::Value, layer: &Conv2d) -> Result<Self::Value>;

    /// y = relu?(BatchNorm(x)): batch statistics (and a running-average update) in
    /// training, running statistics in evaluation.
    fn batch_norm(&mut self, x: &Self::Value, layer: &BatchNorm2d, relu: bool) -> Result<Self::Value>;

    /// y = relu?(a + b).
    fn add(&mut self, a: &Self::Value, b: &Self::Value, relu: bool) -> Result<Self::Value>;

    /// Inverted dropout with probability `p` and a mask drawn from `seed` in training;
    /// the identity in evaluation.
    fn dropout(&mut self, x: &Self::Value, p: f64, seed: u64) -> Result<Self::Value>;

    /// Max-pool with `pool`'s window, stride and -inf padding.
    fn max_pool(&mut self, x: &Self::Value, pool: Pool2d) -> Result<Self::Value>;

    /// Global average pool: the (N, C) feature.
    fn global_avg_pool(&mut self, x: &Self::Value) -> Result<Self::Value>;

    /// x with `n` zero rows appended at the bottom and `n` zero columns at the right.
    fn pad_after(&mut self, x: &Self::Value, n: usize) -> Result<Self::Value>;
}

/// [`Graph`] on candle tensors, layer by layer.
#[derive(Clone, Copy, Debug)]
pub struct Eager {
    /// Train or evaluation mode.
    pub mode: Mode,
    /// Whose conv/BatchNorm/add-ReLU ops (the CPU kernels serve f32 CPU tensors only).
    pub kernels: Kernels,
}

impl Graph for Eager {
    type Value = Tensor;

    fn conv(&mut self, x: &Tensor, layer: &Conv2d) -> Result<Tensor> {
        layer.forward_with(x, self.mode, self.kernels)
    }

    fn batch_norm(&mut self, x: &Tensor, layer: &BatchNorm2d, relu: bool) -> Result<Tensor> {
        layer.forward_with(x, self.mode, relu, self.kernels)
    }

    fn add(&mut self, a: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
        Ok(match (relu, self.kernels) {
            (false, _) => (a + b)?,
            (true, Kernels::Robal) => ops::add_relu(a, b)?,
            (true, Kernels::Candle) => (a + b)?.relu()?,
        })
    }

    fn dropout(&mut self, x: &Tensor, p: f64, seed: u64) -> Result<Tensor> {
        dropout(x, p, self.mode, seed)
    }

    fn max_pool(&mut self, x: &Tensor, pool: Pool2d) -> Result<Tensor> {
        Ok(ops::max_pool2d(x, pool.kernel, pool.stride, pool.padding)?)
    }

    fn global_avg_pool(&mut self, x: &Tensor) -> Result<Tensor> {
        global_avg_pool(x)
    }

    fn pad_after(&mut self, x: &Tensor, n: usize) -> Result<Tensor> {
        Ok(x.pad_with_zeros(2, 0, n)?.pad_with_zeros(3, 0, n)?)
    }
}

/// An activation on a [`Tape`].
#[derive(Clone, Debug)]
pub enum TapeValue {
    /// A stored value.
    Ready(ValueId),
    /// f(value) for an evaluation-mode BatchNorm(-ReLU) f, not yet applied.
    Pending(ValueId, Affine),
}

/// [`Graph`] as steps of a [`Tape`].
pub struct Recorder<'a> {
    tape: &'a mut Tape,
    mode: Mode,
}

impl<'a> Recorder<'a> {
    /// Record onto `tape` in `mode`.
    pub fn new(tape: &'a mut Tape, mode: Mode) -> Self {
        Self { tape, mode }
    }

    /// The value, with a pending map applied as a step of its own.
    fn ready(&mut self, x: &TapeValue) -> Result<ValueId> {
        Ok(match x {
            TapeValue::Ready(v) => *v,
            TapeValue::Pending(v, f) => self.tape.affine(*v, f.clone())?,
        })
    }
}

impl Graph for Recorder<'_> {
    type Value = TapeValue;

    fn conv(&mut self, x: &TapeValue, layer: &Conv2d) -> Result<TapeValue> {
        let y = match x {
            TapeValue::Ready(v) => layer.tape(self.tape, *v, None)?,
            TapeValue::Pending(v, f) => layer.tape(self.tape, *v, Some(f.clone()))?,
        };
        Ok(TapeValue::Ready(y))
    }

    fn batch_norm(&mut self, x: &TapeValue, layer: &BatchNorm2d, relu: bool) -> Result<TapeValue> {
        let v = self.ready(x)?;
        Ok(match self.mode {
            Mode::Eval => TapeValue::Pending(v, layer.affine(relu)?),
            Mode::Train => TapeValue::Ready(layer.tape(self.tape, v, relu, Mode::Train)?),
        })
    }

    fn add(&mut self, a: &TapeValue, b: &TapeValue, relu: bool) -> Result<TapeValue> {
        let (a, b) = (self.ready(a)?, self.ready(b)?);
        Ok(TapeValue::Ready(self.tape.add(a, b, relu)?))
    }

    fn dropout(&mut self, x: &TapeValue, p: f64, seed: u64) -> Result<TapeValue> {
        if self.mode == Mode::Eval || p == 0.0 {
            return Ok(x.clone());
        }
        let v = self.ready(x)?;
        let len = self.tape.dims(v).iter().product();
        Ok(TapeValue::Ready(self.tape.mask(v, dropout_mask(len, p, seed))?))
    }

    fn max_pool(&mut self, x: &TapeValue, pool: Pool2d) -> Result<TapeValue> {
        let v = self.ready(x)?;
        Ok(TapeValue::Ready(self.tape.max_pool(v, pool)?))
    }

    fn global_avg_pool(&mut self, x: &TapeValue) -> Result<TapeValue> {
        let v = self.ready(x)?;
        Ok(TapeValue::Ready(self.tape.pool(v)))
    }

    fn pad_after(&mut self, x: &TapeValue, n: usize) -> Result<TapeValue> {
        // The zeros are appended to the BatchNorm-ReLU's output, not its input.
        let v = self.ready(x)?;
        Ok(TapeValue::Ready(self.tape.pad_after(v, n)))
    }
}
