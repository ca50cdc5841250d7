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

    /// How [`Self::stage`] lays the image out.
    fn staging(&self) -> Staging {
        let (s, p, w) = (self.stride, self.pad, self.w);
        let row = w + 2 * p;
        let (mut starts, mut interior) = (Vec::with_capacity(s), Vec::with_capacity(s));
        let mut at = 0;
        for q in 0..s {
            starts.push(at);
            // Padded column q + t s holds image column q + t s - p: the image's columns
            // in phase q start at the first t with q + t s >= p.
            let t0 = p.saturating_sub(q).div_ceil(s);
            let first = q + t0 * s - p;
            if first < w {
                interior.push((at + t0, first));
            }
            at += row.saturating_sub(q).div_ceil(s);
        }
        let plane = (self.h + 2 * p) * row;
        Staging { row, plane, len: self.c * plane, starts, interior }
    }

    /// The image as the gathers read it, into `out` (`l.len` entries): `pre` applied once
    /// per pixel, the zero padding written out, and each padded row split into its
    /// `stride` phases (columns q, q + s, q + 2s, ... stored together). Every row of the
    /// column matrix then reads, for each output row, one contiguous run of `wo`
    /// entries: padded column v s + j is entry j / s + v of phase j % s.
    fn stage(&self, x: &[f32], pre: Option<&Affine>, l: &Staging, out: &mut [f32]) {
        let (s, w) = (self.stride, self.w);
        out.fill(0.0);
        for (c, (src, dst)) in x.chunks_exact(self.h * w).zip(out.chunks_exact_mut(l.plane)).enumerate() {
            let (a, b) = pre.map_or((1.0, 0.0), |f| (f.a[c], f.b[c]));
            for (row, staged) in src.chunks_exact(w).zip(dst.chunks_exact_mut(l.row).skip(self.pad)) {
                for &(at, first) in &l.interior {
                    let runs = staged[at..].iter_mut().zip(row[first..].iter().step_by(s));
                    match pre {
                        Some(f) => runs.for_each(|(o, &v)| *o = f.apply(a, b, v)),
                        None => runs.for_each(|(o, &v)| *o = v),
                    }
                }
            }
        }
    }

    /// Where row (c, i, j) of the column matrix starts reading in the staged image: the
    /// first of its `ho` runs, the others `stride` padded rows apart.
    fn run_start(&self, l: &Staging, r: usize) -> usize {
        let k = self.k;
        let (c, i, j) = (r / (k * k), r / k % k, r % k);
        c * l.plane + i * l.row + l.starts[j % self.stride] + j / self.stride
    }

    /// col(pre(x_n)) into the first `pixels_out` columns of `col`, a matrix whose rows
    /// are `ld` entries apart; every entry of those columns is written. `pre`, when
    /// given, maps each pixel through its channel's affine + ReLU before it is copied;
    /// the zero padding stays zero (it pads the transformed image).
    ///
    /// Row (c, i, j) of the matrix is channel c shifted by (i - p, j - p) and sampled
    /// every `stride` pixels. The image is staged once ([`Self::stage`]: `pre` applied
    /// per pixel rather than per column entry, padding and strides laid out so that
    /// each output row is one contiguous copy without bounds cases).
    pub(super) fn im2col(&self, x: &[f32], col: &mut [f32], pre: Option<&Affine>, ld: usize) {
        let (wo, jump) = (self.wo, self.stride * (self.w + 2 * self.pad));
        let l = self.staging();
        STAGED.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(l.len, 0.0);
            self.stage(x, pre, &l, &mut buf);
            for r in 0..self.col_rows() {
                let at = self.run_start(&l, r);
                let dst = &mut col[r * ld..r * ld + self.pixels_out()];
                for (u, out) in dst.chunks_exact_mut(wo).enumerate() {
                    let from = at + u * jump;
                    copy_run(out, &buf[from..from + wo]);
                }
            }
        });
    }

    /// dx_n = col⁻¹(dcol): scatter-add of the first `pixels_out` columns of the column
    /// matrix (rows `ld` entries apart), entry by entry the adjoint of [`Self::im2col`]:
    /// the runs are added onto a zeroed staged image, whose interior is then written
    /// back to `dx` in image order (the padding's share is dropped).
    pub(super) fn col2im(&self, dcol: &[f32], dx: &mut [f32], ld: usize) {
        let (s, w, wo, jump) = (self.stride, self.w, self.wo, self.stride * (self.w + 2 * self.pad));
        let l = self.staging();
        STAGED.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.resize(l.len, 0.0);
            buf.fill(0.0);
            for r in 0..self.col_rows() {
                let at = self.run_start(&l, r);
                let src = &dcol[r * ld..r * ld + self.pixels_out()];
                for (u, d) in src.chunks_exact(wo).enumerate() {
                    let to = at + u * jump;
                    add_run(&mut buf[to..to + wo], d);
                }
            }
            for (staged, img) in buf.chunks_exact(l.plane).zip(dx.chunks_exact_mut(self.h * w)) {
                for (srow, row) in staged.chunks_exact(l.row).skip(self.pad).zip(img.chunks_exact_mut(w)) {
                    for &(at, first) in &l.interior {
                        row[first..].iter_mut().step_by(s).zip(&srow[at..]).for_each(|(o, &v)| *o = v);
                    }
                }
            }
        });
    }
}

/// The layout of a staged image ([`Geometry::stage`]), computed once per call.
struct Staging {
    /// Entries of a padded row, W + 2p.
    row: usize,
    /// Entries of a padded channel, (H + 2p) (W + 2p).
    plane: usize,
    /// Entries of the staged image, C (H + 2p) (W + 2p).
    len: usize,
    /// Where each of the `stride` phases starts within a padded row.
    starts: Vec<usize>,
    /// For each phase that holds image columns: where, within the padded row, its first
    /// image column sits, and which image column that is (the rest follow `stride` apart).
    interior: Vec<(usize, usize)>,
}

/// dst = src for the short runs of im2col (an output row, often 7-28 entries): an
/// element loop the compiler keeps inline, not a call to memcpy.
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o = v;
    }
}

/// dst += src, the adjoint of [`copy_run`].
#[inline(always)]
fn add_run(dst: &mut [f32], src: &[f32]) {
    for (o, &v) in dst.iter_mut().zip(src) {
        *o += v;
    }
}

thread_local! {
    /// Scratch image of [`Geometry::im2col`] / [`Geometry::col2im`] (one per thread).
    static STAGED: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
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
            (3, 8, 9, 3, 2, 1),
            (2, 2, 2, 3, 3, 1),
            (1, 7, 7, 3, 4, 2),
        ] {
            let g = Geometry::new(&[1, c, h, w], &[1, c, k, k], stride, pad).unwrap();
            let x: Vec<f32> = (0..g.image()).map(|i| (i as f32 * 0.37).sin()).collect();
            let mut col = vec![f32::NAN; g.col_rows() * g.pixels_out()];
            g.im2col(&x, &mut col, None, g.pixels_out());
            assert_eq!(col, im2col_naive(&x, &g), "{g:?}");
            // With a BatchNorm-ReLU in front: the map applied to every pixel first, the
            // padding still zero.
            for relu in [false, true] {
                let f = Affine {
                    a: (0..c).map(|i| 0.5 + i as f32).collect(),
                    b: (0..c).map(|i| 0.25 - 0.5 * i as f32).collect(),
                    relu,
                };
                let mapped: Vec<f32> =
                    x.iter().enumerate().map(|(i, &v)| f.apply(f.a[i / (h * w)], f.b[i / (h * w)], v)).collect();
                let mut col = vec![f32::NAN; g.col_rows() * g.pixels_out()];
                g.im2col(&x, &mut col, Some(&f), g.pixels_out());
                assert_eq!(col, im2col_naive(&mapped, &g), "{g:?} relu {relu}");
            }
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
