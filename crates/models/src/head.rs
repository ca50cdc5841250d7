//! Classifier heads on the pooled feature f (N, d): FC, the scale-invariant
//! cosine head of RoBal, tau-normalised weights and learnable weight scaling.

use candle_core::{Tensor, D};

use crate::arch::{FcBias, HeadConfig};
use crate::error::{invalid, Result};
use crate::store::{Init, StorePath};

/// Smallest norm used when normalising, so an all-zero feature gives zero logits, not NaN.
pub const NORM_FLOOR: f64 = 1e-12;

/// A head: `weight` (C, d) and, depending on the kind, `bias` (C,) and `gains` (C,).
#[derive(Clone, Debug)]
pub struct Head {
    config: HeadConfig,
    weight: Tensor,
    /// The bias tensor, when the head has one in its state.
    bias: Option<Tensor>,
    /// Whether the forward adds `bias` (a tau-norm head with `bias = false` keeps the
    /// trained FC bias in its state without using it).
    add_bias: bool,
    gains: Option<Tensor>,
}

/// Row-wise L2 norms (C, 1) of a matrix.
fn row_norms(w: &Tensor) -> Result<Tensor> {
    Ok(w.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

impl Head {
    /// A freshly initialised head under `p` (names `weight`, `bias`, `gains`):
    /// weight Uniform(+-1/sqrt(d)), bias 0 (a frozen buffer drawn Uniform(+-1/sqrt(d))
    /// for [`FcBias::FrozenRandom`]), gains 1.
    pub fn new(p: &StorePath, config: HeadConfig, dim: usize, classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(invalid("number of classes", "0"));
        }
        let bound = 1.0 / (dim as f64).sqrt();
        let weight = p.param("weight", &[classes, dim], Init::Uniform { bound })?;
        let (has_bias, add_bias) = match config {
            HeadConfig::Cosine { scale, gamma, bias } => {
                if !(scale > 0.0 && gamma >= 0.0) {
                    return Err(invalid(
                        "cosine head",
                        format!("scale {scale}, gamma {gamma}: need scale > 0, gamma >= 0"),
                    ));
                }
                (bias, bias)
            }
            HeadConfig::TauNorm { tau, .. } if !(0.0..=2.0).contains(&tau) => {
                return Err(invalid("tau-norm head", format!("tau {tau}: expected 0..=2")))
            }
            HeadConfig::TauNorm { bias, .. } | HeadConfig::Lws { bias } => (true, bias),
            _ => (true, true),
        };
        let bias = match config {
            HeadConfig::Fc { bias: FcBias::FrozenRandom } => {
                Some(p.buffer("bias", &[classes], Init::Uniform { bound })?.as_tensor().clone())
            }
            _ if has_bias => Some(p.param("bias", &[classes], Init::Const(0.0))?),
            _ => None,
        };
        let gains = if matches!(config, HeadConfig::Lws { .. }) {
            Some(p.param("gains", &[classes], Init::Const(1.0))?)
        } else {
            None
        };
        Ok(Self { config, weight, bias, add_bias, gains })
    }

    /// The head's settings.
    pub fn config(&self) -> HeadConfig {
        self.config
    }

    /// The class weight matrix W (C, d), bias and gains excluded (MCAT's ETF regulariser
    /// acts on it).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Logits (N, C) of features `f` (N, d):
    /// - FC: f W^T + b;
    /// - cosine: s * (f/||f||) (W_c/(||W_c|| + gamma))^T (+ b);
    /// - tau-norm: f (W_c/||W_c||^tau)^T + b;
    /// - LWS: g * (f W^T + b) (b left out when `bias` is false).
    pub fn forward(&self, f: &Tensor) -> Result<Tensor> {
        let linear = |w: &Tensor| -> Result<Tensor> {
            let z = f.matmul(&w.t()?)?;
            Ok(match &self.bias {
                Some(b) if self.add_bias => z.broadcast_add(b)?,
                _ => z,
            })
        };
        match self.config {
            HeadConfig::Fc { .. } => linear(&self.weight),
            HeadConfig::Cosine { scale, gamma, .. } => {
                let fnorm = row_norms(f)?.maximum(NORM_FLOOR)?;
                let fhat = f.broadcast_div(&fnorm)?;
                let what = self.weight.broadcast_div(&(row_norms(&self.weight)? + gamma)?)?;
                let z = (fhat.matmul(&what.t()?)? * scale)?;
                Ok(match &self.bias {
                    Some(b) => z.broadcast_add(b)?,
                    None => z,
                })
            }
            HeadConfig::TauNorm { tau, .. } => {
                let n = row_norms(&self.weight)?.maximum(NORM_FLOOR)?.powf(tau)?;
                linear(&self.weight.broadcast_div(&n)?)
            }
            HeadConfig::Lws { .. } => {
                let gains = self.gains.as_ref().ok_or_else(|| invalid("LWS head", "gains missing"))?;
                Ok(linear(&self.weight)?.broadcast_mul(gains)?)
            }
        }
    }
}

/// The focal-loss prior bias b_c = -log((1 - pi_c) / pi_c) = log(pi_c / (1 - pi_c)),
/// pi_c = n_c / N, of class counts n (every count in 1..N).
pub fn prior_bias(counts: &[usize]) -> Result<Vec<f64>> {
    let total: usize = counts.iter().sum();
    if counts.len() < 2 || counts.iter().any(|&n| n == 0 || n == total) {
        return Err(invalid(
            "prior bias init",
            format!("class counts {counts:?}: expected at least two classes, each with 1..N images"),
        ));
    }
    Ok(counts
        .iter()
        .map(|&n| {
            let pi = n as f64 / total as f64;
            -((1.0 - pi) / pi).ln()
        })
        .collect())
}
