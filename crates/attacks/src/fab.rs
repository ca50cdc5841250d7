//! FAB-T, targeted L-inf (Croce & Hein, ICML 2020, "Minimally distorted adversarial
//! examples with a fast adaptive boundary attack"), as in AutoAttack's standard suite.
//!
//! Each iteration linearises g(x) = z_y(x) - z_t(x) at the current point x_i and
//! projects both x_i and the original x_0 onto the hyperplane {g(x_i) + w.(x - x_i) = 0}
//! (w = grad g) within the \[0, 1\] box, in L-inf; the next point is a convex
//! combination biased towards x_0 (alpha <= alpha_max), extrapolated by eta. Once a
//! point is adversarial it is pulled back towards x_0 by beta. The attack returns the
//! closest adversarial point found; it succeeds where that is within eps.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use crate::attack::{Attack, AttackResult};
use crate::loss::one_hot;
use crate::model::{misclassified, Model};
use crate::subset::run_on_rows;

/// FAB-T settings.
#[derive(Clone, Debug)]
pub struct FabTargeted {
    /// L-inf radius for success.
    pub eps: f64,
    /// Iterations per target (100).
    pub steps: usize,
    /// Number of target classes (9).
    pub targets: usize,
    /// Largest bias towards the original point (0.1).
    pub alpha_max: f64,
    /// Extrapolation factor (1.05).
    pub eta: f64,
    /// Backward step factor (0.9).
    pub beta: f64,
}

impl FabTargeted {
    /// AutoAttack's standard settings.
    pub fn standard(eps: f64) -> Self {
        Self { eps, steps: 100, targets: 9, alpha_max: 0.1, eta: 1.05, beta: 0.9 }
    }
}

/// Smallest L-inf step d with w.d = c and lo <= x + d <= hi (per coordinate), or the
/// largest step towards the hyperplane when it cannot be reached inside the box.
///
/// With s_j = sign(w_j) sign(c) and room_j the distance to the box edge in direction
/// s_j, w.d(r) = sum_j |w_j| min(r, room_j) is increasing in r; r is found by sorting rooms.
pub fn project_linf_hyperplane(x: &[f32], w: &[f32], c: f32) -> Vec<f32> {
    let sign_c = if c >= 0.0 { 1.0 } else { -1.0 };
    let target = c.abs() as f64;
    let mut items: Vec<(f64, f64, usize)> = Vec::with_capacity(x.len());
    for j in 0..x.len() {
        let aw = w[j].abs() as f64;
        if aw == 0.0 {
            continue;
        }
        let dir = (w[j] as f64).signum() * sign_c;
        let room = if dir > 0.0 { 1.0 - x[j] as f64 } else { x[j] as f64 };
        items.push((room.max(0.0), aw, j));
    }
    items.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total_w: f64 = items.iter().map(|i| i.1).sum();
    // Find r: sum_{room < r} |w| room + r * sum_{room >= r} |w| = target.
    let (mut below, mut w_above) = (0.0f64, total_w);
    let mut r = f64::INFINITY;
    for &(room, aw, _) in &items {
        // At r = room, reached = below + room * w_above.
        if below + room * w_above >= target {
            r = if w_above > 0.0 { (target - below) / w_above } else { room };
            break;
        }
        below += aw * room;
        w_above -= aw;
    }
    let mut d = vec![0f32; x.len()];
    for &(room, _, j) in &items {
        let dir = (w[j] as f64).signum() * sign_c;
        d[j] = (dir * r.min(room)) as f32;
    }
    d
}

/// One row's iteration: the next point, and the adversarial point seen (with its distance).
struct RowStep {
    next: Vec<f32>,
    adversarial: Option<(Vec<f32>, f32)>,
}

impl FabTargeted {
    /// One targeted run: returns (best adversarial point, its L-inf distance or inf).
    fn once(&self, model: &dyn Model, x0: &Tensor, y: &Tensor, t: &Tensor) -> Result<(Tensor, Vec<f32>)> {
        let (b, k) = (x0.dim(0)?, model.logits(&x0.narrow(0, 0, 1)?)?.dim(1)?);
        let dims = x0.dims().to_vec();
        let d: usize = dims[1..].iter().product();
        let dir = (one_hot(y, k)? - one_hot(t, k)?)?; // g = z_y - z_t
        let x0v: Vec<f32> = x0.flatten_all()?.to_vec1()?;
        let mut xi = x0v.clone();
        let mut best = x0v.clone();
        let mut best_dist = vec![f32::INFINITY; b];
        let yv: Vec<u32> = y.to_vec1()?;
        for _ in 0..self.steps {
            let xt = Tensor::from_vec(xi.clone(), dims.as_slice(), x0.device())?;
            let xv = candle_core::Var::from_tensor(&xt)?;
            let z = model.logits(xv.as_tensor())?.to_dtype(DType::F32)?;
            let g = (&z * &dir)?.sum(1)?;
            let grads = g.sum_all()?.backward()?;
            let wv: Vec<f32> = match grads.get(xv.as_tensor()) {
                Some(gr) => gr.flatten_all()?.to_vec1()?,
                None => vec![0.0; b * d],
            };
            let gv: Vec<f32> = g.to_vec1()?;
            let pred: Vec<u32> = z.argmax(1)?.to_dtype(DType::U32)?.to_vec1()?;
            // Record adversarial points, then step each row (rows are independent: parallel).
            let rows: Vec<RowStep> = (0..b)
                .into_par_iter()
                .map(|e| {
                    let (r0, r1) = (e * d, (e + 1) * d);
                    let (xe, x0e, we) = (&xi[r0..r1], &x0v[r0..r1], &wv[r0..r1]);
                    let mut record = None;
                    let mut cur = xe.to_vec();
                    if pred[e] != yv[e] {
                        let dist = cur.iter().zip(x0e).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        record = Some((cur.clone(), dist));
                        // Backward step towards the original point.
                        for (c, o) in cur.iter_mut().zip(x0e) {
                            *c = (1.0 - self.beta as f32) * o + self.beta as f32 * *c;
                        }
                    }
                    // Hyperplane through the linearisation at the current point: g + w.(p - cur) = 0.
                    let g_cur = gv[e] + we.iter().zip(cur.iter().zip(xe)).map(|(w, (c, x))| w * (c - x)).sum::<f32>();
                    let d1 = project_linf_hyperplane(&cur, we, -g_cur);
                    let g_at_x0 =
                        g_cur + we.iter().zip(x0e.iter().zip(&cur)).map(|(w, (o, c))| w * (o - c)).sum::<f32>();
                    let d2 = project_linf_hyperplane(x0e, we, -g_at_x0);
                    let n1 = d1.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let n2 = d2.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let alpha = if n1 + n2 > 0.0 { (n1 / (n1 + n2)).clamp(0.0, self.alpha_max as f32) } else { 0.0 };
                    let eta = self.eta as f32;
                    let next: Vec<f32> = (0..d)
                        .map(|j| {
                            ((cur[j] + eta * d1[j]) * (1.0 - alpha) + (x0e[j] + eta * d2[j]) * alpha).clamp(0.0, 1.0)
                        })
                        .collect();
                    RowStep { next, adversarial: record }
                })
                .collect();
            for (e, RowStep { next, adversarial }) in rows.into_iter().enumerate() {
                if let Some((p, dist)) = adversarial {
                    if dist < best_dist[e] {
                        best_dist[e] = dist;
                        best[e * d..(e + 1) * d].copy_from_slice(&p);
                    }
                }
                xi[e * d..(e + 1) * d].copy_from_slice(&next);
            }
        }
        // The last iterate may be adversarial too.
        let xt = Tensor::from_vec(xi.clone(), dims.as_slice(), x0.device())?;
        for (e, m) in misclassified(model, &xt, &yv)?.into_iter().enumerate() {
            let dist = (0..d).map(|j| (xi[e * d + j] - x0v[e * d + j]).abs()).fold(0f32, f32::max);
            if m && dist < best_dist[e] {
                best_dist[e] = dist;
                best[e * d..(e + 1) * d].copy_from_slice(&xi[e * d..(e + 1) * d]);
            }
        }
        Ok((Tensor::from_vec(best, dims.as_slice(), x0.device())?, best_dist))
    }
}

impl Attack for FabTargeted {
    fn name(&self) -> String {
        "fab-t".into()
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, _seed: u64) -> Result<AttackResult> {
        let yv: Vec<u32> = y.to_vec1()?;
        let mut success = misclassified(model, x, &yv)?;
        let mut adv = x.clone();
        let order = model.logits(&x.detach())?.arg_sort_last_dim(false)?;
        let k = order.dim(1)?;
        for r in 0..self.targets.min(k.saturating_sub(1)) {
            let active: Vec<bool> = success.iter().map(|s| !s).collect();
            if !active.iter().any(|&a| a) {
                break;
            }
            let (_, idx) = crate::subset::indices(&active, x)?;
            let targets = order.index_select(&idx, 0)?.narrow(1, r + 1, 1)?.squeeze(1)?.to_dtype(DType::U32)?;
            let (new_adv, fooled) = run_on_rows(&active, x, y, &adv, |xs, ys| {
                let (best, dist) = self.once(model, xs, ys, &targets)?;
                // Success only within the eps-ball (tiny float slack), and then project for safety.
                let ok: Vec<bool> = dist.iter().map(|&d| (d as f64) <= self.eps + 1e-6).collect();
                let best = crate::threat::project(&best, xs, self.eps, crate::threat::Norm::Linf)?;
                let still: Vec<bool> = misclassified(model, &best, &ys.to_vec1()?)?;
                let success = ok.iter().zip(still).map(|(a, b)| *a && b).collect();
                Ok(AttackResult { adv: best, success })
            })?;
            adv = new_adv;
            for (s, f) in success.iter_mut().zip(fooled) {
                *s |= f;
            }
        }
        Ok(AttackResult { adv, success })
    }
}
