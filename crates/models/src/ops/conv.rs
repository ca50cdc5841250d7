//! 2-D convolution on the CPU as a candle custom op with its own backward:
//! im2col per image + one GEMM, parallel over the batch.
//!
//! For x (N, C, H, W), weight W (O, C, k, k), stride s, zero padding p, output
//! (N, O, Ho, Wo) with Ho = (H + 2p - k) / s + 1 (likewise Wo):
//!
//! - forward: `y_n = W · col(x_n)`, where `col(x_n)` is the (C k k, Ho Wo) matrix of
//!   receptive fields (`col[(c, i, j), (u, v)] = x_n[c, u s - p + i, v s - p + j]`, 0 off
//!   the image);
//! - input gradient: `dx_n = col⁻¹(Wᵀ · dy_n)`, where `col⁻¹` scatter-adds every column
//!   entry back to the pixel it was read from (no transposed convolution);
//! - weight gradient: `dW = Σ_n dy_n · col(x_n)ᵀ`.
//!
//! A 1x1, stride-1, unpadded convolution skips im2col (`col(x_n) = x_n`). Only the
//! gradients whose operand takes part in autograd are computed: a frozen weight
//! (a detached tensor, as in evaluation mode) costs no weight gradient.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::tape::Affine;
use super::gemm::{matmul, Mat};
use super::{f32_slice, op_err};

/// Shapes of one convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(super) n: usize,
    pub(super) c: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) o: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Geometry {
    pub(super) fn new(x: &[usize], w: &[usize], stride: usize, pad: usize) -> Result<Self> {
        let (&[n, c, h, wd], &[o, ci, k, k2]) = (x, w) else {
            return Err(op_err(format!(
                "conv2d: expected input (N, C, H, W) and weight (O, C, k, k), got {x:?} and {w:?}"
            )));
        };
        if ci != c || k != k2 || k == 0 || stride == 0 || h + 2 * pad < k || wd + 2 * pad < k {
            return Err(op_err(format!(
                "conv2d: input {x:?} and weight {w:?} (stride {stride}, padding {pad}) do not fit: expected \
                 weight (O, {c}, k, k) with k <= the padded image"
            )));
        }
        let (ho, wo) = ((h + 2 * pad - k) / stride + 1, (wd + 2 * pad - k) / stride + 1);
        Ok(Self { n, c, h, w: wd, o, k, stride, pad, ho, wo })
    }

    fn image(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_image(&self) -> usize {
        self.o * self.ho * self.wo
    }
    fn col_rows(&self) -> usize {
        self.c * self.k * self.k
    }
    fn pixels_out(&self) -> usize {
        self.ho * self.wo
    }
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.col_rows() * self.pixels_out()
        }
    }

    /// Output columns `v` whose input column `v s + j - p` lies inside the image.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if j >= p { 0 } else { (p - j).div_ceil(s) };
        let hi = if self.w + p > j { ((self.w + p - j - 1) / s + 1).min(self.wo) } else { 0 };
        (lo, hi.max(lo))
    }

    /// Visit the column matrix row segment by row segment, in order: each entry either
    /// reads one pixel of channel `c` (`Seg::Read`: `len` entries from `col` on read
    /// `x[x + t s]`) or is off the image (`Seg::Zero`).
    fn walk(&self, mut f: impl FnMut(Seg)) {
        let (k, s, p, hw) = (self.k, self.stride, self.pad, self.h * self.w);
        let cols = self.pixels_out();
        for c in 0..self.c {
            for i in 0..k {
                for j in 0..k {
                    let row = ((c * k + i) * k + j) * cols;
                    let (lo, hi) = self.valid_cols(j);
                    for u in 0..self.ho {
                        let dst = row + u * self.wo;
                        let ih = (u * s + i) as isize - p as isize;
                        if ih < 0 || ih >= self.h as isize || lo == hi {
                            f(Seg::Zero { col: dst, len: self.wo });
                            continue;
                        }
                        f(Seg::Zero { col: dst, len: lo });
                        let x = c * hw + ih as usize * self.w + lo * s + j - p;
                        f(Seg::Read { c, col: dst + lo, x, len: hi - lo });
                        f(Seg::Zero { col: dst + hi, len: self.wo - hi });
                    }
                }
            }
        }
    }

    /// col(pre(x_n)) into `col` (length `col_len`); every entry is written. `pre`, when
    /// given, maps each pixel through its channel's affine + ReLU before it is copied;
    /// the zero padding stays zero (it pads the transformed image).
    fn im2col(&self, x: &[f32], col: &mut [f32], pre: Option<&Affine>) {
        if self.stride == 1 {
            return self.im2col_stride1(x, col, pre);
        }
        let s = self.stride;
        self.walk(|seg| match seg {
            Seg::Zero { col: c, len } => col[c..c + len].fill(0.0),
            Seg::Read { c: ch, col: c, x: at, len } => {
                let src = x[at..].iter().step_by(s);
                match pre {
                    None => col[c..c + len].iter_mut().zip(src).for_each(|(o, &v)| *o = v),
                    Some(f) => {
                        let (a, b) = (f.a[ch], f.b[ch]);
                        col[c..c + len].iter_mut().zip(src).for_each(|(o, &v)| *o = f.apply(a, b, v))
                    }
                }
            }
        });
    }

    /// im2col for stride 1: each column-matrix row is the image shifted by (i - p, j - p),
    /// copied row by row with zeros at the borders.
    fn im2col_stride1(&self, x: &[f32], col: &mut [f32], pre: Option<&Affine>) {
        let (k, p, w, h) = (self.k, self.pad, self.w, self.h);
        let (ho, wo) = (self.ho, self.wo);
        for (r, dst) in col.chunks_exact_mut(ho * wo).enumerate() {
            let (c, i, j) = (r / (k * k), r / k % k, r % k);
            let img = &x[c * h * w..(c + 1) * h * w];
            let (lo, hi) = self.valid_cols(j);
            for (u, out) in dst.chunks_exact_mut(wo).enumerate() {
                let ih = (u + i) as isize - p as isize;
                if ih < 0 || ih >= h as isize || lo == hi {
                    out.fill(0.0);
                    continue;
                }
                let src = &img[ih as usize * w + lo + j - p..ih as usize * w + hi + j - p];
                out[..lo].fill(0.0);
                match pre {
                    None => out[lo..hi].copy_from_slice(src),
                    Some(f) => {
                        let (a, b) = (f.a[c], f.b[c]);
                        out[lo..hi].iter_mut().zip(src).for_each(|(o, &v)| *o = f.apply(a, b, v));
                    }
                }
                out[hi..].fill(0.0);
            }
        }
    }

    /// dx_n = col⁻¹(dcol): scatter-add of the column matrix onto a zeroed image.
    fn col2im(&self, dcol: &[f32], dx: &mut [f32]) {
        let s = self.stride;
        dx.fill(0.0);
        self.walk(|seg| {
            if let Seg::Read { col: c, x: at, len, .. } = seg {
                let d = &dcol[c..c + len];
                if s == 1 {
                    dx[at..at + len].iter_mut().zip(d).for_each(|(o, &v)| *o += v);
                } else {
                    dx[at..].iter_mut().step_by(s).zip(d).for_each(|(o, &v)| *o += v);
                }
            }
        });
    }
}

/// A run of entries of one row of the column matrix.
enum Seg {
    /// `len` entries from `col` read the pixels `x + t * stride` of channel `c`.
    Read { c: usize, col: usize, x: usize, len: usize },
    /// `len` entries from `col` lie in the zero padding.
    Zero { col: usize, len: usize },
}

/// Run `body(image, out_chunk, scratch, gemm_threads)` for every image: images in
/// parallel when there are at least as many as threads, else one by one with a
/// multi-threaded GEMM.
fn per_image(
    out: &mut [f32],
    chunk: usize,
    scratch: usize,
    body: impl Fn(usize, &mut [f32], &mut [f32], usize) + Sync,
) {
    let threads = rayon::current_num_threads();
    let n = out.len() / chunk.max(1);
    if n >= threads || threads == 1 {
        // One contiguous run of images per thread: one scratch buffer each, not one per
        // rayon split.
        out.par_chunks_mut(chunk)
            .enumerate()
            .with_min_len(n.div_ceil(threads))
            .for_each_init(|| uninit_vec(scratch), |buf, (i, o)| body(i, o, buf, 1));
    } else {
        let mut buf = uninit_vec(scratch);
        for (i, o) in out.chunks_mut(chunk).enumerate() {
            body(i, o, &mut buf, threads);
        }
    }
}

/// A buffer that is fully written before it is read (skips zeroing the output of
/// every op; fresh pages still fault in once).
fn uninit_vec(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns; every caller overwrites all n entries
    // before reading any (im2col writes every entry, matmul without accumulate too).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

fn forward(x: &[f32], wt: &[f32], g: &Geometry) -> Vec<f32> {
    forward_pre(x, wt, g, None)
}

/// y = conv(pre(x), W): the convolution of the image after a per-channel affine + ReLU
/// (an evaluation-mode BatchNorm-ReLU), applied while the column matrix is gathered,
/// so the transformed image is never stored.
pub(super) fn forward_pre(x: &[f32], wt: &[f32], g: &Geometry, pre: Option<&Affine>) -> Vec<f32> {
    let mut out = uninit_vec(g.n * g.out_image());
    let w = Mat::rows(wt, g.o, g.col_rows());
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
                g.im2col(xi, col, pre);
                col
            }
        };
        matmul(y, w, Mat::rows(col, g.col_rows(), g.pixels_out()), false, threads);
    });
    out
}

pub(super) fn input_grad(dy: &[f32], wt: &[f32], g: &Geometry) -> Vec<f32> {
    if g.stride == 1 && g.pad < g.k && !g.pointwise() {
        return input_grad_as_conv(dy, wt, g);
    }
    let mut dx = uninit_vec(g.n * g.image());
    let w_t = Mat::rows(wt, g.o, g.col_rows()).t();
    per_image(&mut dx, g.image(), g.col_len(), |i, dxi, dcol, threads| {
        let dyi = Mat::rows(&dy[i * g.out_image()..(i + 1) * g.out_image()], g.o, g.pixels_out());
        if g.pointwise() {
            matmul(dxi, w_t, dyi, false, threads);
        } else {
            matmul(dcol, w_t, dyi, false, threads);
            g.col2im(dcol, dxi);
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
    let len = g.o * g.col_rows();
    let threads = rayon::current_num_threads();
    let one = |acc: &mut Vec<f32>, col: &mut Vec<f32>, i: usize, gemm_threads: usize| {
        let xi = &x[i * g.image()..(i + 1) * g.image()];
        let col: &[f32] = if g.pointwise() {
            xi
        } else {
            g.im2col(xi, col, None);
            col
        };
        let dyi = Mat::rows(&dy[i * g.out_image()..(i + 1) * g.out_image()], g.o, g.pixels_out());
        // Accumulated transposed, dWᵀ += col · dyᵀ (faster for gemm than dy · colᵀ).
        matmul(acc, Mat::rows(col, g.col_rows(), g.pixels_out()), dyi.t(), true, gemm_threads);
    };
    // A fixed split of the batch into contiguous groups, summed in order: the result
    // does not depend on how rayon schedules the work, so training is reproducible
    // (bit for bit, for a given number of threads).
    let groups = threads.min(g.n).max(1);
    let per = g.n.div_ceil(groups);
    let gemm_threads = if groups == 1 { threads } else { 1 };
    let partials: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|k| {
            let (mut acc, mut col) = (vec![0f32; len], uninit_vec(g.col_len()));
            for i in k * per..((k + 1) * per).min(g.n) {
                one(&mut acc, &mut col, i, gemm_threads);
            }
            acc
        })
        .collect();
    let mut parts = partials.into_iter();
    let mut total_t = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for p in parts {
        total_t.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// im2col by its definition, one entry at a time.
    fn im2col_naive(x: &[f32], g: &Geometry) -> Vec<f32> {
        let mut col = Vec::new();
        for c in 0..g.c {
            for i in 0..g.k {
                for j in 0..g.k {
                    for u in 0..g.ho {
                        for v in 0..g.wo {
                            let (ih, iw) = (
                                (u * g.stride + i) as isize - g.pad as isize,
                                (v * g.stride + j) as isize - g.pad as isize,
                            );
                            let inside = ih >= 0 && iw >= 0 && (ih as usize) < g.h && (iw as usize) < g.w;
                            col.push(if inside { x[(c * g.h + ih as usize) * g.w + iw as usize] } else { 0.0 });
                        }
                    }
                }
            }
        }
        col
    }

    #[test]
    fn im2col_and_col2im_are_adjoint_and_match_the_definition() {
        for (c, h, w, k, stride, pad) in [
            (2, 5, 7, 3, 1, 1),
            (3, 6, 5, 3, 2, 1),
            (1, 4, 4, 1, 2, 0),
            (2, 7, 6, 3, 2, 0),
            (1, 3, 3, 3, 1, 2),
            (2, 5, 5, 5, 3, 2),
        ] {
            let g = Geometry::new(&[1, c, h, w], &[1, c, k, k], stride, pad).unwrap();
            let x: Vec<f32> = (0..g.image()).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut col = vec![f32::NAN; g.col_rows() * g.pixels_out()];
            g.im2col(&x, &mut col, None);
            assert_eq!(col, im2col_naive(&x, &g), "{g:?}");
            // <col(x), d> = <x, col⁻¹(d)> for any d: col2im is im2col's adjoint.
            let d: Vec<f32> = (0..col.len()).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut back = vec![f32::NAN; g.image()];
            g.col2im(&d, &mut back);
            let lhs: f64 = col.iter().zip(&d).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{g:?}: {lhs} vs {rhs}");
        }
    }
}
