//! What an attack needs from a classifier, and the per-step computations shared by attacks.

use candle_core::{DType, Result, Tensor, Var, D};

use crate::loss::Loss;

/// Something that maps an image batch (B, C, H, W) in \[0, 1\] to logits (B, K),
/// differentiably with respect to the input. Implementations must run the model
/// in evaluation mode: attacks never change parameters or BatchNorm statistics.
pub trait Model {
    /// Logits of a batch.
    fn logits(&self, x: &Tensor) -> Result<Tensor>;
}

impl<F: Fn(&Tensor) -> Result<Tensor>> Model for F {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self(x)
    }
}

/// A model whose logits are multiplied by a constant (for logit-scale tests and audits).
pub struct ScaledLogits<'a, M: Model + ?Sized> {
    /// The model.
    pub model: &'a M,
    /// The factor.
    pub scale: f64,
}

impl<M: Model + ?Sized> Model for ScaledLogits<'_, M> {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.model.logits(x)? * self.scale
    }
}

/// Predicted classes (argmax of logits) as u32.
pub fn predict(model: &dyn Model, x: &Tensor) -> Result<Vec<u32>> {
    model.logits(&x.detach())?.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()
}

/// Per-example "misclassified" flags: prediction != label.
pub fn misclassified(model: &dyn Model, x: &Tensor, y: &[u32]) -> Result<Vec<bool>> {
    Ok(predict(model, x)?.iter().zip(y).map(|(p, l)| p != l).collect())
}

/// One forward + backward at `x`: logits, per-example loss values (to maximise)
/// and the gradient of their sum w.r.t. `x` (row i is the gradient of loss i,
/// since examples do not interact in evaluation mode).
pub struct Step {
    /// Logits (B, K), detached.
    pub logits: Tensor,
    /// Per-example loss.
    pub loss: Vec<f32>,
    /// d(sum loss)/dx, same shape as x.
    pub grad: Tensor,
}

/// Evaluate `loss` and its input gradient at `x` for labels `y`.
pub fn loss_and_grad(model: &dyn Model, x: &Tensor, y: &Tensor, loss: &Loss) -> Result<Step> {
    let xv = Var::from_tensor(&x.detach())?;
    let logits = model.logits(xv.as_tensor())?;
    let per_example = loss.per_example(&logits, y)?;
    let grads = per_example.sum_all()?.backward()?;
    let grad = match grads.get(xv.as_tensor()) {
        Some(g) => g.detach(),
        None => xv.as_tensor().zeros_like()?,
    };
    Ok(Step { logits: logits.detach(), loss: per_example.detach().to_dtype(DType::F32)?.to_vec1()?, grad })
}

/// Choose rows: where `mask[i]`, row i of `a`, else row i of `b` (B leading dimension).
pub fn select_rows(mask: &[bool], a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1usize; a.rank()];
    shape[0] = mask.len();
    let m = Tensor::from_vec(mask.iter().map(|&v| v as u8).collect::<Vec<u8>>(), shape, a.device())?;
    m.broadcast_as(a.shape())?.where_cond(a, b)
}

/// Argmax of each row of logits.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()
}

/// Per-example "misclassified" flags from logits already computed: argmax != label.
pub fn fooled_by(logits: &Tensor, y: &[u32]) -> Result<Vec<bool>> {
    Ok(argmax_rows(logits)?.iter().zip(y).map(|(p, l)| p != l).collect())
}
