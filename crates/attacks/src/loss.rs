//! Per-example attack objectives, all to be **maximised**.

use candle_core::{DType, Result, Tensor, D};

/// An attack objective on logits z (B, K) and labels y (B,).
#[derive(Clone, Debug)]
pub enum Loss {
    /// Cross-entropy CE(z, y) = logsumexp(z) - z_y.
    CrossEntropy,
    /// Targeted cross-entropy: -CE(z, t) (move towards target t).
    TargetedCrossEntropy {
        /// Target class per example (B,) u32.
        targets: Tensor,
    },
    /// Carlini-Wagner margin: -max(z_y - max_{j != y} z_j + kappa, 0).
    CwMargin {
        /// Confidence kappa (50 in SPEC section 6).
        kappa: f64,
    },
    /// Difference of logits ratio (Croce & Hein 2020):
    /// -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3 + 1e-12), pi sorting z descending.
    Dlr,
    /// Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12).
    TargetedDlr {
        /// Target class per example (B,) u32.
        targets: Tensor,
    },
}

/// One-hot (B, K) f32 of labels y (B,) u32.
pub fn one_hot(y: &Tensor, k: usize) -> Result<Tensor> {
    let b = y.dim(0)?;
    let eye = Tensor::eye(k, DType::F32, y.device())?;
    eye.index_select(y, 0)?.reshape((b, k))
}

/// z_y per row (B,).
fn pick(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    z.gather(&y.unsqueeze(1)?.contiguous()?, 1)?.squeeze(1)
}

/// max_{j != y} z_j per row (B,).
fn max_other(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let k = z.dim(1)?;
    let mask = one_hot(y, k)?.to_dtype(DType::U8)?;
    let low = Tensor::full(f32::NEG_INFINITY, z.shape(), z.device())?.to_dtype(z.dtype())?;
    mask.where_cond(&low, z)?.max(D::Minus1)
}

/// z in f32, or in f64 if it is (half-precision logits are widened).
fn widened(z: &Tensor) -> Result<Tensor> {
    match z.dtype() {
        DType::F64 => Ok(z.clone()),
        _ => z.to_dtype(DType::F32),
    }
}

/// Margin z_y - max_{j != y} z_j per row (B,): negative exactly when misclassified.
pub fn margin(z: &Tensor, y: &Tensor) -> Result<Tensor> {
    let z = widened(z)?;
    pick(&z, y)? - max_other(&z, y)?
}

/// The i-th largest logit per row (B,), differentiable (indices come from a sort).
fn kth_largest(z: &Tensor, order: &Tensor, i: usize) -> Result<Tensor> {
    z.gather(&order.narrow(1, i, 1)?.contiguous()?, 1)?.squeeze(1)
}

impl Loss {
    /// Per-example objective (B,).
    /// Computed in f32 (f64 for f64 logits).
    pub fn per_example(&self, z: &Tensor, y: &Tensor) -> Result<Tensor> {
        let z = widened(z)?.contiguous()?;
        match self {
            Loss::CrossEntropy => {
                let lse = candle_core::Tensor::log_sum_exp(&z, D::Minus1)?;
                lse - pick(&z, y)?
            }
            Loss::TargetedCrossEntropy { targets } => {
                let lse = candle_core::Tensor::log_sum_exp(&z, D::Minus1)?;
                pick(&z, targets)? - lse
            }
            Loss::CwMargin { kappa } => (margin(&z, y)? + *kappa)?.relu()?.neg(),
            Loss::Dlr => {
                if z.dim(1)? < 3 {
                    candle_core::bail!("DLR loss needs at least 3 classes, got {}", z.dim(1)?);
                }
                let order = z.detach().arg_sort_last_dim(false)?;
                let den = ((kth_largest(&z, &order, 0)? - kth_largest(&z, &order, 2)?)? + 1e-12)?;
                margin(&z, y)?.div(&den)?.neg()
            }
            Loss::TargetedDlr { targets } => {
                if z.dim(1)? < 4 {
                    candle_core::bail!("targeted DLR loss needs at least 4 classes, got {}", z.dim(1)?);
                }
                let order = z.detach().arg_sort_last_dim(false)?;
                let third_fourth = ((kth_largest(&z, &order, 2)? + kth_largest(&z, &order, 3)?)? * 0.5)?;
                let den = ((kth_largest(&z, &order, 0)? - third_fourth)? + 1e-12)?;
                (pick(&z, y)? - pick(&z, targets)?)?.div(&den)?.neg()
            }
        }
    }

    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Loss::CrossEntropy => "ce",
            Loss::TargetedCrossEntropy { .. } => "ce-targeted",
            Loss::CwMargin { .. } => "cw",
            Loss::Dlr => "dlr",
            Loss::TargetedDlr { .. } => "dlr-targeted",
        }
    }
}
