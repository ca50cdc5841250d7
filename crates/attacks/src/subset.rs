//! Running an attack on some rows of a batch only (the points still robust).

use candle_core::{Result, Tensor};

use crate::attack::AttackResult;
use crate::model::select_rows;

/// Row indices where `mask` is true, as a u32 tensor on `like`'s device.
pub fn indices(mask: &[bool], like: &Tensor) -> Result<(Vec<usize>, Tensor)> {
    let idx: Vec<usize> = mask.iter().enumerate().filter(|(_, &m)| m).map(|(i, _)| i).collect();
    let t = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<u32>>(), idx.len(), like.device())?;
    Ok((idx, t))
}

/// Run `f` on the rows of (x, y) where `active`, and merge: rows `f` fooled take its
/// adversarial image; other rows keep `current`. Returns which rows were newly fooled.
pub fn run_on_rows<F>(active: &[bool], x: &Tensor, y: &Tensor, current: &Tensor, f: F) -> Result<(Tensor, Vec<bool>)>
where
    F: FnOnce(&Tensor, &Tensor) -> Result<AttackResult>,
{
    let (idx, idx_t) = indices(active, x)?;
    let mut fooled = vec![false; active.len()];
    if idx.is_empty() {
        return Ok((current.clone(), fooled));
    }
    let res = f(&x.index_select(&idx_t, 0)?, &y.index_select(&idx_t, 0)?)?;
    let placed = current.zeros_like()?.index_add(&idx_t, &res.adv, 0)?;
    for (k, &i) in idx.iter().enumerate() {
        fooled[i] = res.success[k];
    }
    Ok((select_rows(&fooled, &placed, current)?, fooled))
}
