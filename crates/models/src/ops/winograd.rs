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

use rayon::prelude::*;

use super::conv::{per_image, uninit_vec};
use super::gemm::{matmul, Mat};
use super::im2col::Geometry;
use super::tape::Affine;

/// Tiles per GEMM at least: small images are transformed several at a time.
const GROUP_TILES: usize = 128;

/// Whether a convolution runs here: 3x3, stride 1, padding up to 2, and at least 16
/// input and output channels (with fewer, the GEMMs are too thin to gain).
pub(super) fn applies(g: &Geometry) -> bool {
    g.k == 3 && g.stride == 1 && g.pad <= 2 && g.c >= 16 && g.o >= 16
}

/// U[e][o][c] = (G g_oc Gᵀ)[e / 4][e % 4] for weight (O, C, 3, 3).
fn kernel_transform(wt: &[f32], o: usize, c: usize) -> Vec<f32> {
    let plane = o * c;
    let mut u = vec![0f32; 16 * plane];
    // One row of U per output channel, computed in parallel, then placed.
    let rows: Vec<[Vec<f32>; 16]> = (0..o)
        .into_par_iter()
        .map(|oi| {
            let mut out: [Vec<f32>; 16] = std::array::from_fn(|_| vec![0f32; c]);
            for ci in 0..c {
                let k = &wt[(oi * c + ci) * 9..(oi * c + ci + 1) * 9];
                // t = G g (4x3), rows combined.
                let mut t = [[0f32; 3]; 4];
                for j in 0..3 {
                    let (g0, g1, g2) = (k[j], k[3 + j], k[6 + j]);
                    t[0][j] = g0;
                    t[1][j] = 0.5 * (g0 + g1 + g2);
                    t[2][j] = 0.5 * (g0 - g1 + g2);
                    t[3][j] = g2;
                }
                for (xi, r) in t.iter().enumerate() {
                    let cols = [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
                    for (nu, v) in cols.into_iter().enumerate() {
                        out[xi * 4 + nu][ci] = v;
                    }
                }
            }
            out
        })
        .collect();
    for (oi, r) in rows.iter().enumerate() {
        for (e, v) in r.iter().enumerate() {
            u[e * plane + oi * c..e * plane + (oi + 1) * c].copy_from_slice(v);
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
fn input_transform(xi: &[f32], g: &Geometry, pre: Option<&Affine>, v: &mut [f32], ld: usize, t0: usize) {
    let (th, tw) = tiles(g);
    let (h, w, p) = (g.h, g.w, g.pad);
    let pw = 2 * tw + 2;
    let mut rows = [vec![0f32; pw], vec![0f32; pw], vec![0f32; pw], vec![0f32; pw]];
    let mut comb = [vec![0f32; pw], vec![0f32; pw], vec![0f32; pw], vec![0f32; pw]];
    let plane = g.c * ld;
    for c in 0..g.c {
        let img = &xi[c * h * w..(c + 1) * h * w];
        for ty in 0..th {
            for (r, row) in rows.iter_mut().enumerate() {
                row.fill(0.0);
                let ih = (2 * ty + r) as isize - p as isize;
                if ih < 0 || ih >= h as isize {
                    continue;
                }
                let src = &img[ih as usize * w..(ih as usize + 1) * w];
                let dst = &mut row[p..p + w];
                match pre {
                    None => dst.copy_from_slice(src),
                    Some(f) => {
                        let (a, b) = (f.a[c], f.b[c]);
                        dst.iter_mut().zip(src).for_each(|(o, &v)| *o = f.apply(a, b, v));
                    }
                }
            }
            // Bᵀ d: combine the four rows.
            for k in 0..pw {
                let (d0, d1, d2, d3) = (rows[0][k], rows[1][k], rows[2][k], rows[3][k]);
                comb[0][k] = d0 - d2;
                comb[1][k] = d1 + d2;
                comb[2][k] = d2 - d1;
                comb[3][k] = d1 - d3;
            }
            // (Bᵀ d) B: combine columns 2tx..2tx+4 of each combined row.
            let at = c * ld + t0 + ty * tw;
            for (xi_, r) in comb.iter().enumerate() {
                let e = xi_ * 4;
                let (v0, rest) = v.split_at_mut((e + 1) * plane);
                let (v1, rest) = rest.split_at_mut(plane);
                let (v2, v3) = rest.split_at_mut(plane);
                let (o0, o1) = (&mut v0[e * plane + at..e * plane + at + tw], &mut v1[at..at + tw]);
                let (o2, o3) = (&mut v2[at..at + tw], &mut v3[at..at + tw]);
                for tx in 0..tw {
                    let (a0, a1, a2, a3) = (r[2 * tx], r[2 * tx + 1], r[2 * tx + 2], r[2 * tx + 3]);
                    o0[tx] = a0 - a2;
                    o1[tx] = a1 + a2;
                    o2[tx] = a2 - a1;
                    o3[tx] = a1 - a3;
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
    let mut a = [vec![0f32; tw], vec![0f32; tw], vec![0f32; tw], vec![0f32; tw]];
    let mut b = [vec![0f32; tw], vec![0f32; tw], vec![0f32; tw], vec![0f32; tw]];
    for o in 0..g.o {
        let out = &mut y[o * ho * wo..(o + 1) * ho * wo];
        for ty in 0..th {
            let at = o * ld + t0 + ty * tw;
            let row = |e: usize| &m[e * plane + at..e * plane + at + tw];
            // Aᵀ m: a = rows 0+1+2, b = rows 1-2-3, for each column ν.
            for nu in 0..4 {
                let (m0, m1, m2, m3) = (row(nu), row(4 + nu), row(8 + nu), row(12 + nu));
                for tx in 0..tw {
                    a[nu][tx] = m0[tx] + m1[tx] + m2[tx];
                    b[nu][tx] = m1[tx] - m2[tx] - m3[tx];
                }
            }
            for (i, r) in [&a, &b].into_iter().enumerate() {
                let u = 2 * ty + i;
                if u >= ho {
                    continue;
                }
                let dst = &mut out[u * wo..(u + 1) * wo];
                let cols = r[0].iter().zip(&r[1]).zip(r[2].iter().zip(&r[3]));
                for (tx, ((&c0, &c1), (&c2, &c3))) in cols.enumerate() {
                    let v = 2 * tx;
                    dst[v] = c0 + c1 + c2;
                    if v + 1 < wo {
                        dst[v + 1] = c1 - c2 - c3;
                    }
                }
            }
        }
    }
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
