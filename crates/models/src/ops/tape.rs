//! A backbone's forward pass recorded step by step, with its own backward pass.
//!
//! Run through candle's autograd, every layer is a node of its own: each
//! intermediate gradient is allocated, zero-filled and added into, and every
//! BatchNorm-ReLU is a pass over memory forward and backward. A [`Tape`] records the
//! steps of a backbone (convolution, BatchNorm, per-channel affine, sum, dropout
//! mask, global average pool) on plain buffers and walks them in reverse with the
//! gradients updated in place; candle sees one op (see [`super::frozen_forward`] and
//! [`super::train_forward`]). In evaluation mode a BatchNorm-ReLU that feeds a
//! convolution runs inside it (applied while the column matrix is gathered).
//!
//! Backward rules, with g the gradient of a step's output:
//! - y = conv(pre(x), W), pre(x)_c = relu(a_c x + b_c): dx = a_c [a_c x + b_c > 0] · convᵀ(g, W),
//!   and, for a parameter W (no `pre`), dW = Σ_n g_n · col(x_n)ᵀ;
//! - y = relu?(a_c x + b_c) (fixed a, b): dx = a_c [y > 0] g;
//! - y = relu?(BatchNorm_batch(x)): see [`super::batch_norm_train`] (dx, dγ, dβ);
//! - y = relu?(u + v): du = dv = [y > 0] g;
//! - y = m ⊙ x (a dropout mask): dx = m ⊙ g;
//! - y[n, c] = mean_{h, w} x[n, c, h, w]: dx[n, c, h, w] = g[n, c] / (H W);
//! - y = x with k zero rows and columns appended (bottom, right): dx = g without them.

use std::collections::HashMap;

use candle_core::{Result, Tensor, TensorId};
use rayon::prelude::*;

use super::affine::Affine;
use super::batchnorm::{affine, affine_backward, channel_stats, rstd, train_affine, TrainGrad};
use super::conv::{forward_pre, input_grad, weight_grad};
use super::im2col::Geometry;
use super::residual::{mask_positive, sum};
use super::{op_err, with_f32, BatchStats};

/// Elements per rayon task of the element-wise passes.
const CHUNK: usize = 1 << 14;

/// A value of a [`Tape`]: an (N, C, H, W) activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueId(usize);

struct Value {
    /// Emptied after the forward pass unless the backward pass reads it.
    data: Vec<f32>,
    dims: [usize; 4],
}

/// The index of a parameter in the list a training tape was made with.
type Slot = usize;

enum Step {
    Conv { x: ValueId, y: ValueId, weight: Tensor, slot: Option<Slot>, geometry: Geometry, pre: Option<Affine> },
    Affine { x: ValueId, y: ValueId, f: Affine },
    BatchNorm { x: ValueId, y: ValueId, mean: Vec<f32>, rstd: Vec<f32>, gamma: Vec<f32>, relu: bool, slots: [Slot; 2] },
    Add { u: ValueId, v: ValueId, y: ValueId, relu: bool },
    Mask { x: ValueId, y: ValueId, mask: Vec<f32> },
    Pool { x: ValueId, y: ValueId },
    PadAfter { x: ValueId, y: ValueId, n: usize },
    MaxPool { x: ValueId, y: ValueId, argmax: Vec<usize> },
}

/// The forward pass of a network, computed step by step on f32 buffers and recorded
/// for its backward pass (see the module documentation). Value 0 is the input.
///
/// Parameters: a tape made for training knows the network's parameters (their
/// tensor ids and places in one flat gradient); a convolution weight or BatchNorm γ/β
/// that is one of them gets a gradient, any other tensor is a constant. A tape for
/// evaluation has none.
pub struct Tape {
    values: Vec<Value>,
    steps: Vec<Step>,
    params: HashMap<TensorId, Slot>,
}

impl Tape {
    /// A tape starting from input `x` (N, C, H, W), with the parameters whose gradients
    /// it computes.
    pub(super) fn new(x: Vec<f32>, dims: [usize; 4], params: &[Tensor]) -> (Self, ValueId) {
        let map = params.iter().enumerate().map(|(i, p)| (p.id(), i)).collect();
        let tape = Self { values: vec![Value { data: x, dims }], steps: Vec::new(), params: map };
        (tape, ValueId(0))
    }

    fn push(&mut self, data: Vec<f32>, dims: [usize; 4], step: impl FnOnce(ValueId) -> Step) -> ValueId {
        let y = ValueId(self.values.len());
        self.values.push(Value { data, dims });
        self.steps.push(step(y));
        y
    }

    /// (N, C, H, W) of a value.
    pub fn dims(&self, v: ValueId) -> [usize; 4] {
        self.values[v.0].dims
    }

    pub(super) fn data(&self, v: ValueId) -> &[f32] {
        &self.values[v.0].data
    }

    /// Whether this tape computes parameter gradients (it was made for training).
    pub fn trains(&self) -> bool {
        !self.params.is_empty()
    }

    /// The gradient slot of `t` if it is a parameter of a training tape.
    fn slot(&self, t: &Tensor, what: &str) -> Result<Option<Slot>> {
        match self.params.get(&t.id()) {
            Some(&s) => Ok(Some(s)),
            None if self.trains() => Err(op_err(format!("tape: the {what} is not a registered parameter"))),
            None => Ok(None),
        }
    }

    fn check_channels(&self, x: ValueId, len: usize, what: &str) -> Result<usize> {
        let c = self.dims(x)[1];
        if len != c {
            return Err(op_err(format!("{what}: the input has {c} channels, the layer {len}")));
        }
        Ok(c)
    }

    /// y = conv(pre(x), W) with zero padding `pad` and stride `stride`, weight (O, C,
    /// k, k). `pre` (an evaluation-mode BatchNorm-ReLU of x) is applied while the
    /// convolution gathers its input, so pre(x) is never stored; it is for constant
    /// weights only.
    pub fn conv(
        &mut self,
        x: ValueId,
        weight: &Tensor,
        stride: usize,
        pad: usize,
        pre: Option<Affine>,
    ) -> Result<ValueId> {
        let geometry = Geometry::new(&self.dims(x), weight.dims(), stride, pad)?;
        if let Some(f) = &pre {
            self.check_channels(x, f.a.len().min(f.b.len()), "tape conv input map")?;
        }
        let slot = self.slot(weight, "convolution weight")?;
        if slot.is_some() && pre.is_some() {
            return Err(op_err("tape conv: a fused input map is for constant weights only"));
        }
        let y = with_f32(weight, |w| Ok(forward_pre(self.data(x), w, &geometry, pre.as_ref())))?;
        let dims = [geometry.n, geometry.o, geometry.ho, geometry.wo];
        Ok(self.push(y, dims, |y| Step::Conv { x, y, weight: weight.detach(), slot, geometry, pre }))
    }

    /// y = relu?(a_c x + b_c) per channel, a and b constants.
    pub fn affine(&mut self, x: ValueId, f: Affine) -> Result<ValueId> {
        let c = self.check_channels(x, f.a.len().min(f.b.len()), "tape affine")?;
        let [n, _, h, w] = self.dims(x);
        let y = affine(self.data(x), (n, c, h * w), &f.a, &f.b, f.relu);
        Ok(self.push(y, self.dims(x), |y| Step::Affine { x, y, f }))
    }

    /// Training-mode BatchNorm (+ ReLU) of x with the batch's statistics, which it
    /// returns (for the running averages): y = relu?(γ (x - μ) / √(σ² + ε) + β), σ²
    /// biased. γ and β (C,) must be parameters of the tape.
    pub fn batch_norm(
        &mut self,
        x: ValueId,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        relu: bool,
    ) -> Result<(ValueId, BatchStats)> {
        let [n, c, h, w] = self.dims(x);
        let slots = match (self.slot(gamma, "BatchNorm weight")?, self.slot(beta, "BatchNorm bias")?) {
            (Some(g), Some(b)) => [g, b],
            _ => return Err(op_err("tape batch_norm: γ and β must be parameters of a training tape")),
        };
        let (g, b) = (gamma.to_vec1::<f32>()?, beta.to_vec1::<f32>()?);
        self.check_channels(x, g.len().min(b.len()), "tape batch_norm")?;
        let (mean, var) = channel_stats(self.data(x), (n, c, h * w));
        let rstd = rstd(&var, eps);
        let (a, shift) = train_affine(&g, &b, &mean, &rstd);
        let y = affine(self.data(x), (n, c, h * w), &a, &shift, relu);
        let stats = BatchStats { mean: mean.clone(), var, count: n * h * w };
        let id = self.push(y, [n, c, h, w], |y| Step::BatchNorm { x, y, mean, rstd, gamma: g, relu, slots });
        Ok((id, stats))
    }

    /// y = u + v, followed by a ReLU when `relu`.
    pub fn add(&mut self, u: ValueId, v: ValueId, relu: bool) -> Result<ValueId> {
        if self.dims(u) != self.dims(v) {
            return Err(op_err(format!("tape add: shapes {:?} and {:?} differ", self.dims(u), self.dims(v))));
        }
        let y = sum(self.data(u), self.data(v), relu);
        Ok(self.push(y, self.dims(u), |y| Step::Add { u, v, y, relu }))
    }

    /// y = m ⊙ x for a mask of x's size (a dropout mask, kept entries scaled by 1/(1-p)).
    pub fn mask(&mut self, x: ValueId, mask: Vec<f32>) -> Result<ValueId> {
        if mask.len() != self.data(x).len() {
            return Err(op_err(format!("tape mask: {} entries for a value of {:?}", mask.len(), self.dims(x))));
        }
        let y = self.data(x).iter().zip(&mask).map(|(v, m)| v * m).collect();
        Ok(self.push(y, self.dims(x), |y| Step::Mask { x, y, mask }))
    }

    /// Max-pool (`pool`'s window, stride and -inf padding); the backward pass sends each
    /// output's gradient to its maximum (PyTorch's tie rule, see [`super::max_pool2d`]).
    pub fn max_pool(&mut self, x: ValueId, pool: super::Pool2d) -> Result<ValueId> {
        let [n, c, h, w] = self.dims(x);
        let p = pool.forward_with_indices(self.data(x), (n, c, h, w))?;
        let (ho, wo) = p.out_hw;
        Ok(self.push(p.out, [n, c, ho, wo], |y| Step::MaxPool { x, y, argmax: p.argmax }))
    }

    /// Global average pool: y (N, C, 1, 1) = mean over H and W.
    pub fn pool(&mut self, x: ValueId) -> ValueId {
        let [n, c, h, w] = self.dims(x);
        let plane = (h * w).max(1);
        let y = self.data(x).par_chunks(plane).map(|p| p.iter().sum::<f32>() / plane as f32).collect();
        self.push(y, [n, c, 1, 1], |y| Step::Pool { x, y })
    }

    /// y = x with `n` zero rows appended at the bottom and `n` zero columns at the right
    /// (the 'SAME' padding of a stride-2 convolution in TensorFlow-style networks).
    pub fn pad_after(&mut self, x: ValueId, n: usize) -> ValueId {
        let [b, c, h, w] = self.dims(x);
        let (ho, wo) = (h + n, w + n);
        let mut y = vec![0f32; b * c * ho * wo];
        y.par_chunks_mut(ho * wo).zip(self.data(x).par_chunks(h * w)).for_each(|(dst, src)| {
            for (r, row) in src.chunks_exact(w).enumerate() {
                dst[r * wo..r * wo + w].copy_from_slice(row);
            }
        });
        self.push(y, [b, c, ho, wo], |y| Step::PadAfter { x, y, n })
    }

    /// Drop the values the backward pass does not read (it reads the inputs of
    /// convolutions with a `pre` map or a weight gradient, the inputs of BatchNorms, and
    /// the outputs of ReLUs).
    pub(super) fn keep_for_backward(&mut self) {
        let mut keep = vec![false; self.values.len()];
        for s in &self.steps {
            match s {
                Step::Conv { x, pre, slot, .. } if pre.is_some() || slot.is_some() => keep[x.0] = true,
                Step::Affine { y, f, .. } if f.relu => keep[y.0] = true,
                Step::BatchNorm { x, y, .. } => (keep[x.0], keep[y.0]) = (true, true),
                Step::Add { y, relu: true, .. } => keep[y.0] = true,
                _ => {}
            }
        }
        for (v, keep) in self.values.iter_mut().zip(keep) {
            if !keep {
                v.data = Vec::new();
            }
        }
    }

    /// Gradients of <g, out>: with respect to the input (value 0) when `want_input`, and
    /// of each parameter, in the order the tape was made with (`None` for a parameter
    /// the network did not use; none for an evaluation tape).
    pub(super) fn backward(&self, out: ValueId, g: Vec<f32>, want_input: bool) -> Result<(Option<Vec<f32>>, Grads)> {
        let mut grads: Grads = (0..self.values.len()).map(|_| None).collect();
        let mut dparams: Grads = (0..self.params.len()).map(|_| None).collect();
        grads[out.0] = Some(g);
        for step in self.steps.iter().rev() {
            match step {
                Step::Pool { x, y } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    let [_, _, h, w] = self.dims(*x);
                    let plane = (h * w).max(1);
                    let mut dx = vec![0f32; g.len() * plane];
                    dx.par_chunks_mut(plane).zip(g.par_iter()).for_each(|(o, &gv)| o.fill(gv / plane as f32));
                    accumulate(&mut grads[x.0], dx);
                }
                Step::PadAfter { x, y, n } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    let [_, _, h, w] = self.dims(*x);
                    let wo = w + n;
                    let mut dx = vec![0f32; g.len() / ((h + n) * wo) * h * w];
                    dx.par_chunks_mut(h * w).zip(g.par_chunks((h + n) * wo)).for_each(|(dst, src)| {
                        for (r, row) in dst.chunks_exact_mut(w).enumerate() {
                            row.copy_from_slice(&src[r * wo..r * wo + w]);
                        }
                    });
                    accumulate(&mut grads[x.0], dx);
                }
                Step::MaxPool { x, y, argmax } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    accumulate(&mut grads[x.0], super::pool::scatter_to_maxima(argmax, &g, self.data_len(*x)));
                }
                Step::Add { u, v, y, relu } => {
                    let Some(mut g) = grads[y.0].take() else { continue };
                    if *relu {
                        mask_positive(&mut g, self.data(*y));
                    }
                    accumulate_copy(&mut grads[u.0], &g);
                    accumulate(&mut grads[v.0], g);
                }
                Step::Mask { x, y, mask } => {
                    let Some(mut g) = grads[y.0].take() else { continue };
                    g.iter_mut().zip(mask).for_each(|(g, m)| *g *= m);
                    accumulate(&mut grads[x.0], g);
                }
                Step::Affine { x, y, f } => {
                    let Some(mut g) = grads[y.0].take() else { continue };
                    let [n, c, h, w] = self.dims(*x);
                    affine_backward(&mut g, self.data(*y), (n, c, h * w), &f.a, f.relu);
                    accumulate(&mut grads[x.0], g);
                }
                Step::BatchNorm { x, y, mean, rstd, gamma, relu, slots } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    let [n, c, h, w] = self.dims(*x);
                    let want_dx = x.0 != 0 || want_input;
                    let grad = TrainGrad { mean, rstd, gamma, relu: *relu };
                    let (dx, sums) = grad.backward(self.data(*x), self.data(*y), &g, (n, c, h * w), want_dx);
                    let (dbeta, dgamma): (Vec<f32>, Vec<f32>) = sums.into_iter().unzip();
                    accumulate(&mut dparams[slots[0]], dgamma);
                    accumulate(&mut dparams[slots[1]], dbeta);
                    if let Some(dx) = dx {
                        accumulate(&mut grads[x.0], dx);
                    }
                }
                Step::Conv { x, y, weight, slot, geometry, pre } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    if let Some(slot) = slot {
                        accumulate(&mut dparams[*slot], weight_grad(self.data(*x), &g, geometry));
                    }
                    if x.0 == 0 && !want_input {
                        continue;
                    }
                    let mut dx = with_f32(weight, |w| Ok(input_grad(&g, w, geometry)))?;
                    drop(g);
                    if let Some(f) = pre {
                        pre_backward(&mut dx, self.data(*x), f, geometry.h * geometry.w);
                    }
                    accumulate(&mut grads[x.0], dx);
                }
            }
        }
        let dx = want_input.then(|| grads[0].take().unwrap_or_else(|| vec![0f32; self.data_len(ValueId(0))]));
        Ok((dx, dparams))
    }

    fn data_len(&self, v: ValueId) -> usize {
        self.dims(v).iter().product()
    }
}

/// Gradients of values or parameters, `None` where nothing has flowed.
pub(super) type Grads = Vec<Option<Vec<f32>>>;

/// dz -> dx = a_c [a_c x + b_c > 0] dz (just a_c dz without a ReLU), in place.
fn pre_backward(dz: &mut [f32], x: &[f32], f: &Affine, plane: usize) {
    let c = f.a.len();
    let plane = plane.max(1);
    dz.par_chunks_mut(plane).zip(x.par_chunks(plane)).enumerate().for_each(|(row, (d, xr))| {
        let (a, b) = (f.a[row % c], f.b[row % c]);
        if f.relu {
            d.iter_mut().zip(xr).for_each(|(d, &v)| *d = if v * a + b > 0.0 { a * *d } else { 0.0 });
        } else {
            d.iter_mut().for_each(|d| *d *= a);
        }
    });
}

fn add_into(acc: &mut [f32], g: &[f32]) {
    acc.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(a, g)| {
        a.iter_mut().zip(g).for_each(|(a, &g)| *a += g);
    });
}

/// grad += g, taking g over when there is no gradient yet.
fn accumulate(grad: &mut Option<Vec<f32>>, g: Vec<f32>) {
    match grad {
        Some(acc) => add_into(acc, &g),
        None => *grad = Some(g),
    }
}

/// grad += g, copying g when there is no gradient yet.
fn accumulate_copy(grad: &mut Option<Vec<f32>>, g: &[f32]) {
    match grad {
        Some(acc) => add_into(acc, g),
        None => *grad = Some(g.to_vec()),
    }
}
