//! The column matrix of a convolution (im2col) and its adjoint (col2im), and the
//! shapes they are built from.
//!
//! For x (N, C, H, W), weight (O, C, k, k), stride s and zero padding p, the output is
//! (N, O, Ho, Wo) with Ho = (H + 2p - k) / s + 1 (likewise Wo), and the column matrix of
//! image n is the (C k k, Ho Wo) matrix of its receptive fields:
//! `col[(c, i, j), (u, v)] = x_n[c, u s - p + i, v s - p + j]`, 0 off the image.

use candle_core::Result;

use super::affine::Affine;
use super::op_err;

/// Columns a GEMM should have at least (see [`Geometry::group`]). Measured with
/// `cargo xtask bench` on a 2-core AVX-512 machine: 128 speeds up ResNet-18's attack
/// step by 10-15% (its 8x8 and 4x4 stages); 256 made the small CNN's 7x7 layer (5
/// images, 245 columns) 30% slower.
const GROUP_COLS: usize = 128;

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

    pub(super) fn image(&self) -> usize {
        self.c * self.h * self.w
    }
    pub(super) fn out_image(&self) -> usize {
        self.o * self.ho * self.wo
    }
    pub(super) fn col_rows(&self) -> usize {
        self.c * self.k * self.k
    }
    pub(super) fn pixels_out(&self) -> usize {
        self.ho * self.wo
    }
    pub(super) fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pad == 0
    }
    pub(super) fn col_len(&self) -> usize {
        if self.pointwise() {
            0
        } else {
            self.col_rows() * self.pixels_out()
        }
    }

    /// Images per GEMM: the column matrices of images with small outputs are laid side
    /// by side so that each GEMM is at least [`GROUP_COLS`] wide (a 4x4 output alone
    /// would give GEMMs 16 columns wide, far from the kernels' speed).
    pub(super) fn group(&self) -> usize {
        (GROUP_COLS / self.pixels_out().max(1)).clamp(1, self.n.max(1))
    }

    /// Output columns `v` whose input column `v s + j - p` lies inside the image.
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if j >= p { 0 } else { (p - j).div_ceil(s) };
        let hi = if self.w + p > j { ((self.w + p - j - 1) / s + 1).min(self.wo) } else { 0 };
        (lo, hi.max(lo))
    }

    /// col(pre(x_n)) into the first `pixels_out` columns of `col`, a matrix whose rows
    /// are `ld` entries apart; every entry of those columns is written. `pre`, when
    /// given, maps each pixel through its channel's affine + ReLU before it is copied;
    /// the zero padding stays zero (it pads the transformed image).
    ///
    /// Row (c, i, j) of the matrix is channel c shifted by (i - p, j - p) and sampled
    /// every `stride` pixels: output row u reads input row u s + i - p, output columns
    /// lo..hi read input columns v s + j - p (zeros outside).
    pub(super) fn im2col(&self, x: &[f32], col: &mut [f32], pre: Option<&Affine>, ld: usize) {
        let (k, s, p, w, h) = (self.k, self.stride, self.pad, self.w, self.h);
        let wo = self.wo;
        for r in 0..self.col_rows() {
            let dst = &mut col[r * ld..r * ld + self.pixels_out()];
            let (c, i, j) = (r / (k * k), r / k % k, r % k);
            let img = &x[c * h * w..(c + 1) * h * w];
            let (lo, hi) = self.valid_cols(j);
            let (a, b) = pre.map_or((1.0, 0.0), |f| (f.a[c], f.b[c]));
            for (u, out) in dst.chunks_exact_mut(wo).enumerate() {
                let ih = (u * s + i) as isize - p as isize;
                if ih < 0 || ih >= h as isize || lo == hi {
                    out.fill(0.0);
                    continue;
                }
                let row = &img[ih as usize * w..(ih as usize + 1) * w];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                let first = lo * s + j - p;
                let out = &mut out[lo..hi];
                match (s, pre) {
                    (1, None) => out.copy_from_slice(&row[first..first + out.len()]),
                    (1, Some(f)) => {
                        let src = &row[first..first + out.len()];
                        out.iter_mut().zip(src).for_each(|(o, &v)| *o = f.apply(a, b, v));
                    }
                    (_, None) => out.iter_mut().enumerate().for_each(|(t, o)| *o = row[first + t * s]),
                    (_, Some(f)) => {
                        out.iter_mut().enumerate().for_each(|(t, o)| *o = f.apply(a, b, row[first + t * s]))
                    }
                }
            }
        }
    }

    /// dx_n = col⁻¹(dcol): scatter-add of the first `pixels_out` columns of the column
    /// matrix (rows `ld` entries apart) onto a zeroed image, entry by entry the adjoint
    /// of [`Self::im2col`].
    pub(super) fn col2im(&self, dcol: &[f32], dx: &mut [f32], ld: usize) {
        let (k, s, p, w, h) = (self.k, self.stride, self.pad, self.w, self.h);
        let wo = self.wo;
        dx.fill(0.0);
        for r in 0..self.col_rows() {
            let src = &dcol[r * ld..r * ld + self.pixels_out()];
            let (c, i, j) = (r / (k * k), r / k % k, r % k);
            let img = &mut dx[c * h * w..(c + 1) * h * w];
            let (lo, hi) = self.valid_cols(j);
            if lo == hi {
                continue;
            }
            for (u, d) in src.chunks_exact(wo).enumerate() {
                let ih = (u * s + i) as isize - p as isize;
                if ih < 0 || ih >= h as isize {
                    continue;
                }
                let row = &mut img[ih as usize * w..(ih as usize + 1) * w];
                let first = lo * s + j - p;
                let d = &d[lo..hi];
                if s == 1 {
                    row[first..first + d.len()].iter_mut().zip(d).for_each(|(o, &v)| *o += v);
                } else {
                    d.iter().enumerate().for_each(|(t, &v)| row[first + t * s] += v);
                }
            }
        }
    }
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
            g.im2col(&x, &mut col, None, g.pixels_out());
            assert_eq!(col, im2col_naive(&x, &g), "{g:?}");
            // <col(x), d> = <x, col⁻¹(d)> for any d: col2im is im2col's adjoint.
            let d: Vec<f32> = (0..col.len()).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut back = vec![f32::NAN; g.image()];
            g.col2im(&d, &mut back, g.pixels_out());
            let lhs: f64 = col.iter().zip(&d).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
            assert!((lhs - rhs).abs() < 1e-4 * (1.0 + lhs.abs()), "{g:?}: {lhs} vs {rhs}");
        }
    }
}
