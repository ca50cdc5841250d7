//! A network recorded on a [`Tape`] as one candle op, so that it joins ordinary
//! autograd: x -> output for a frozen network (evaluation), (x, parameters) -> output
//! for one being trained.
//!
//! How a trained network's parameter gradients reach candle: each parameter p goes
//! through a [`Tie`] op (p -> one zero, nothing copied), and the ties, concatenated,
//! are the op's second operand. candle runs the op's backward pass before those of
//! its operands, so the tape's backward pass computes every parameter gradient first
//! and leaves them with the ties; each tie's backward pass then hands its parameter
//! its gradient.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, TensorId};

use super::tape::{Grads, Tape, ValueId};
use super::{f32_slice, op_err, with_f32};

type Build = dyn Fn(&mut Tape, ValueId) -> Result<ValueId> + Send + Sync;

/// The recorded forward pass, kept by the op for its backward pass.
struct Recorded {
    build: Box<Build>,
    params: Vec<Tensor>,
    tape: Mutex<Option<(Tape, ValueId)>>,
}

impl Recorded {
    /// Run `build` on the input; returns the output flattened to (N, rest).
    fn forward(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims: [usize; 4] = l
            .dims()
            .try_into()
            .map_err(|_| op_err(format!("tape op: expected an (N, C, H, W) input, got {:?}", l.dims())))?;
        let (mut tape, input) = Tape::new(f32_slice(s, l)?.to_vec(), dims, &self.params);
        let out = (self.build)(&mut tape, input)?;
        let [n, c, h, w] = tape.dims(out);
        let y = tape.data(out).to_vec();
        tape.keep_for_backward();
        *self.tape.lock().map_err(|_| op_err("tape op: lock poisoned"))? = Some((tape, out));
        Ok((CpuStorage::F32(y), Shape::from((n, c * h * w))))
    }

    fn backward(&self, dy: &Tensor, want_input: bool) -> Result<(Option<Vec<f32>>, Grads)> {
        let tape = self.tape.lock().map_err(|_| op_err("tape op: lock poisoned"))?;
        let (tape, out) = tape.as_ref().ok_or_else(|| op_err("tape op: backward before forward"))?;
        tape.backward(*out, with_f32(dy, |d| Ok(d.to_vec()))?, want_input)
    }
}

/// x -> output of a frozen network.
struct FrozenOp(Recorded);

impl CustomOp1 for FrozenOp {
    fn name(&self) -> &'static str {
        "robal-frozen-network"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.0.forward(s, l)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (dx, _) = self.0.backward(dy, true)?;
        let dx = dx.ok_or_else(|| op_err("tape op: no input gradient"))?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Parameter gradients computed by a [`TrainOp`], waiting for their [`Tie`]s.
type Stash = Arc<Mutex<HashMap<TensorId, Vec<f32>>>>;

fn lock(stash: &Stash) -> Result<std::sync::MutexGuard<'_, HashMap<TensorId, Vec<f32>>>> {
    stash.lock().map_err(|_| op_err("tape op: gradient stash lock poisoned"))
}

/// p -> [0]: ties a parameter to a [`TrainOp`] without copying it; its backward pass
/// returns the gradient the op left for p.
struct Tie(Stash);

impl CustomOp1 for Tie {
    fn name(&self) -> &'static str {
        "robal-tape-parameter"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(1)))
    }

    fn bwd(&self, p: &Tensor, _res: &Tensor, _dy: &Tensor) -> Result<Option<Tensor>> {
        lock(&self.0)?.remove(&p.id()).map(|g| Tensor::from_vec(g, p.shape(), p.device())).transpose()
    }
}

/// (x, the parameters' ties) -> output of a network in training.
struct TrainOp(Recorded, Stash);

impl CustomOp2 for TrainOp {
    fn name(&self) -> &'static str {
        "robal-train-network"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, _s2: &CpuStorage, _l2: &Layout) -> Result<(CpuStorage, Shape)> {
        // The parameters are read from their own tensors; the ties only route their
        // gradients.
        self.0.forward(s1, l1)
    }

    fn bwd(&self, x: &Tensor, ties: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams) = self.0.backward(dy, x.track_op())?;
        let mut stash = lock(&self.1)?;
        for (p, g) in self.0.params.iter().zip(dparams) {
            if let Some(g) = g {
                stash.insert(p.id(), g);
            }
        }
        let dx = dx.map(|d| Tensor::from_vec(d, x.shape(), x.device())).transpose()?;
        // Zeros, but present: candle then runs the ties' backward passes.
        Ok((dx, Some(ties.zeros_like()?)))
    }
}

/// Run a frozen network on `x` (N, C, H, W), an f32 CPU tensor: `build` computes it
/// step by step on a [`Tape`] from the input value and returns the output value (N,
/// C', H', W'), returned flattened to (N, C' H' W') (a pooled feature when H' = W' =
/// 1). Differentiable in `x` only, through the tape's own backward pass; every tensor
/// `build` reads is a constant.
pub fn frozen_forward(
    x: &Tensor,
    build: impl Fn(&mut Tape, ValueId) -> Result<ValueId> + Send + Sync + 'static,
) -> Result<Tensor> {
    let op = Recorded { build: Box::new(build), params: Vec::new(), tape: Mutex::new(None) };
    x.contiguous()?.apply_op1(FrozenOp(op))
}

/// Run a network in training on `x` like [`frozen_forward`], differentiable in `x` and
/// in `params`: every convolution weight and BatchNorm γ/β that `build` uses must be
/// one of `params` (f32 tensors; others are an error) and gets its gradient from the
/// tape's backward pass (handed to candle through one [`Tie`] per parameter).
pub fn train_forward(
    x: &Tensor,
    params: &[Tensor],
    build: impl Fn(&mut Tape, ValueId) -> Result<ValueId> + Send + Sync + 'static,
) -> Result<Tensor> {
    if params.is_empty() {
        return Err(op_err("train_forward: no parameters (use frozen_forward)"));
    }
    let mut seen = std::collections::HashSet::new();
    let params: Vec<Tensor> = params.iter().filter(|p| seen.insert(p.id())).cloned().collect();
    let stash: Stash = Arc::new(Mutex::new(HashMap::new()));
    let ties = params.iter().map(|p| p.apply_op1(Tie(stash.clone()))).collect::<Result<Vec<_>>>()?;
    let ties = Tensor::cat(&ties, 0)?;
    let op = Recorded { build: Box::new(build), params, tape: Mutex::new(None) };
    x.contiguous()?.apply_op2(&ties, TrainOp(op, stash))
}
