//! Threat models: the eps-ball, the \[0, 1\] box, steepest-ascent steps and random starts.

use candle_core::{Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which norm bounds the perturbation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// ||delta||_inf <= eps.
    Linf,
    /// ||delta||_2 <= eps (per example).
    L2,
}

/// How an iterative attack starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RandomStart {
    /// From the clean input.
    Off,
    /// Uniform in the ball: U[-eps, eps] per pixel (L-inf), or a uniformly random
    /// direction with radius eps * U^(1/d)... here: a random direction scaled to eps * U (L2).
    Uniform,
    /// **quirk** of the reference training code: x + eps * U[0, 1) (one-sided, L-inf).
    OneSidedReference,
}

/// Per-example L2 norms of a (B, ...) tensor, shape (B, 1, 1, 1)-broadcastable.
pub fn l2_norms(t: &Tensor) -> Result<Tensor> {
    let b = t.dim(0)?;
    let mut shape = vec![1usize; t.rank()];
    shape[0] = b;
    t.flatten_from(1)?.sqr()?.sum_keepdim(1)?.sqrt()?.reshape(shape)
}

/// Project `x_adv` onto the eps-ball around `x`, then onto the \[0, 1\] box.
pub fn project(x_adv: &Tensor, x: &Tensor, eps: f64, norm: Norm) -> Result<Tensor> {
    let delta = (x_adv - x)?;
    let delta = match norm {
        Norm::Linf => delta.clamp(-eps, eps)?,
        Norm::L2 => {
            let n = l2_norms(&delta)?;
            let factor = (n.clamp(1e-12, f64::INFINITY)?.recip()? * eps)?.clamp(0.0, 1.0)?;
            delta.broadcast_mul(&factor)?
        }
    };
    (x + delta)?.clamp(0.0, 1.0)
}

/// The steepest-ascent direction of size 1 for the norm: sign(g) (L-inf) or g/||g||_2 (L2).
pub fn ascent_direction(grad: &Tensor, norm: Norm) -> Result<Tensor> {
    match norm {
        Norm::Linf => grad.sign(),
        Norm::L2 => grad.broadcast_div(&l2_norms(grad)?.clamp(1e-12, f64::INFINITY)?),
    }
}

/// Uniform noise in [lo, hi) with x's shape, drawn from `seed` (deterministic).
pub fn uniform_like(x: &Tensor, lo: f32, hi: f32, seed: u64) -> Result<Tensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..x.elem_count()).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(v, x.shape(), x.device())
}

/// Starting point of an iterative attack, inside the ball and the box.
pub fn start(x: &Tensor, eps: f64, norm: Norm, mode: RandomStart, seed: u64) -> Result<Tensor> {
    match (mode, norm) {
        (RandomStart::Off, _) => Ok(x.clone()),
        (RandomStart::Uniform, Norm::Linf) => (x + (uniform_like(x, -1.0, 1.0, seed)? * eps)?)?.clamp(0.0, 1.0),
        (RandomStart::OneSidedReference, _) => project(&(x + (uniform_like(x, 0.0, 1.0, seed)? * eps)?)?, x, eps, norm),
        (RandomStart::Uniform, Norm::L2) => {
            let g = uniform_like(x, -1.0, 1.0, seed)?;
            let dir = g.broadcast_div(&l2_norms(&g)?.clamp(1e-12, f64::INFINITY)?)?;
            let radius = uniform_like(&l2_norms(&g)?, 0.0, 1.0, seed ^ 0x5eed)?;
            project(&(x + dir.broadcast_mul(&(radius * eps)?)?)?, x, eps, norm)
        }
    }
}
