//! 2-D convolution on the CPU as a candle custom op with its own backward:
//! im2col per image + one GEMM, parallel over the batch; 3x3 stride-1 convolutions
//! with 16+ channels go to [`super::winograd`] instead (all three kernels).
//!
//! For x (N, C, H, W), weight W (O, C, k, k), stride s, zero padding p, output
//! (N, O, Ho, Wo) with Ho = (H + 2p - k) / s + 1 (likewise Wo):
//!
//! - forward: `y_n = W · col(x_n)`, where `col(x_n)` is the (C k k, Ho Wo) matrix of
//!   receptive fields (see [`super::im2col`]);
//! - input gradient: `dx_n = col⁻¹(Wᵀ · dy_n)`, where `col⁻¹` scatter-adds every column
//!   entry back to the pixel it was read from (no transposed convolution); for stride
//!   1, a forward convolution of dy with the flipped kernel;
//! - weight gradient: `dW = Σ_n dy_n · col(x_n)ᵀ`.
//!
//! Images whose outputs are small (8x8 and below) are computed several per GEMM, their
//! column matrices side by side, so that each GEMM is wide enough to run at speed. A
//! 1x1, stride-1, unpadded convolution alone skips im2col (`col(x_n) = x_n`). Only the
//! gradients whose operand takes part in autograd are computed: a frozen weight
//! (a detached tensor, as in evaluation mode) costs no weight gradient.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::affine::Affine;
use super::gemm::{matmul, Mat};
use super::im2col::Geometry;
use super::parallel::{per_image, sum_over_shares, uninit_vec};
use super::winograd;
use super::{f32_slice, op_err};

fn forward(x: &[f32], wt: &[f32], g: &Geometry) -> Vec<f32> {
    forward_pre(x, wt, g, None)
}

/// y = conv(pre(x), W): the convolution of the image after a per-channel affine + ReLU
/// (an evaluation-mode BatchNorm-ReLU), applied while the column matrix is gathered,
/// so the transformed image is never stored.
pub(super) fn forward_pre(x: &[f32], wt: &[f32], g: &Geometry, pre: Option<&Affine>) -> Vec<f32> {
    if winograd::applies(g) {
        return winograd::forward(x, wt, g, pre);
    }
    let mut out = uninit_vec(g.n * g.out_image());
    let w = Mat::rows(wt, g.o, g.col_rows());
    let (gs, p) = (g.group(), g.pixels_out());
    if gs > 1 {
        // Images side by side: y = W · [col_1 .. col_G], then each image's block of
        // columns copied to its place.
        let cols = gs * p;
        per_image(&mut out, gs * g.out_image(), (g.col_rows() + g.o) * cols, |grp, y, buf, threads| {
            let count = y.len() / g.out_image();
            let ld = count * p;
            let (col, ybuf) = buf.split_at_mut(g.col_rows() * cols);
            for j in 0..count {
                let i = grp * gs + j;
                g.im2col(&x[i * g.image()..(i + 1) * g.image()], &mut col[j * p..], pre, ld);
            }
            matmul(ybuf, w, Mat::rows(&col[..g.col_rows() * ld], g.col_rows(), ld), false, threads);
            for (j, yi) in y.chunks_exact_mut(g.out_image()).enumerate() {
                for (o, row) in yi.chunks_exact_mut(p).enumerate() {
                    row.copy_from_slice(&ybuf[o * ld + j * p..o * ld + (j + 1) * p]);
                }
            }
        });
        return out;
    }
    let scratch = if g.pointwise() && pre.is_some() { g.image() } else { g.col_len() };
    per_image(&mut out, g.out_image(), scratch, |i, y, col, threads| {
        let xi = &x[i * g.image()..(i + 1) * g.image()];
        let col: &[f32] = match (g.pointwise(), pre) {
            (true, None) => xi,
            (true, Some(f)) => {
                let hw = g.h * g.w;
                for (c, (o, v)) in col.chunks_exact_mut(hw).zip(xi.chunks_exact(hw)).enumerate() {
                    let (a, b) = (f.a[c], f.b[c]);
                    o.iter_mut().zip(v).for_each(|(o, &v)| *o = f.apply(a, b, v));
                }
                col
            }
            (false, _) => {
                g.im2col(xi, col, pre, p);
                col
            }
        };
        matmul(y, w, Mat::rows(col, g.col_rows(), p), false, threads);
    });
    out
}

/// Copy the (O, P) gradients of `count` images from `first` on into the columns of an
/// (O, count P) matrix.
fn gather_dy(dy: &[f32], g: &Geometry, first: usize, count: usize, buf: &mut [f32]) {
    let (p, ld) = (g.pixels_out(), count * g.pixels_out());
    for j in 0..count {
        let dyi = &dy[(first + j) * g.out_image()..(first + j + 1) * g.out_image()];
        for (o, row) in dyi.chunks_exact(p).enumerate() {
            buf[o * ld + j * p..o * ld + (j + 1) * p].copy_from_slice(row);
        }
    }
}

pub(super) fn input_grad(dy: &[f32], wt: &[f32], g: &Geometry) -> Vec<f32> {
    if g.stride == 1 && g.pad < g.k && !g.pointwise() {
        return input_grad_as_conv(dy, wt, g);
    }
    let mut dx = uninit_vec(g.n * g.image());
    let w_t = Mat::rows(wt, g.o, g.col_rows()).t();
    let (gs, p) = (g.group(), g.pixels_out());
    if gs > 1 {
        // dcol = Wᵀ · [dy_1 .. dy_G], then each image's block of columns scattered back.
        let cols = gs * p;
        per_image(&mut dx, gs * g.image(), (g.col_rows() + g.o) * cols, |grp, dxs, buf, threads| {
            let count = dxs.len() / g.image();
            let ld = count * p;
            let (dcol, dybuf) = buf.split_at_mut(g.col_rows() * cols);
            gather_dy(dy, g, grp * gs, count, dybuf);
            matmul(dcol, w_t, Mat::rows(&dybuf[..g.o * ld], g.o, ld), false, threads);
            for (j, dxi) in dxs.chunks_exact_mut(g.image()).enumerate() {
                g.col2im(&dcol[j * p..], dxi, ld);
            }
        });
        return dx;
    }
    per_image(&mut dx, g.image(), g.col_len(), |i, dxi, dcol, threads| {
        let dyi = Mat::rows(&dy[i * g.out_image()..(i + 1) * g.out_image()], g.o, p);
        if g.pointwise() {
            matmul(dxi, w_t, dyi, false, threads);
        } else {
            matmul(dcol, w_t, dyi, false, threads);
            g.col2im(dcol, dxi, p);
        }
    });
    dx
}

/// Stride 1: the input gradient is itself a convolution, of dy by the flipped,
/// transposed kernel, dx[c, h, w] = Σ_{o,i,j} dy[o, h + p - i, w + p - j] W[o, c, i, j]
/// = conv(dy, W')[c, h, w] with W'[c, o, i, j] = W[o, c, k-1-i, k-1-j] and padding
/// k-1-p. Running it through the forward kernel keeps the column matrix at the size of
/// dy's receptive fields instead of scattering a (C k k, H W) matrix back.
fn input_grad_as_conv(dy: &[f32], wt: &[f32], g: &Geometry) -> Vec<f32> {
    let (k, kk) = (g.k, g.k * g.k);
    let mut flipped = vec![0f32; wt.len()];
    for o in 0..g.o {
        for c in 0..g.c {
            for t in 0..kk {
                flipped[(c * g.o + o) * kk + (kk - 1 - t)] = wt[(o * g.c + c) * kk + t];
            }
        }
    }
    let back =
        Geometry { n: g.n, c: g.o, h: g.ho, w: g.wo, o: g.c, k, stride: 1, pad: k - 1 - g.pad, ho: g.h, wo: g.w };
    forward(dy, &flipped, &back)
}

pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: &Geometry) -> Vec<f32> {
    if winograd::applies(g) {
        return winograd::weight_grad(x, dy, g);
    }
    let len = g.o * g.col_rows();
    let (gs, p) = (g.group(), g.pixels_out());
    let scratch = if gs > 1 { (g.col_rows() + g.o) * gs * p } else { g.col_len() };
    // Images first..first+count: dWᵀ += [col_1 .. col_G] · [dy_1 .. dy_G]ᵀ (accumulated
    // transposed: faster for gemm than dy · colᵀ).
    let some = |acc: &mut Vec<f32>, buf: &mut Vec<f32>, first: usize, count: usize, gemm_threads: usize| {
        if gs == 1 {
            let xi = &x[first * g.image()..(first + 1) * g.image()];
            let col: &[f32] = if g.pointwise() {
                xi
            } else {
                g.im2col(xi, buf, None, p);
                buf
            };
            let dyi = Mat::rows(&dy[first * g.out_image()..(first + 1) * g.out_image()], g.o, p);
            matmul(acc, Mat::rows(col, g.col_rows(), p), dyi.t(), true, gemm_threads);
            return;
        }
        let ld = count * p;
        let (col, dybuf) = buf.split_at_mut(g.col_rows() * gs * p);
        for j in 0..count {
            let i = first + j;
            g.im2col(&x[i * g.image()..(i + 1) * g.image()], &mut col[j * p..], None, ld);
        }
        gather_dy(dy, g, first, count, dybuf);
        let (col, dys) =
            (Mat::rows(&col[..g.col_rows() * ld], g.col_rows(), ld), Mat::rows(&dybuf[..g.o * ld], g.o, ld));
        matmul(acc, col, dys.t(), true, gemm_threads);
    };
    let total_t = sum_over_shares(g.n, len, |images, gemm_threads| {
        let (mut acc, mut buf) = (vec![0f32; len], uninit_vec(scratch));
        for first in images.clone().step_by(gs) {
            some(&mut acc, &mut buf, first, gs.min(images.end - first), gemm_threads);
        }
        acc
    });
    let (rows, o) = (g.col_rows(), g.o);
    let mut total = vec![0f32; len];
    for r in 0..rows {
        for j in 0..o {
            total[j * rows + r] = total_t[r * o + j];
        }
    }
    total
}

/// The convolution op (input, weight) -> output.
struct Conv2dOp {
    stride: usize,
    pad: usize,
}

impl CustomOp2 for Conv2dOp {
    fn name(&self) -> &'static str {
        "robal-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geometry::new(l1.dims(), l2.dims(), self.stride, self.pad)?;
        let out = forward(f32_slice(s1, l1)?, f32_slice(s2, l2)?, &g);
        Ok((CpuStorage::F32(out), Shape::from((g.n, g.o, g.ho, g.wo))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (stride, pad) = (self.stride, self.pad);
        let dx = if x.track_op() {
            Some(dy.apply_op2_no_bwd(w, &GradOp { wrt: Wrt::Input(x.dims4()?), stride, pad })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &GradOp { wrt: Wrt::Weight(w.dims4()?), stride, pad })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// Which gradient a [`GradOp`] computes, and that operand's shape.
enum Wrt {
    /// Operands (dy, weight) -> dx of this input shape.
    Input((usize, usize, usize, usize)),
    /// Operands (x, dy) -> dW of this weight shape.
    Weight((usize, usize, usize, usize)),
}

/// A gradient of the convolution (no backward of its own: second derivatives are not needed).
struct GradOp {
    wrt: Wrt,
    stride: usize,
    pad: usize,
}

impl CustomOp2 for GradOp {
    fn name(&self) -> &'static str {
        match self.wrt {
            Wrt::Input(_) => "robal-conv2d-input-grad",
            Wrt::Weight(_) => "robal-conv2d-weight-grad",
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let arr = |d: (usize, usize, usize, usize)| [d.0, d.1, d.2, d.3];
        let (g, dy_dims, shape) = match self.wrt {
            Wrt::Input(x) => (Geometry::new(&arr(x), l2.dims(), self.stride, self.pad)?, l1.dims(), x),
            Wrt::Weight(w) => (Geometry::new(l1.dims(), &arr(w), self.stride, self.pad)?, l2.dims(), w),
        };
        if dy_dims != [g.n, g.o, g.ho, g.wo] {
            return Err(op_err(format!(
                "{}: dy {dy_dims:?} does not match the output {:?}",
                self.name(),
                [g.n, g.o, g.ho, g.wo]
            )));
        }
        let (a, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let out = match self.wrt {
            Wrt::Input(_) => input_grad(a, b, &g),
            Wrt::Weight(_) => weight_grad(a, b, &g),
        };
        Ok((CpuStorage::F32(out), Shape::from(shape)))
    }
}
/// Convolution of `x` (N, C, H, W) by `weight` (O, C, k, k) with zero padding `pad`
/// and stride `stride`, differentiable in both. f32 tensors on the CPU use the kernels
/// of this module; other devices and dtypes use candle's `conv2d` (see [`super::kernels_apply`]).
pub fn conv2d(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    if !super::kernels_apply(x) || weight.dtype() != candle_core::DType::F32 {
        return x.conv2d(weight, pad, stride, 1, 1);
    }
    x.contiguous()?.apply_op2(&weight.contiguous()?, Conv2dOp { stride, pad })
}
