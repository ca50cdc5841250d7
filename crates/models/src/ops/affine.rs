//! The per-channel map of an evaluation-mode BatchNorm(-ReLU), shared by the
//! convolution kernels (applied while they gather their input) and the tape.

/// A per-channel map y = relu?(a_c x + b_c): an evaluation-mode BatchNorm, optionally
/// followed by a ReLU.
#[derive(Clone, Debug, PartialEq)]
pub struct Affine {
    /// Scale per channel, a_c = γ_c / √(running_var_c + ε).
    pub a: Vec<f32>,
    /// Shift per channel, b_c = β_c - running_mean_c a_c.
    pub b: Vec<f32>,
    /// Whether a ReLU follows.
    pub relu: bool,
}

impl Affine {
    /// The affine form of BatchNorm with fixed statistics:
    /// a_c = γ_c / √(var_c + ε), b_c = β_c - mean_c a_c (computed in f64).
    pub fn batch_norm(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64, relu: bool) -> Self {
        let a: Vec<f32> = gamma.iter().zip(var).map(|(&g, &v)| (g as f64 / (v as f64 + eps).sqrt()) as f32).collect();
        let b = beta.iter().zip(mean).zip(&a).map(|((&b, &m), &a)| b - m * a).collect();
        Self { a, b, relu }
    }

    /// relu?(a v + b) for one entry of a channel with scale `a` and shift `b`.
    #[inline(always)]
    pub(crate) fn apply(&self, a: f32, b: f32, v: f32) -> f32 {
        let y = v * a + b;
        if self.relu {
            y.max(0.0)
        } else {
            y
        }
    }
}
