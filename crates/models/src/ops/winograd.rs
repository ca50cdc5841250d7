//! 3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) (Lavin & Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016): 16 multiplications per
//! 2x2 output tile and channel pair instead of 36.
//!
//! With d a 4x4 input patch (zero-padded image, tile origin (2 ty - p, 2 tx - p)), g a
//! 3x3 kernel and
//!
//! ```text
//!       | 1  0 -1  0 |        | 1    0    0  |
//! Bᵀ =  | 0  1  1  0 |   G =  | 1/2  1/2  1/2 |   Aᵀ = | 1  1  1  0 |
//!       | 0 -1  1  0 |        | 1/2 -1/2  1/2 |        | 0  1 -1 -1 |
//!       | 0  1  0 -1 |        | 0    0    1  |
//! ```
//!
//! the output tile is Y = Aᵀ [Σ_c (G g_oc Gᵀ) ⊙ (Bᵀ d_c B)] A: the sum over input
//! channels is 16 GEMMs, one per position e of the 4x4 transformed tile,
//! M_e (O, T) = U_e (O, C) · V_e (C, T) over T tiles. These GEMMs do 2.25x fewer
//! multiply-adds than im2col's; the transforms are additions (and halvings in G).
//!
//! The weight gradient is the same identity read backwards: for L = Σ_t <dY_t, Y_t>,
//! ∂L/∂U_oc = Σ_t (A dY_ot Aᵀ) ⊙ V_ct (16 GEMMs over the tiles, S_e (C, O) = V_e ·
//! DY_eᵀ) and ∂L/∂g_oc = Gᵀ (∂L/∂U_oc) G; output positions past the image's edge
//! have dY = 0.

use rayon::prelude::*;

use super::affine::Affine;
use super::gemm::{matmul, Mat};
use super::im2col::Geometry;
use super::parallel::{per_image, sum_over_shares, uninit_vec};

/// Tiles per GEMM at least: small images are transformed several at a time.
const GROUP_TILES: usize = 128;

/// Whether a convolution runs here: 3x3, stride 1, padding up to 2, and at least 16
/// input and output channels (with fewer, the GEMMs are too thin to gain).
pub(super) fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad <= 2 && g.c >= 16 && g.o >= 16
}

/// (Kernel, channel) pairs transformed together (a block of rows of every plane).
const PAIRS: usize = 64;

/// U[e][o][c] = (G g_oc Gᵀ)[e / 4][e % 4] for weight (O, C, 3, 3), with
/// G r = (r0, (r0 + r1 + r2) / 2, (r0 - r1 + r2) / 2, r2) on rows, then on columns.
/// Computed for blocks of [`PAIRS`] consecutive (o, c) pairs at a time, each of the 9
/// taps and 16 outputs a contiguous run of the block (vectorised), then placed.
fn kernel_transform(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let n = o * c;
    let g4 = |r: [f32; 3]| [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(PAIRS))
        .into_par_iter()
        .map(|bi| {
            let (start, len) = (bi * PAIRS, PAIRS.min(n - bi * PAIRS));
            // taps[k][j] = weight tap k of pair start + j.
            let mut taps = [[0f32; PAIRS]; 9];
            for (j, w) in wt[start * 9..(start + len) * 9].chunks_exact(9).enumerate() {
                for (k, &v) in w.iter().enumerate() {
                    taps[k][j] = v;
                }
            }
            // t[xi][col] = (G g)[xi][col]: rows combined, one column (tap j) at a time.
            let mut t = [[[0f32; PAIRS]; 3]; 4];
            for col in 0..3 {
                for j in 0..PAIRS {
                    let r = g4([taps[col][j], taps[3 + col][j], taps[6 + col][j]]);
                    for (xi, v) in r.into_iter().enumerate() {
                        t[xi][col][j] = v;
                    }
                }
            }
            // (G g) Gᵀ: columns combined, row xi giving outputs e = 4 xi + ν.
            let mut out = vec![0f32; 16 * PAIRS];
            for (xi, row) in t.iter().enumerate() {
                for j in 0..PAIRS {
                    let r = g4([row[0][j], row[1][j], row[2][j]]);
                    for (nu, v) in r.into_iter().enumerate() {
                        out[(xi * 4 + nu) * PAIRS + j] = v;
                    }
                }
            }
            out
        })
        .collect();
    let mut u = vec![0f32; 16 * n];
    for (bi, block) in blocks.iter().enumerate() {
        let (start, len) = (bi * PAIRS, PAIRS.min(n - bi * PAIRS));
        for e in 0..16 {
            u[e * n + start..e * n + start + len].copy_from_slice(&block[e * PAIRS..e * PAIRS + len]);
        }
    }
    u
}

/// Tiles of one image: (rows, columns) of 2x2 output tiles.
fn tiles(g: &Geometry) -> (usize, usize) {
    (g.ho.div_ceil(2), g.wo.div_ceil(2))
}

/// V[e][c][t0 + t] = (Bᵀ d B)[e / 4][e % 4] for the tiles t of one image `xi` (C, H, W),
/// after `pre`; `v` holds 16 planes of (C, ld).
///
/// Each zero-padded input row is kept as its even and odd columns, so that the 4x4
/// patches of consecutive tiles (2 columns apart) are contiguous runs:
/// patch columns (2tx, 2tx+1, 2tx+2, 2tx+3) = (even[tx], odd[tx], even[tx+1], odd[tx+1]).
fn input_transform(xi: &[f32], g: &Geometry, pre: Option<&Affine>, v: &mut [f32], ld: usize, t0: usize) {
    let (th, tw) = tiles(g);
    let (h, w, p) = (g.h, g.w, g.pad);
    let half = tw + 1;
    // rows[r] = [even columns | odd columns] of padded input row r of the tile row.
    let mut rows: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; 2 * half]);
    let mut comb: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; 2 * half]);
    let mut padded = vec![0f32; 2 * half];
    let plane = g.c * ld;
    for c in 0..g.c {
        let img = &xi[c * h * w..(c + 1) * h * w];
        let (a, b) = pre.map_or((1.0, 0.0), |f| (f.a[c], f.b[c]));
        for ty in 0..th {
            for (r, row) in rows.iter_mut().enumerate() {
                let ih = (2 * ty + r) as isize - p as isize;
                if ih < 0 || ih >= h as isize {
                    row.fill(0.0);
                    continue;
                }
                let src = &img[ih as usize * w..(ih as usize + 1) * w];
                // The zero-padded row (image columns at p..p + w), then split.
                let dst = &mut padded[p..p + w];
                match pre {
                    None => dst.copy_from_slice(src),
                    Some(f) => dst.iter_mut().zip(src).for_each(|(o, &v)| *o = f.apply(a, b, v)),
                }
                let (even, odd) = row.split_at_mut(half);
                for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(padded.chunks_exact(2)) {
                    *e = pair[0];
                    *o = pair[1];
                }
            }
            // Bᵀ d: combine the four rows.
            let [c0, c1, c2, c3] = &mut comb;
            let [d0, d1, d2, d3] = &rows;
            for k in 0..2 * half {
                c0[k] = d0[k] - d2[k];
                c1[k] = d1[k] + d2[k];
                c2[k] = d2[k] - d1[k];
                c3[k] = d1[k] - d3[k];
            }
            // (Bᵀ d) B: combine the patch columns of each combined row.
            let at = c * ld + t0 + ty * tw;
            for (xi_, r) in comb.iter().enumerate() {
                let e = xi_ * 4;
                let (even, odd) = r.split_at(half);
                let (v0, rest) = v.split_at_mut((e + 1) * plane);
                let (v1, rest) = rest.split_at_mut(plane);
                let (v2, v3) = rest.split_at_mut(plane);
                let (o0, o1) = (&mut v0[e * plane + at..e * plane + at + tw], &mut v1[at..at + tw]);
                let (o2, o3) = (&mut v2[at..at + tw], &mut v3[at..at + tw]);
                let (e0, e1, q0, q1) = (&even[..tw], &even[1..=tw], &odd[..tw], &odd[1..=tw]);
                for tx in 0..tw {
                    o0[tx] = e0[tx] - e1[tx];
                    o1[tx] = q0[tx] + e1[tx];
                    o2[tx] = e1[tx] - q0[tx];
                    o3[tx] = q0[tx] - q1[tx];
                }
            }
        }
    }
}

/// y (O, Ho, Wo) of one image from M[e][o][t0 + t] (16 planes of (O, ld)): Aᵀ m A per
/// tile, cut at the image's edge.
fn output_transform(m: &[f32], g: &Geometry, ld: usize, t0: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g);
    let (ho, wo) = (g.ho, g.wo);
    let plane = g.o * ld;
    let mut a: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw]);
    let mut b: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw]);
    let mut pair = vec![0f32; 2 * tw];
    for o in 0..g.o {
        let out = &mut y[o * ho * wo..(o + 1) * ho * wo];
        for ty in 0..th {
            let at = o * ld + t0 + ty * tw;
            let row = |e: usize| &m[e * plane + at..e * plane + at + tw];
            // Aᵀ m: a = rows 0+1+2, b = rows 1-2-3, for each column ν.
            for nu in 0..4 {
                let (m0, m1, m2, m3) = (row(nu), row(4 + nu), row(8 + nu), row(12 + nu));
                let (an, bn) = (&mut a[nu], &mut b[nu]);
                for tx in 0..tw {
                    an[tx] = m0[tx] + m1[tx] + m2[tx];
                    bn[tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            // (Aᵀ m) A: columns 2tx and 2tx+1 of output row 2ty + i.
            for (i, r) in [&a, &b].into_iter().enumerate() {
                let u = 2 * ty + i;
                if u >= ho {
                    continue;
                }
                let [r0, r1, r2, r3] = r;
                for (tx, p) in pair.chunks_exact_mut(2).enumerate() {
                    p[0] = r0[tx] + r1[tx] + r2[tx];
                    p[1] = r1[tx] - r2[tx] - r3[tx];
                }
                out[u * wo..(u + 1) * wo].copy_from_slice(&pair[..wo]);
            }
        }
    }
}

/// DY[e][o][t0 + t] = (A dy_t Aᵀ)[e / 4][e % 4] for the 2x2 output-gradient tiles t of
/// one image `dyi` (O, Ho, Wo), zero past the edge; `d` holds 16 planes of (O, ld).
fn grad_transform(dyi: &[f32], g: &Geometry, d: &mut [f32], ld: usize, t0: usize) {
    let (th, tw) = tiles(g);
    let (ho, wo) = (g.ho, g.wo);
    let plane = g.o * ld;
    // Even and odd columns of the tile row's two output rows: (e0, q0) and (e1, q1).
    let mut rows: [Vec<f32>; 4] = std::array::from_fn(|_| vec![0f32; tw]);
    let (mut l, mut r) = (vec![0f32; tw], vec![0f32; tw]);
    for o in 0..g.o {
        let img = &dyi[o * ho * wo..(o + 1) * ho * wo];
        for ty in 0..th {
            for (i, pair) in rows.chunks_exact_mut(2).enumerate() {
                let [even, odd] = pair else { continue };
                even.fill(0.0);
                odd.fill(0.0);
                let u = 2 * ty + i;
                if u >= ho {
                    continue;
                }
                for (v, &val) in img[u * wo..(u + 1) * wo].iter().enumerate() {
                    if v.is_multiple_of(2) {
                        even[v / 2] = val;
                    } else {
                        odd[v / 2] = val;
                    }
                }
            }
            // A r for a 2-vector r = (r0, r1) is (r0, r0 + r1, r0 - r1, -r1): on the tile's
            // two rows (giving row ξ as a left/right pair), then on the two columns of each.
            let [e0, q0, e1, q1] = &rows;
            let at = o * ld + t0 + ty * tw;
            for xi in 0..4 {
                for k in 0..tw {
                    (l[k], r[k]) = match xi {
                        0 => (e0[k], q0[k]),
                        1 => (e0[k] + e1[k], q0[k] + q1[k]),
                        2 => (e0[k] - e1[k], q0[k] - q1[k]),
                        _ => (-e1[k], -q1[k]),
                    };
                }
                let row = |nu: usize| (xi * 4 + nu) * plane + at;
                d[row(0)..row(0) + tw].copy_from_slice(&l);
                d[row(1)..row(1) + tw].iter_mut().zip(l.iter().zip(&r)).for_each(|(o, (a, b))| *o = a + b);
                d[row(2)..row(2) + tw].iter_mut().zip(l.iter().zip(&r)).for_each(|(o, (a, b))| *o = a - b);
                d[row(3)..row(3) + tw].iter_mut().zip(&r).for_each(|(o, b)| *o = -b);
            }
        }
    }
}

/// dW (O, C, 3, 3) of a convolution where [`applies`] holds, from x and dy. The batch is
/// split into a fixed run of images per thread, summed in order: reproducible bit for
/// bit for a given number of threads.
pub(super) fn weight_grad(x: &[f32], dy: &[f32], g: &Geometry) -> Vec<f32> {
    let (th, tw) = tiles(g);
    let per = th * tw;
    let gs = (GROUP_TILES / per.max(1)).clamp(1, g.n.max(1));
    let cap = gs * per;
    let len = 16 * g.c * g.o;
    // S[e] (C, O), accumulated over the images of one share.
    let s = sum_over_shares(g.n, len, |images, gemm_threads| {
        let mut acc = vec![0f32; len];
        let mut buf = uninit_vec(16 * (g.c + g.o) * cap);
        for first in images.clone().step_by(gs) {
            let count = gs.min(images.end - first);
            let ld = count * per;
            let (v, d) = buf.split_at_mut(16 * g.c * cap);
            let (v, d) = (&mut v[..16 * g.c * ld], &mut d[..16 * g.o * ld]);
            for j in 0..count {
                let i = first + j;
                input_transform(&x[i * g.image()..(i + 1) * g.image()], g, None, v, ld, j * per);
                grad_transform(&dy[i * g.out_image()..(i + 1) * g.out_image()], g, d, ld, j * per);
            }
            for e in 0..16 {
                let ve = Mat::rows(&v[e * g.c * ld..(e + 1) * g.c * ld], g.c, ld);
                let de = Mat::rows(&d[e * g.o * ld..(e + 1) * g.o * ld], g.o, ld);
                matmul(&mut acc[e * g.c * g.o..(e + 1) * g.c * g.o], ve, de.t(), true, gemm_threads);
            }
        }
        acc
    });
    // dW[o, c] = Gᵀ S[., c, o] G with Gᵀ r = (r0 + (r1 + r2)/2, (r1 - r2)/2, (r1 + r2)/2 + r3).
    let plane = g.c * g.o;
    let gt = |r: [f32; 4]| [r[0] + 0.5 * (r[1] + r[2]), 0.5 * (r[1] - r[2]), 0.5 * (r[1] + r[2]) + r[3]];
    let mut dw = vec![0f32; g.o * g.c * 9];
    dw.par_chunks_mut(g.c * 9).enumerate().for_each(|(o, row)| {
        for (c, k) in row.chunks_exact_mut(9).enumerate() {
            let m = |e: usize| s[e * plane + c * g.o + o];
            // S G: Gᵀ on each row ξ of S (over ν); then Gᵀ on each column j of the result.
            let t: [[f32; 3]; 4] =
                std::array::from_fn(|xi| gt([m(xi * 4), m(xi * 4 + 1), m(xi * 4 + 2), m(xi * 4 + 3)]));
            for j in 0..3 {
                let col = gt([t[0][j], t[1][j], t[2][j], t[3][j]]);
                for (i, v) in col.into_iter().enumerate() {
                    k[i * 3 + j] = v;
                }
            }
        }
    });
    dw
}

/// y = conv(pre(x), W) for a geometry where [`applies`] holds.
pub(super) fn forward(x: &[f32], wt: &[f32], g: &Geometry, pre: Option<&Affine>) -> Vec<f32> {
    let (th, tw) = tiles(g);
    let per = th * tw;
    let gs = (GROUP_TILES / per.max(1)).clamp(1, g.n.max(1));
    let cap = gs * per;
    let u = kernel_transform(wt, g.o, g.c);
    let mut out = uninit_vec(g.n * g.out_image());
    per_image(&mut out, gs * g.out_image(), 16 * (g.c + g.o) * cap, |grp, y, buf, threads| {
        let count = y.len() / g.out_image();
        let ld = count * per;
        let (v, m) = buf.split_at_mut(16 * g.c * cap);
        let (v, m) = (&mut v[..16 * g.c * ld], &mut m[..16 * g.o * ld]);
        for j in 0..count {
            let i = grp * gs + j;
            input_transform(&x[i * g.image()..(i + 1) * g.image()], g, pre, v, ld, j * per);
        }
        for e in 0..16 {
            let ue = Mat::rows(&u[e * g.o * g.c..(e + 1) * g.o * g.c], g.o, g.c);
            let ve = Mat::rows(&v[e * g.c * ld..(e + 1) * g.c * ld], g.c, ld);
            matmul(&mut m[e * g.o * ld..(e + 1) * g.o * ld], ue, ve, false, threads);
        }
        for (j, yi) in y.chunks_exact_mut(g.out_image()).enumerate() {
            output_transform(m, g, ld, j * per, yi);
        }
    });
    out
}
