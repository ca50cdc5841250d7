//! Square attack, L-inf, untargeted (Andriushchenko et al., ECCV 2020): a score-based
//! random search that changes one square window per query to +-eps per channel and
//! keeps the change if the margin z_y - max_{j != y} z_j decreases.

use candle_core::{DType, Result, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attack::{Attack, AttackResult};
use crate::loss::margin;
use crate::model::{misclassified, select_rows, Model};

/// Square attack settings.
#[derive(Clone, Debug)]
pub struct Square {
    /// L-inf radius.
    pub eps: f64,
    /// Query budget (5000 in AutoAttack's standard suite).
    pub queries: usize,
    /// Initial fraction of pixels changed per query (0.8).
    pub p_init: f64,
}

impl Square {
    /// AutoAttack's standard settings: 5000 queries, p_init 0.8.
    pub fn standard(eps: f64) -> Self {
        Self { eps, queries: 5000, p_init: 0.8 }
    }

    /// The paper's schedule of p: halved at iterations 10, 50, 200, 500, 1000, 2000,
    /// 4000, 6000 and 8000 of a 10,000-query budget (rescaled to the actual budget).
    pub fn p_at(&self, it: usize) -> f64 {
        let it = (it as f64 / self.queries as f64 * 10_000.0) as usize;
        let halvings = [10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000].iter().filter(|&&b| it > b).count();
        self.p_init / f64::powi(2.0, halvings as i32)
    }
}

/// Margin z_y - max_{j != y} z_j per row.
fn margins(model: &dyn Model, x: &Tensor, y: &Tensor) -> Result<Vec<f32>> {
    margin(&model.logits(&x.detach())?, y)?.to_dtype(DType::F32)?.to_vec1()
}

impl Attack for Square {
    fn name(&self) -> String {
        "square".into()
    }

    fn run(&self, model: &dyn Model, x: &Tensor, y: &Tensor, seed: u64) -> Result<AttackResult> {
        let (b, c, h, w) = x.dims4()?;
        let yv: Vec<u32> = y.to_vec1()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let eps = self.eps as f32;
        // Start: vertical stripes of +-eps (one sign per example, channel and column).
        let stripes: Vec<f32> = (0..b * c * w).map(|_| if rng.random_bool(0.5) { eps } else { -eps }).collect();
        let stripes = Tensor::from_vec(stripes, (b, c, 1, w), x.device())?.broadcast_as(x.shape())?;
        let mut x_best = (x + stripes)?.clamp(0.0, 1.0)?;
        let mut margin = margins(model, &x_best, y)?;
        let clean_wrong = misclassified(model, x, &yv)?;
        for it in 1..self.queries {
            let active: Vec<bool> = margin.iter().zip(&clean_wrong).map(|(m, cw)| *m > 0.0 && !cw).collect();
            if !active.iter().any(|&a| a) {
                break;
            }
            let p = self.p_at(it);
            let s = ((p * (h * w) as f64).sqrt().round() as usize).clamp(1, h.min(w).saturating_sub(1).max(1));
            let (vh, vw) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
            // New +-eps colour per example and channel on the window, applied to active rows.
            let colours: Vec<f32> = (0..b * c).map(|_| if rng.random_bool(0.5) { eps } else { -eps }).collect();
            let colours =
                Tensor::from_vec(colours, (b, c, 1, 1), x.device())?.broadcast_as((b, c, s, s))?.contiguous()?;
            let window_x = x.narrow(2, vh, s)?.narrow(3, vw, s)?;
            let new_window = (&window_x + colours)?.clamp(0.0, 1.0)?;
            let candidate = x_best.slice_assign(&[0..b, 0..c, vh..vh + s, vw..vw + s], &new_window)?;
            let m_new = margins(model, &candidate, y)?;
            let improved: Vec<bool> = (0..b).map(|e| active[e] && m_new[e] < margin[e]).collect();
            if improved.iter().any(|&v| v) {
                x_best = select_rows(&improved, &candidate, &x_best)?;
                for e in 0..b {
                    if improved[e] {
                        margin[e] = m_new[e];
                    }
                }
            }
        }
        let success: Vec<bool> = margin.iter().zip(&clean_wrong).map(|(m, cw)| *m < 0.0 || *cw).collect();
        // Points that were never fooled keep the clean image.
        let adv = select_rows(&success, &x_best, x)?;
        let adv = crate::threat::project(&adv, x, self.eps, crate::threat::Norm::Linf)?;
        let success = misclassified(model, &adv, &yv)?;
        Ok(AttackResult { adv, success })
    }
}
