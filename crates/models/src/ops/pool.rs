//! 2-d max-pooling with its own backward pass (candle's has none when kernel != stride,
//! e.g. the 3x3 stride-2 max-pool of the ImageNet ResNet stem).
//!
//! Forward: out[n, c, i, j] = max over the k x k window at (i s - p, j s - p) of x, the
//! positions outside the image ignored (PyTorch's -inf padding). Backward: each output's
//! gradient goes to the input position that produced its maximum; ties go to the first
//! position in row-major window order and NaN wins, as in PyTorch's CPU kernel.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::{f32_slice, op_err, with_f32};

/// Geometry of a max-pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2d {
    /// Window size k (square).
    pub kernel: usize,
    /// Stride s.
    pub stride: usize,
    /// Implicit -inf padding p on each side (at most k / 2, as PyTorch requires).
    pub padding: usize,
}

impl Pool2d {
    /// Output size of an input of size `n`: floor((n + 2p - k) / s) + 1.
    pub fn out_size(&self, n: usize) -> Result<usize> {
        if self.kernel == 0 || self.stride == 0 || 2 * self.padding > self.kernel {
            return Err(op_err(format!("max-pool {self:?}: need k, s >= 1 and p <= k / 2")));
        }
        if n + 2 * self.padding < self.kernel {
            return Err(op_err(format!("max-pool {self:?}: input size {n} is smaller than the window")));
        }
        Ok((n + 2 * self.padding - self.kernel) / self.stride + 1)
    }

    /// For one (H, W) plane: the value and flat input index of each output's maximum
    /// (`out`, `idx` hold (Ho, Wo) = `out_hw` entries).
    fn argmax(
        &self,
        plane: &[f32],
        (h, w): (usize, usize),
        out_hw: (usize, usize),
        out: &mut [f32],
        idx: &mut [usize],
    ) {
        let (ho, wo) = out_hw;
        for i in 0..ho {
            for j in 0..wo {
                let (mut best, mut at) = (f32::NEG_INFINITY, usize::MAX);
                for di in 0..self.kernel {
                    let y = (i * self.stride + di) as isize - self.padding as isize;
                    if y < 0 || y as usize >= h {
                        continue;
                    }
                    for dj in 0..self.kernel {
                        let x = (j * self.stride + dj) as isize - self.padding as isize;
                        if x < 0 || x as usize >= w {
                            continue;
                        }
                        let k = y as usize * w + x as usize;
                        let v = plane[k];
                        if at == usize::MAX || v > best || v.is_nan() {
                            (best, at) = (v, k);
                            if v.is_nan() {
                                break;
                            }
                        }
                    }
                    if best.is_nan() {
                        break;
                    }
                }
                out[i * wo + j] = best;
                idx[i * wo + j] = at;
            }
        }
    }
}

/// A max-pool's outputs (N, C, Ho, Wo), the flat input index of each output's maximum
/// (`usize::MAX` for an empty window), and (Ho, Wo).
pub(super) struct Pooled {
    pub(super) out: Vec<f32>,
    pub(super) argmax: Vec<usize>,
    pub(super) out_hw: (usize, usize),
}

impl Pool2d {
    /// Max-pool of an (N, C, H, W) buffer.
    pub(super) fn forward_with_indices(&self, x: &[f32], (n, c, h, w): (usize, usize, usize, usize)) -> Result<Pooled> {
        let (ho, wo) = (self.out_size(h)?, self.out_size(w)?);
        let mut out = vec![0f32; n * c * ho * wo];
        let mut argmax = vec![0usize; n * c * ho * wo];
        let planes = x.chunks(h * w).zip(out.chunks_mut(ho * wo)).zip(argmax.chunks_mut(ho * wo));
        for (plane, ((p, o), i)) in planes.enumerate() {
            self.argmax(p, (h, w), (ho, wo), o, i);
            i.iter_mut().filter(|k| **k != usize::MAX).for_each(|k| *k += plane * h * w);
        }
        Ok(Pooled { out, argmax, out_hw: (ho, wo) })
    }
}

/// The input gradient of a max-pool: each output's gradient `dy` added at the input
/// index of its maximum (`argmax` of [`Pool2d::forward_with_indices`]), over an input of
/// `len` values.
pub(super) fn scatter_to_maxima(argmax: &[usize], dy: &[f32], len: usize) -> Vec<f32> {
    let mut dx = vec![0f32; len];
    for (&k, &g) in argmax.iter().zip(dy) {
        if k != usize::MAX {
            dx[k] += g;
        }
    }
    dx
}

fn dims4(d: &[usize]) -> Result<(usize, usize, usize, usize)> {
    match d {
        &[n, c, h, w] => Ok((n, c, h, w)),
        _ => Err(op_err(format!("max-pool: expected (N, C, H, W), got {d:?}"))),
    }
}

impl CustomOp1 for Pool2d {
    fn name(&self) -> &'static str {
        "robal-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l.dims())?;
        let (ho, wo) = (self.out_size(h)?, self.out_size(w)?);
        let x = f32_slice(s, l)?;
        let mut out = vec![0f32; n * c * ho * wo];
        let mut idx = vec![0usize; ho * wo];
        for (p, o) in x.chunks(h * w).zip(out.chunks_mut(ho * wo)) {
            self.argmax(p, (h, w), (ho, wo), o, &mut idx);
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, ho, wo))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dims = dims4(x.dims())?;
        let dx = with_f32(x, |xs| {
            with_f32(dy, |dys| Ok(scatter_to_maxima(&self.forward_with_indices(xs, dims)?.argmax, dys, xs.len())))
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Max-pool `x` (N, C, H, W) with a `kernel` x `kernel` window, `stride` and -inf
/// `padding`, differentiable in x. f32 CPU tensors run this module's kernel; other
/// devices use candle's forward (whose backward exists only for kernel == stride).
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let pool = Pool2d { kernel, stride, padding };
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        return x.contiguous()?.apply_op1(pool);
    }
    // Replicate padding gives the same maxima as -inf padding: the replicated edge value
    // is inside every window that reaches past the edge (p <= k / 2).
    x.pad_with_same(2, padding, padding)?.pad_with_same(3, padding, padding)?.max_pool2d_with_stride(kernel, stride)
}
