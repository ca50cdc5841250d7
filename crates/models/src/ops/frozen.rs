//! A frozen (evaluation-mode) backbone as one autograd node.
//!
//! An attack step needs only ∂loss/∂x through a backbone whose parameters are
//! constants. Run through candle's autograd, every layer is a node of its own: each
//! intermediate gradient is allocated, zero-filled and added into, and every
//! BatchNorm-ReLU is a pass over memory forward and backward. Here the backbone's
//! forward pass records a tape of its steps (a convolution whose input may first go
//! through a BatchNorm-ReLU applied while its column matrix is gathered, a per-channel
//! affine, a sum, a global average pool), and the backward pass walks the tape in
//! reverse, updating gradients in place. candle sees one op: image -> pooled feature.
//!
//! Backward rules, with g the gradient of a step's output:
//! - y = conv(pre(x), W), pre(x)_c = relu(a_c x + b_c): dx = a_c [a_c x + b_c > 0] · convᵀ(g, W);
//! - y = relu?(a_c x + b_c): dx = a_c [y > 0] g;
//! - y = relu?(u + v): du = dv = [y > 0] g;
//! - y[n, c] = mean_{h, w} x[n, c, h, w]: dx[n, c, h, w] = g[n, c] / (H W).

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::{forward_pre, input_grad, Geometry};
use super::{f32_slice, op_err, with_f32};

/// Elements per rayon task of the element-wise passes.
const CHUNK: usize = 1 << 14;

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

    fn channels(&self) -> usize {
        self.a.len()
    }
}

/// A value of a [`FrozenGraph`]: an (N, C, H, W) activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueId(usize);

struct Value {
    /// Emptied after the forward pass unless the backward pass reads it.
    data: Vec<f32>,
    dims: [usize; 4],
}

enum Step {
    Conv { x: ValueId, y: ValueId, weight: Tensor, geometry: Geometry, pre: Option<Affine> },
    Affine { x: ValueId, y: ValueId, f: Affine },
    Add { u: ValueId, v: ValueId, y: ValueId, relu: bool },
    Pool { x: ValueId, y: ValueId },
}

/// The forward pass of a frozen network, computed step by step and recorded for
/// its input-gradient pass (see the module documentation). Value 0 is the input.
pub struct FrozenGraph {
    values: Vec<Value>,
    steps: Vec<Step>,
}

impl FrozenGraph {
    fn new(x: Vec<f32>, dims: [usize; 4]) -> (Self, ValueId) {
        (Self { values: vec![Value { data: x, dims }], steps: Vec::new() }, ValueId(0))
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

    fn check_channels(&self, x: ValueId, f: &Affine, what: &str) -> Result<()> {
        let c = self.dims(x)[1];
        if f.channels() != c || f.b.len() != c {
            return Err(op_err(format!("{what}: {c} channels but an affine map of {} / {}", f.a.len(), f.b.len())));
        }
        Ok(())
    }

    /// y = conv(pre(x), W) with zero padding `pad` and stride `stride`; `weight` (O, C,
    /// k, k) is a constant. `pre` (an evaluation-mode BatchNorm-ReLU of x) is applied
    /// while the convolution gathers its input, so pre(x) is never stored.
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
            self.check_channels(x, f, "frozen conv input")?;
        }
        let y = with_f32(weight, |w| Ok(forward_pre(&self.values[x.0].data, w, &geometry, pre.as_ref())))?;
        let dims = [geometry.n, geometry.o, geometry.ho, geometry.wo];
        Ok(self.push(y, dims, |y| Step::Conv { x, y, weight: weight.detach(), geometry, pre }))
    }

    /// y = relu?(a_c x + b_c) per channel.
    pub fn affine(&mut self, x: ValueId, f: Affine) -> Result<ValueId> {
        self.check_channels(x, &f, "frozen affine")?;
        let [_, c, h, w] = self.dims(x);
        let xs = &self.values[x.0].data;
        let mut y = vec![0f32; xs.len()];
        let plane = (h * w).max(1);
        y.par_chunks_mut(plane).zip(xs.par_chunks(plane)).enumerate().for_each(|(row, (o, xi))| {
            let (a, b) = (f.a[row % c], f.b[row % c]);
            o.iter_mut().zip(xi).for_each(|(o, &v)| *o = f.apply(a, b, v));
        });
        Ok(self.push(y, self.dims(x), |y| Step::Affine { x, y, f }))
    }

    /// y = u + v, followed by a ReLU when `relu`.
    pub fn add(&mut self, u: ValueId, v: ValueId, relu: bool) -> Result<ValueId> {
        if self.dims(u) != self.dims(v) {
            return Err(op_err(format!("frozen add: shapes {:?} and {:?} differ", self.dims(u), self.dims(v))));
        }
        let (us, vs) = (&self.values[u.0].data, &self.values[v.0].data);
        let mut y = vec![0f32; us.len()];
        y.par_chunks_mut(CHUNK).zip(us.par_chunks(CHUNK).zip(vs.par_chunks(CHUNK))).for_each(|(y, (a, b))| {
            if relu {
                y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = (a + b).max(0.0));
            } else {
                y.iter_mut().zip(a.iter().zip(b)).for_each(|(y, (a, b))| *y = a + b);
            }
        });
        Ok(self.push(y, self.dims(u), |y| Step::Add { u, v, y, relu }))
    }

    /// Global average pool: y (N, C, 1, 1) = mean over H and W.
    pub fn pool(&mut self, x: ValueId) -> ValueId {
        let [n, c, h, w] = self.dims(x);
        let plane = (h * w).max(1);
        let y = self.values[x.0].data.par_chunks(plane).map(|p| p.iter().sum::<f32>() / plane as f32).collect();
        self.push(y, [n, c, 1, 1], |y| Step::Pool { x, y })
    }

    /// Drop the values the backward pass does not read: the inputs of convolutions
    /// with a `pre` map (for its ReLU mask) and the outputs of ReLUs are kept.
    fn keep_for_backward(&mut self) {
        let mut keep = vec![false; self.values.len()];
        for s in &self.steps {
            match s {
                Step::Conv { x, pre: Some(_), .. } => keep[x.0] = true,
                Step::Affine { y, f, .. } if f.relu => keep[y.0] = true,
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

    /// The gradient with respect to the input (value 0) of <g, out>.
    fn backward(&self, out: ValueId, g: Vec<f32>) -> Result<Vec<f32>> {
        let mut grads: Vec<Option<Vec<f32>>> = (0..self.values.len()).map(|_| None).collect();
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
                Step::Add { u, v, y, relu } => {
                    let Some(mut g) = grads[y.0].take() else { continue };
                    if *relu {
                        mask_positive(&mut g, &self.values[y.0].data);
                    }
                    accumulate_copy(&mut grads[u.0], &g);
                    accumulate(&mut grads[v.0], g);
                }
                Step::Affine { x, y, f } => {
                    let Some(mut g) = grads[y.0].take() else { continue };
                    let [_, c, h, w] = self.dims(*x);
                    let ys = &self.values[y.0].data;
                    let plane = (h * w).max(1);
                    g.par_chunks_mut(plane).enumerate().for_each(|(row, gr)| {
                        let a = f.a[row % c];
                        if f.relu {
                            let yr = &ys[row * plane..(row + 1) * plane];
                            gr.iter_mut().zip(yr).for_each(|(g, &y)| *g = if y > 0.0 { a * *g } else { 0.0 });
                        } else {
                            gr.iter_mut().for_each(|g| *g *= a);
                        }
                    });
                    accumulate(&mut grads[x.0], g);
                }
                Step::Conv { x, y, weight, geometry, pre } => {
                    let Some(g) = grads[y.0].take() else { continue };
                    let mut dx = with_f32(weight, |w| Ok(input_grad(&g, w, geometry)))?;
                    drop(g);
                    if let Some(f) = pre {
                        pre_backward(&mut dx, &self.values[x.0].data, f, geometry.h * geometry.w);
                    }
                    accumulate(&mut grads[x.0], dx);
                }
            }
        }
        Ok(grads[0].take().unwrap_or_else(|| vec![0f32; self.values[0].dims.iter().product()]))
    }
}

/// g *= [y > 0].
fn mask_positive(g: &mut [f32], y: &[f32]) {
    g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| {
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
    });
}

/// dz -> dx = a_c [a_c x + b_c > 0] dz (just a_c dz without a ReLU), in place.
fn pre_backward(dz: &mut [f32], x: &[f32], f: &Affine, plane: usize) {
    let c = f.channels();
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

type Build = dyn Fn(&mut FrozenGraph, ValueId) -> Result<ValueId> + Send + Sync;

/// The op image -> feature; it keeps its tape for the backward pass.
struct FrozenOp {
    build: Box<Build>,
    tape: Mutex<Option<(FrozenGraph, ValueId)>>,
}

impl CustomOp1 for FrozenOp {
    fn name(&self) -> &'static str {
        "robal-frozen-backbone"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims: [usize; 4] = l
            .dims()
            .try_into()
            .map_err(|_| op_err(format!("frozen backbone: expected an (N, C, H, W) input, got {:?}", l.dims())))?;
        let (mut graph, input) = FrozenGraph::new(f32_slice(s, l)?.to_vec(), dims);
        let out = (self.build)(&mut graph, input)?;
        let [n, c, h, w] = graph.dims(out);
        let y = graph.values[out.0].data.clone();
        graph.keep_for_backward();
        *self.tape.lock().map_err(|_| op_err("frozen backbone: tape lock poisoned"))? = Some((graph, out));
        Ok((CpuStorage::F32(y), Shape::from((n, c * h * w))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let tape = self.tape.lock().map_err(|_| op_err("frozen backbone: tape lock poisoned"))?;
        let (graph, out) = tape.as_ref().ok_or_else(|| op_err("frozen backbone: backward before forward"))?;
        let dx = graph.backward(*out, with_f32(dy, |d| Ok(d.to_vec()))?)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

/// Run a frozen network on `x` (N, C, H, W), an f32 CPU tensor: `build` computes it
/// step by step on a [`FrozenGraph`] from the input value and returns the output
/// value (N, C', H', W'), returned flattened to (N, C' H' W') (a pooled feature when
/// H' = W' = 1). Differentiable
/// in `x` only, through the graph's own backward pass (the parameters are constants).
pub fn frozen_forward(
    x: &Tensor,
    build: impl Fn(&mut FrozenGraph, ValueId) -> Result<ValueId> + Send + Sync + 'static,
) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenOp { build: Box::new(build), tape: Mutex::new(None) })
}
