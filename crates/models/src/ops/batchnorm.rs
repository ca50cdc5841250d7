//! BatchNorm (+ ReLU) in one pass over the data, forward and backward.
//!
//! x is (N, C, S...) with S the product of the trailing dims (1 for (N, C)); per
//! channel c over its m = N·S entries:
//!
//! - train: mean μ_c, biased variance σ²_c, r_c = 1/√(σ²_c + ε), x̂ = (x - μ_c) r_c,
//!   y = γ_c x̂ + β_c; backward (with g = dy, masked by y > 0 after a fused ReLU):
//!   dβ_c = Σ g, dγ_c = Σ g x̂, dx = γ_c r_c / m · (m g - Σ g - x̂ Σ g x̂)
//!   (the mean and variance depend on x);
//! - eval: y = a_c x + b_c with a_c = γ_c / √(running_var_c + ε),
//!   b_c = β_c - running_mean_c a_c (constants); backward dx = a_c g.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{f32_slice, op_err, with_f32};

/// (N, C, S) sizes of a tensor of rank >= 2.
pub(super) fn ncs(dims: &[usize]) -> Result<(usize, usize, usize)> {
    match dims {
        [n, c, rest @ ..] => Ok((*n, *c, rest.iter().product())),
        _ => Err(op_err(format!("batch norm: expected (N, C, ...), got {dims:?}"))),
    }
}

/// The N rows of S entries of channel `ch`.
fn channel_rows(x: &[f32], (n, c, s): (usize, usize, usize), ch: usize) -> impl Iterator<Item = &[f32]> {
    (0..n).map(move |i| &x[(i * c + ch) * s..(i * c + ch + 1) * s])
}

/// Per-channel mean and biased variance of a batch, in f64 accumulation.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchStats {
    /// Mean per channel.
    pub mean: Vec<f32>,
    /// Biased variance per channel (divided by m = N·S).
    pub var: Vec<f32>,
    /// Entries per channel, m.
    pub count: usize,
}

struct StatsOp;

impl CustomOp1 for StatsOp {
    fn name(&self) -> &'static str {
        "robal-batch-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (mean, var) = channel_stats(f32_slice(s, l)?, ncs(l.dims())?);
        let c = mean.len();
        Ok((CpuStorage::F32(mean.into_iter().chain(var).collect()), Shape::from((2, c))))
    }
}

/// Per-channel mean and biased variance of x with sizes (N, C, S): per row in f32 with
/// eight lanes (vectorised), across rows in f64.
pub(super) fn channel_stats(x: &[f32], dims: (usize, usize, usize)) -> (Vec<f32>, Vec<f32>) {
    let m = (dims.0 * dims.2).max(1) as f64;
    (0..dims.1)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = channel_rows(x, dims, ch).map(|r| lane_sum(r, |v| v) as f64).sum();
            let mean = sum / m;
            let mu = mean as f32;
            let sq: f64 = channel_rows(x, dims, ch).map(|r| lane_sum(r, |v| (v - mu) * (v - mu)) as f64).sum();
            (mean as f32, (sq / m) as f32)
        })
        .unzip()
}

/// Mean and biased variance per channel of `x` (N, C, ...), f32 on the CPU.
pub fn batch_stats(x: &Tensor) -> Result<BatchStats> {
    let dims = ncs(x.dims())?;
    let v = x.contiguous()?.apply_op1_no_bwd(&StatsOp)?.to_vec2::<f32>()?;
    Ok(BatchStats { mean: v[0].clone(), var: v[1].clone(), count: dims.0 * dims.2 })
}

/// y = relu?(x a_c + b_c) for every entry of channel c.
pub(super) fn affine(x: &[f32], dims: (usize, usize, usize), a: &[f32], b: &[f32], relu: bool) -> Vec<f32> {
    let (_, c, s) = dims;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(s.max(1)).zip(x.par_chunks(s.max(1))).enumerate().for_each(|(row, (o, xi))| {
        let (a, b) = (a[row % c], b[row % c]);
        if relu {
            o.iter_mut().zip(xi).for_each(|(o, &x)| *o = (x * a + b).max(0.0));
        } else {
            o.iter_mut().zip(xi).for_each(|(o, &x)| *o = x * a + b);
        }
    });
    out
}

/// r_c = 1/√(σ²_c + ε), computed in f64.
pub(super) fn rstd(var: &[f32], eps: f64) -> Vec<f32> {
    var.iter().map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32).collect()
}

/// The affine map of a training-mode BatchNorm: a_c = γ_c r_c, b_c = β_c - μ_c a_c.
pub(super) fn train_affine(gamma: &[f32], beta: &[f32], mean: &[f32], rstd: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let a: Vec<f32> = gamma.iter().zip(rstd).map(|(g, r)| g * r).collect();
    let b = beta.iter().zip(mean).zip(&a).map(|((b, m), a)| b - m * a).collect();
    (a, b)
}

/// The backward pass of y = relu?(a_c x + b_c) with constant a, b, in place on the
/// gradient g (sizes (N, C, S)): g <- a_c [y > 0] g (a_c g without the ReLU; y is
/// then not read).
pub(super) fn affine_backward(g: &mut [f32], y: &[f32], (_, c, s): (usize, usize, usize), a: &[f32], relu: bool) {
    let s = s.max(1);
    g.par_chunks_mut(s).enumerate().for_each(|(row, gr)| {
        let a = a[row % c];
        if relu {
            let yr = &y[row * s..(row + 1) * s];
            gr.iter_mut().zip(yr).for_each(|(g, &y)| *g = if y > 0.0 { a * *g } else { 0.0 });
        } else {
            gr.iter_mut().for_each(|g| *g *= a);
        }
    });
}

/// Training-mode BatchNorm of (x, γ, β) with the batch's statistics.
struct TrainOp {
    mean: Vec<f32>,
    rstd: Vec<f32>,
    relu: bool,
}

impl CustomOp3 for TrainOp {
    fn name(&self) -> &'static str {
        "robal-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, gamma, beta) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let dims = ncs(l1.dims())?;
        if gamma.len() != dims.1 || beta.len() != dims.1 || self.mean.len() != dims.1 {
            return Err(op_err(format!("batch norm: {} channels but {} weights", dims.1, gamma.len())));
        }
        let (a, b) = train_affine(gamma, beta, &self.mean, &self.rstd);
        Ok((CpuStorage::F32(affine(x, dims, &a, &b, self.relu)), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = ncs(x.dims())?;
        let gam = gamma.to_vec1::<f32>()?;
        let (dx, sums) = with_f32(x, |xs| {
            with_f32(y, |ys| {
                with_f32(dy, |dys| {
                    let grad = TrainGrad { mean: &self.mean, rstd: &self.rstd, gamma: &gam, relu: self.relu };
                    Ok(grad.backward(xs, ys, dys, dims, x.track_op()))
                })
            })
        })?;
        let dx = dx.map(|v| Tensor::from_vec(v, x.shape(), x.device())).transpose()?;
        let per_channel = |v: Vec<f32>| Tensor::from_vec(v, dims.1, x.device());
        let dgamma = if gamma.track_op() { Some(per_channel(sums.iter().map(|s| s.1).collect())?) } else { None };
        let dbeta = if beta.track_op() { Some(per_channel(sums.iter().map(|s| s.0).collect())?) } else { None };
        Ok((dx, dgamma, dbeta))
    }
}

/// The backward pass of a training-mode BatchNorm (+ ReLU) given its statistics and γ.
pub(super) struct TrainGrad<'a> {
    pub mean: &'a [f32],
    pub rstd: &'a [f32],
    pub gamma: &'a [f32],
    pub relu: bool,
}

impl TrainGrad<'_> {
    /// (dx when `want_dx`, per channel (Σ g, Σ g x̂) = (dβ, dγ)) from x, y and dy with
    /// sizes (N, C, S); g is dy through the fused ReLU.
    pub(super) fn backward(
        &self,
        xs: &[f32],
        ys: &[f32],
        dys: &[f32],
        (n, c, s): (usize, usize, usize),
        want_dx: bool,
    ) -> (Option<Vec<f32>>, Vec<(f32, f32)>) {
        let m = (n * s) as f32;
        let relu = self.relu;
        let sums: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mu, r) = (self.mean[ch], self.rstd[ch]);
                let (mut sg, mut sgx) = (0f64, 0f64);
                for row in 0..n {
                    let at = (row * c + ch) * s..(row * c + ch + 1) * s;
                    let (a, b) = grad_sums(&xs[at.clone()], &ys[at.clone()], &dys[at], mu, relu);
                    sg += a as f64;
                    sgx += (b * r) as f64;
                }
                (sg as f32, sgx as f32)
            })
            .collect();
        if !want_dx {
            return (None, sums);
        }
        let mut dx = vec![0f32; xs.len()];
        dx.par_chunks_mut(s.max(1)).enumerate().for_each(|(row, o)| {
            let ch = row % c;
            let (mu, r, (sg, sgx)) = (self.mean[ch], self.rstd[ch], sums[ch]);
            // dx = k (m g - Σg - x̂ Σgx̂) = k m g - k Σg - k r Σgx̂ (x - μ).
            let (k, kr) = (self.gamma[ch] * r / m, self.gamma[ch] * r / m * r * sgx);
            let (km, base) = (k * m, k * sg);
            let at = row * s..(row + 1) * s;
            for ((o, (&xv, &yv)), &dv) in o.iter_mut().zip(xs[at.clone()].iter().zip(&ys[at.clone()])).zip(&dys[at]) {
                let gv = if relu && yv <= 0.0 { 0.0 } else { dv };
                *o = km * gv - base - kr * (xv - mu);
            }
        });
        (Some(dx), sums)
    }
}

/// Σ f(v) over a row with eight independent accumulators (so that it vectorises).
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = row.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for lane in 0..8 {
            acc[lane] += f(c[lane]);
        }
    }
    for (lane, &v) in rest.iter().enumerate() {
        acc[lane] += f(v);
    }
    acc.iter().sum()
}

/// (Σ g, Σ g (x - μ)) over one row, g = dy masked by y > 0 when `relu`; eight
/// independent accumulators so that the loop vectorises.
fn grad_sums(x: &[f32], y: &[f32], dy: &[f32], mu: f32, relu: bool) -> (f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let mut add = |lane: usize, xv: f32, yv: f32, dv: f32| {
        let gv = if relu && yv <= 0.0 { 0.0 } else { dv };
        a[lane] += gv;
        b[lane] += gv * (xv - mu);
    };
    let (xc, yc, dc) = (x.chunks_exact(8), y.chunks_exact(8), dy.chunks_exact(8));
    let (xr, yr, dr) = (xc.remainder(), yc.remainder(), dc.remainder());
    for ((xs, ys), ds) in xc.zip(yc).zip(dc) {
        for lane in 0..8 {
            add(lane, xs[lane], ys[lane], ds[lane]);
        }
    }
    for (lane, ((&xv, &yv), &dv)) in xr.iter().zip(yr).zip(dr).enumerate() {
        add(lane, xv, yv, dv);
    }
    (a.iter().sum(), b.iter().sum())
}

/// Evaluation-mode BatchNorm: a fixed per-channel affine map of x.
struct EvalOp {
    a: Vec<f32>,
    b: Vec<f32>,
    relu: bool,
}

impl CustomOp1 for EvalOp {
    fn name(&self) -> &'static str {
        "robal-batch-norm-eval"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = ncs(l.dims())?;
        if self.a.len() != dims.1 {
            return Err(op_err(format!("batch norm: {} channels but {} statistics", dims.1, self.a.len())));
        }
        Ok((CpuStorage::F32(affine(f32_slice(s, l)?, dims, &self.a, &self.b, self.relu)), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dims = ncs(x.dims())?;
        let dx = with_f32(y, |ys| {
            with_f32(dy, |dys| {
                let mut dx = dys.to_vec();
                affine_backward(&mut dx, ys, dims, &self.a, self.relu);
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Training-mode BatchNorm (+ ReLU when `relu`) of `x` (N, C, ...) with weight γ and
/// bias β (C,), normalised by `stats` (from [`batch_stats`] of the same x) and `eps`;
/// differentiable in x, γ and β. f32 CPU tensors only (the caller falls back otherwise).
pub fn batch_norm_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    stats: &BatchStats,
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    let rstd = rstd(&stats.var, eps);
    x.contiguous()?.apply_op3(
        &gamma.contiguous()?,
        &beta.contiguous()?,
        TrainOp { mean: stats.mean.clone(), rstd, relu },
    )
}

/// Evaluation-mode BatchNorm (+ ReLU when `relu`) with fixed statistics:
/// y = γ (x - mean) / √(var + ε) + β per channel; differentiable in x only (γ, β,
/// mean and var are read as constants). f32 CPU tensors only.
pub fn batch_norm_eval(
    x: &Tensor,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    relu: bool,
) -> Result<Tensor> {
    batch_norm_eval_affine(x, super::Affine::batch_norm(gamma, beta, mean, var, eps, relu))
}

/// Evaluation-mode BatchNorm (+ ReLU) given as its per-channel affine map `f`
/// (see [`super::Affine::batch_norm`]): y = relu?(a_c x + b_c); differentiable in x only.
pub fn batch_norm_eval_affine(x: &Tensor, f: super::Affine) -> Result<Tensor> {
    x.contiguous()?.apply_op1(EvalOp { a: f.a, b: f.b, relu: f.relu })
}
