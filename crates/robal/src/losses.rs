//! Training losses on logits z (B, C), labels y (B,) and class counts n_c (SPEC section 4).
//! Every loss returns the batch mean unless stated otherwise.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::log_softmax;
use robal_attacks::loss::one_hot;
use serde::{Deserialize, Serialize};

/// log(pi_c) as a (1, C) f64 row, pi_c = n_c / sum(n) (cast it to the logits' dtype;
/// [`TrainLoss`] keeps its constants in f64 and does).
pub fn log_prior(counts: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let total: usize = counts.iter().sum();
    row(counts.iter().map(|&n| (n as f64 / total as f64).ln()).collect(), device)
}

/// Per-example cross-entropy (B,): -log softmax(z)_y.
pub fn cross_entropy_per_example(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    log_softmax(z, D::Minus1)?.gather(&y.unsqueeze(1)?.contiguous()?, 1)?.squeeze(1)?.neg()
}

/// Class-balanced weights by the effective number (Cui et al. 2019):
/// w_c = (1 - beta) / (1 - beta^{n_c}), rescaled so that sum_c w_c = C.
pub fn class_balanced_weights(counts: &[usize], beta: f64) -> Vec<f64> {
    let raw: Vec<f64> = counts.iter().map(|&n| (1.0 - beta) / (1.0 - beta.powi(n as i32))).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| w * counts.len() as f64 / sum).collect()
}

/// How class-weighted per-example losses are averaged over a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WeightedMean {
    /// sum_i w_{y_i} l_i / sum_i w_{y_i} (PyTorch's `cross_entropy(weight=w)`).
    #[default]
    Weights,
    /// sum_i w_{y_i} l_i / B (the reference code's CB-focal baseline).
    Batch,
}

/// The loss applied to logits during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LossConfig {
    /// Cross-entropy.
    Ce,
    /// Sigmoid focal loss: p_t = sigmoid(z (2 onehot - 1)); sum_c -(1-p_t)^gamma log p_t / B.
    Focal {
        /// Focusing parameter (2).
        gamma: f64,
    },
    /// LDAM: m_c = max_m n_c^(-1/4) / max_k n_k^(-1/4); CE(s (z - m_y onehot)).
    Ldam {
        /// Largest margin (0.5).
        max_m: f64,
        /// Scale (10).
        s: f64,
    },
    /// Logit adjustment in training: CE(z + tau log pi); balanced softmax at tau = 1.
    LogitAdjusted {
        /// tau.
        tau: f64,
    },
    /// Class-dependent temperature: CE(z_c / a_c), a_c = (n_max / n_c)^tau.
    Cdt {
        /// tau.
        tau: f64,
    },
    /// RoBal's class-aware margin loss: m_c = m + tau_m log(n_c / n_min) / s;
    /// CE(s (z - m_y onehot) + tau_b log pi).
    RobalMargin {
        /// Base margin m.
        m: f64,
        /// Scale s (10).
        s: f64,
        /// Class-aware margin factor tau_m.
        tau_m: f64,
        /// Logit-adjustment factor tau_b.
        tau_b: f64,
    },
}

/// A training loss with its class-dependent constants precomputed.
#[derive(Clone, Debug)]
pub struct TrainLoss {
    config: LossConfig,
    counts: Vec<usize>,
    /// Additive per-class row (1, C) applied to the logits, if any.
    offset: Option<Tensor>,
    /// Per-class margins (1, C) subtracted at the label, if any.
    margins: Option<Tensor>,
    /// Per-class multiplicative factor (1, C), if any.
    factor: Option<Tensor>,
    scale: f64,
}

fn row(v: Vec<f64>, device: &candle_core::Device) -> Result<Tensor> {
    let n = v.len();
    Tensor::from_vec(v, (1, n), device)
}

impl TrainLoss {
    /// Precompute the loss for class counts `counts` (all > 0).
    pub fn new(config: LossConfig, counts: &[usize], device: &candle_core::Device) -> Result<Self> {
        let n_max = *counts.iter().max().unwrap_or(&1) as f64;
        let n_min = *counts.iter().min().unwrap_or(&1) as f64;
        let (mut offset, mut margins, mut factor, mut scale) = (None, None, None, 1.0);
        match &config {
            LossConfig::Ce | LossConfig::Focal { .. } => {}
            LossConfig::Ldam { max_m, s } => {
                let max_q = counts.iter().map(|&n| (n as f64).powf(-0.25)).fold(0.0, f64::max);
                margins = Some(row(counts.iter().map(|&n| max_m * (n as f64).powf(-0.25) / max_q).collect(), device)?);
                scale = *s;
            }
            LossConfig::LogitAdjusted { tau } => offset = Some((log_prior(counts, device)? * *tau)?),
            LossConfig::Cdt { tau } => {
                factor = Some(row(counts.iter().map(|&n| (n_max / n as f64).powf(-tau)).collect(), device)?)
            }
            LossConfig::RobalMargin { m, s, tau_m, tau_b } => {
                margins = Some(row(counts.iter().map(|&n| m + tau_m * (n as f64 / n_min).ln() / s).collect(), device)?);
                offset = Some((log_prior(counts, device)? * *tau_b)?);
                scale = *s;
            }
        }
        Ok(Self { config, counts: counts.to_vec(), offset, margins, factor, scale })
    }

    /// The settings.
    pub fn config(&self) -> &LossConfig {
        &self.config
    }

    /// The logits the loss actually applies softmax to (before CE), for inspection:
    /// s (z * factor - margins * onehot) + offset.
    pub fn adjusted_logits(&self, z: &Tensor, y: &Tensor) -> Result<Tensor> {
        let c = z.dim(1)?;
        let dtype = z.dtype();
        let mut z = z.clone();
        if let Some(f) = &self.factor {
            z = z.broadcast_mul(&f.to_dtype(dtype)?)?;
        }
        if let Some(m) = &self.margins {
            z = (z - one_hot(y, c)?.to_dtype(dtype)?.broadcast_mul(&m.to_dtype(dtype)?)?)?;
        }
        if self.scale != 1.0 {
            z = (z * self.scale)?;
        }
        if let Some(o) = &self.offset {
            z = z.broadcast_add(&o.to_dtype(dtype)?)?;
        }
        Ok(z)
    }

    /// Per-example loss (B,).
    pub fn per_example(&self, z: &Tensor, y: &Tensor) -> Result<Tensor> {
        match &self.config {
            LossConfig::Focal { gamma } => {
                let c = z.dim(1)?;
                let sign = ((one_hot(y, c)?.to_dtype(z.dtype())? * 2.0)? - 1.0)?;
                let zt = (z * sign)?;
                // log sigmoid(t) = -softplus(-t), computed stably.
                let log_pt = softplus(&zt.neg()?)?.neg()?;
                let pt = log_pt.exp()?;
                let w = (pt.neg()? + 1.0)?.powf(*gamma)?;
                (w * log_pt)?.neg()?.sum(D::Minus1)
            }
            _ => cross_entropy_per_example(&self.adjusted_logits(z, y)?, y),
        }
    }

    /// Batch loss: mean_i l_i, or with class weights w (PyTorch's weighted CE):
    /// sum_i w_{y_i} l_i / sum_i w_{y_i}.
    pub fn forward(&self, z: &Tensor, y: &Tensor, weights: Option<&[f64]>) -> Result<Tensor> {
        self.forward_averaged(z, y, weights, WeightedMean::Weights)
    }

    /// Batch loss with class weights averaged as `average` says:
    /// sum_i w_{y_i} l_i / sum_i w_{y_i} (`weights`) or sum_i w_{y_i} l_i / B (`batch`).
    pub fn forward_averaged(
        &self,
        z: &Tensor,
        y: &Tensor,
        weights: Option<&[f64]>,
        average: WeightedMean,
    ) -> Result<Tensor> {
        let l = self.per_example(z, y)?;
        match weights {
            None => l.mean_all(),
            Some(w) => {
                let wt = Tensor::from_vec(w.to_vec(), w.len(), z.device())?.to_dtype(l.dtype())?.index_select(y, 0)?;
                let total = (l * &wt)?.sum_all()?;
                match average {
                    WeightedMean::Weights => total.broadcast_div(&wt.sum_all()?),
                    WeightedMean::Batch => total / y.dim(0)? as f64,
                }
            }
        }
    }

    /// Training counts the loss was built with.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }
}

/// softplus(x) = log(1 + e^x) = max(x, 0) + log(1 + e^-|x|).
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?
}

/// TRADES regulariser: (1/B) sum_i sum_c p_nat (log p_nat - log(p_adv + 1e-12)), p = softmax(z).
pub fn trades_kl(z_nat: &Tensor, z_adv: &Tensor) -> Result<Tensor> {
    let log_p_nat = log_softmax(z_nat, D::Minus1)?;
    let p_nat = log_p_nat.exp()?;
    // exp(log_softmax): differentiable (candle_nn::ops::softmax_last_dim has no backward).
    let log_p_adv = (log_softmax(z_adv, D::Minus1)?.exp()? + 1e-12)?.log()?;
    let b = z_nat.dim(0)? as f64;
    (p_nat * (log_p_nat - log_p_adv)?)?.sum_all()? / b
}

/// MCAT's simplex-ETF regulariser on a head weight W (C, d), C >= 2 (METHODS.md section 9):
/// rows normalised, w_c / max(||w_c||, 1e-12); G = W^ W^T (C, C); T = 1 on the diagonal and
/// -1/(C-1) off it (the Gram matrix of a simplex equiangular tight frame);
/// R_ETF = (1/C^2) sum_jk (G_jk - T_jk)^2. Zero exactly when the class directions are
/// unit vectors at equal, maximal angles.
pub fn etf_regularizer(w: &Tensor) -> Result<Tensor> {
    let (c, _) = w.dims2()?;
    if c < 2 {
        candle_core::bail!("ETF regulariser: the head has {c} class, needs at least 2");
    }
    let norms = w.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
    let wn = w.broadcast_div(&norms)?;
    let g = wn.matmul(&wn.t()?)?;
    let off = -1.0 / (c as f64 - 1.0);
    let target: Vec<f64> = (0..c * c).map(|i| if i / c == i % c { 1.0 } else { off }).collect();
    let target = Tensor::from_vec(target, (c, c), w.device())?.to_dtype(w.dtype())?;
    (g - target)?.sqr()?.mean_all()
}

/// TAET's hierarchical adversarial robust loss (HARL) on per-example losses l (B,)
/// of labels y over `classes` classes: L_c = mean of l_i over the batch items of class
/// c (0 if absent), Lbar = mean_c L_c,
/// HARL = w0 Lbar + w1 mean_c (L_c - Lbar)^2 + w2 sum_c (L_c / sum_k L_k)^2.
pub fn harl(l: &Tensor, y: &Tensor, classes: usize, w: [f64; 3]) -> Result<Tensor> {
    let onehot = one_hot(y, classes)?.to_dtype(l.dtype())?; // (B, C)
    let per_class_sum = l.unsqueeze(0)?.matmul(&onehot)?.squeeze(0)?; // (C,)
    let count = onehot.sum(0)?.clamp(1.0, f64::INFINITY)?;
    let lc = (per_class_sum / count)?;
    let mean = lc.mean_all()?;
    let var = lc.broadcast_sub(&mean)?.sqr()?.mean_all()?;
    let share = lc.broadcast_div(&(lc.sum_all()? + 1e-12)?)?.sqr()?.sum_all()?;
    (mean * w[0])? + (var * w[1])? + (share * w[2])?
}

/// REAT's re-balancing weights (METHODS.md section 3): b_c = (n_c - 1) / n_c,
/// E_c = (1 - b_c^a_c) / (1 - b_c), w_c = 1 / (E_c + 1e-5) rescaled to sum C, with a_c the
/// training examples whose adversarial version was predicted as c in the last epoch.
/// With `clamp_counts`, a_c = 0 counts as 1 (E_c = 1); otherwise (the official code's
/// **quirk**) it gives E_c = 0 and w_c ~ 1e5 before the rescaling.
pub fn rbl_weights(counts: &[usize], predicted: &[usize], clamp_counts: bool) -> Vec<f64> {
    let raw: Vec<f64> = counts
        .iter()
        .zip(predicted)
        .map(|(&n, &a)| {
            let a = if clamp_counts { a.max(1) } else { a } as f64;
            let e = if n <= 1 {
                a // b_c = 0: E_c = 1 for a >= 1 (and 0 for a = 0), the limit of the sum form
                    .min(1.0)
            } else {
                let b = (n as f64 - 1.0) / n as f64;
                (1.0 - b.powf(a)) / (1.0 - b)
            };
            1.0 / (e + 1e-5)
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|w| w * counts.len() as f64 / sum).collect()
}

/// RBL = sum_i w_{y_i} CE_i / sum_i w_{y_i} (REAT's inner objective), on logits z.
pub fn rbl(z: &Tensor, y: &Tensor, weights: &[f64]) -> Result<Tensor> {
    let w: Vec<f32> = weights.iter().map(|&v| v as f32).collect();
    let wt = Tensor::from_vec(w, weights.len(), z.device())?.index_select(y, 0)?;
    (cross_entropy_per_example(z, y)? * &wt)?.sum_all()?.broadcast_div(&wt.sum_all()?)
}

/// How REAT's TAIL term is reduced over pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TailReduction {
    /// (1 / (|I| B)) sum_{i in I} sum_j s_ij (w'_{y_i} + w'_{y_j}) KL(p_i || q_j).
    #[default]
    Pairwise,
    /// The official code (**quirk**): (1/|I|) sum_{i in I} [sum_j KL(p_i || q_j) / (B D)]
    /// [sum_j s_ij (w'_{y_i} + w'_{y_j}) / B], which averages the pair weights away.
    Official,
}

/// REAT's TAIL term on penultimate features h (B, D) of labels y, with class counts n:
/// tail classes T = {2 floor(C/3) + 1, ..., C - 1}, w'_c = sqrt(N / n_c),
/// s_ij = -1 if y_j = y_i else +1, q_j = softmax(h_j), p_i = softmax(h_i) (constant),
/// I = batch items with a tail label (TAIL = 0 if none); reduced as `reduction` says.
pub fn tail(h: &Tensor, y: &Tensor, counts: &[usize], reduction: TailReduction) -> Result<Tensor> {
    let (b, d) = h.dims2()?;
    let c = counts.len();
    let labels = y.to_vec1::<u32>()?;
    let first_tail = 2 * (c / 3) + 1;
    let in_tail: Vec<f32> = labels.iter().map(|&l| f32::from(l as usize >= first_tail)).collect();
    let n_tail: f32 = in_tail.iter().sum();
    if n_tail == 0.0 {
        return h.zeros_like()?.sum_all();
    }
    let total: usize = counts.iter().sum();
    let wc: Vec<f64> = counts.iter().map(|&n| (total as f64 / n.max(1) as f64).sqrt()).collect();
    let mut pair = vec![0f32; b * b];
    for i in 0..b {
        for j in 0..b {
            let s = if labels[i] == labels[j] { -1.0 } else { 1.0 };
            pair[i * b + j] = (s * (wc[labels[i] as usize] + wc[labels[j] as usize])) as f32;
        }
    }
    let dev = h.device();
    let pair = Tensor::from_vec(pair, (b, b), dev)?;
    let mask = Tensor::from_vec(in_tail, (b, 1), dev)?;
    let log_q = log_softmax(h, D::Minus1)?; // (B, D)
    let log_p = log_q.detach();
    let p = log_p.exp()?;
    // KL(p_i || q_j) = sum_d p_id log p_id - (p log_q^T)_ij.
    let neg_entropy = (&p * &log_p)?.sum_keepdim(1)?; // (B, 1)
    let kl = neg_entropy.broadcast_sub(&p.matmul(&log_q.t()?)?)?; // (B, B)
    match reduction {
        TailReduction::Pairwise => (kl * pair)?.broadcast_mul(&mask)?.sum_all()? / (n_tail as f64 * b as f64),
        TailReduction::Official => {
            let kl_mean = (kl.sum_keepdim(1)? / (b * d) as f64)?;
            let w_mean = (pair.sum_keepdim(1)? / b as f64)?;
            (kl_mean * w_mean)?.broadcast_mul(&mask)?.sum_all()? / n_tail as f64
        }
    }
}
