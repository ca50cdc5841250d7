//! A network recorded on a [`Tape`] as one candle op, so that it joins ordinary
//! autograd: x -> output for a frozen network (evaluation), (x, parameters) -> output
//! for one being trained.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::tape::{Tape, ValueId};
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

    fn backward(&self, dy: &Tensor, want_input: bool) -> Result<(Option<Vec<f32>>, Vec<f32>)> {
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

/// (x, all parameters flattened and concatenated) -> output of a network in training.
struct TrainOp(Recorded);

impl CustomOp2 for TrainOp {
    fn name(&self) -> &'static str {
        "robal-train-network"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, _s2: &CpuStorage, _l2: &Layout) -> Result<(CpuStorage, Shape)> {
        // The parameters are read from their own tensors; the flat operand only routes
        // their gradient back through candle's `cat`.
        self.0.forward(s1, l1)
    }

    fn bwd(&self, x: &Tensor, flat: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dparams) = self.0.backward(dy, x.track_op())?;
        let dx = dx.map(|d| Tensor::from_vec(d, x.shape(), x.device())).transpose()?;
        let dflat = flat.track_op().then(|| Tensor::from_vec(dparams, flat.shape(), flat.device())).transpose()?;
        Ok((dx, dflat))
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
/// tape's backward pass. The parameters are also concatenated into one tensor (a copy
/// per call), through which candle routes their gradients.
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
    let flat = Tensor::cat(&params.iter().map(|p| p.flatten_all()).collect::<Result<Vec<_>>>()?, 0)?;
    let op = Recorded { build: Box::new(build), params, tape: Mutex::new(None) };
    x.contiguous()?.apply_op2(&flat, TrainOp(op))
}
