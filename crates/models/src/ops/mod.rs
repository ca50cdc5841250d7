//! CPU kernels for the layers that dominate adversarial training, as candle custom
//! ops with their own backward passes, so that models, attacks and training use them
//! through ordinary autograd:
//!
//! - [`conv2d`]: convolution forward, input gradient and weight gradient by im2col +
//!   GEMM, parallel over the batch, and by Winograd's F(2x2, 3x3) for 3x3 stride-1
//!   convolutions with 16+ channels (all three); no transposed convolution;
//! - [`batch_stats`], [`batch_norm_train`], [`batch_norm_eval`]: BatchNorm (+ optional ReLU) in one pass
//!   forward and backward, without per-op temporaries;
//! - [`add_relu`]: relu(a + b) at the end of a ResNet unit, one pass each way;
//! - [`max_pool2d`]: max-pooling with any kernel, stride and padding, and its backward;
//! - [`Tape`], [`frozen_forward`], [`train_forward`]: a whole backbone as one autograd
//!   node with its own backward pass, in evaluation mode (what an attack step runs;
//!   BatchNorm-ReLUs fused into the convolutions they feed) and in training.
//!
//! Other devices and dtypes fall back to candle's own ops, and so does a model set to
//! [`Kernels::Candle`] (for side-by-side benchmarks and cross-checks).
//!
//! Layering: plain-slice kernels (`gemm`, `im2col`, `affine`, `parallel`, `winograd`,
//! the kernel halves of `conv`, `batchnorm`, `residual`, `pool`) below; the candle op
//! wrappers in the same files above them; the [`Tape`] and its ops (`tape_op`) on top.
//! No module below imports one above.

mod affine;
mod batchnorm;
mod conv;
mod gemm;
mod im2col;
mod parallel;
mod pool;
mod residual;
mod tape;
mod tape_op;
mod winograd;

pub use affine::Affine;
pub use batchnorm::{batch_norm_eval, batch_norm_eval_affine, batch_norm_train, batch_stats, BatchStats};
pub use conv::conv2d;
pub use pool::{max_pool2d, Pool2d};
pub use residual::add_relu;
pub use tape::{Tape, ValueId};
pub use tape_op::{frozen_forward, train_forward};

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

/// Which implementation of convolution, BatchNorm and add-ReLU a model runs on the
/// CPU (a setting of the model, [`crate::Classifier::set_kernels`]; not a global).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Kernels {
    /// This module's kernels and whole-backbone tapes (f32 CPU tensors; other devices
    /// and dtypes use candle's ops either way).
    #[default]
    Robal,
    /// candle's own conv2d and BatchNorm tensor ops, layer by layer (for side-by-side
    /// benchmarks and cross-checks).
    Candle,
}

/// Whether the kernels of this module can serve `x`: an f32 CPU tensor.
pub fn kernels_apply(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// The f32 elements of a contiguous CPU operand.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        return Err(op_err("expected an f32 tensor"));
    };
    let (start, end) = l.contiguous_offsets().ok_or_else(|| op_err("expected a contiguous tensor"))?;
    Ok(&v[start..end])
}

/// Run `f` on the f32 elements of a CPU tensor (made contiguous first if needed).
pub(crate) fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => f(f32_slice(cpu, layout)?),
        _ => Err(op_err("expected a CPU tensor")),
    }
}

pub(crate) fn op_err(msg: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(msg.into())
}
