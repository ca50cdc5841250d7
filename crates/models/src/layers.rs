//! The layers every backbone is built from, with PyTorch's semantics and the
//! reference implementation's initialisation.

use candle_core::{DType, Tensor, Var, D};

use crate::error::{invalid, Result};
use crate::ops::{self, Affine, Kernels, Tape, ValueId};
use crate::store::{Init, StorePath};

/// Whether a forward pass trains (batch statistics, running-stat updates, dropout)
/// or evaluates (running statistics, no state change, and a frozen backbone: its
/// convolution and BatchNorm parameters are read as constants, so a backward pass
/// computes only the gradients an attack needs, with respect to the input, and
/// those of the head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Training mode.
    Train,
    /// Evaluation mode: never changes any state of the model; backbone parameters
    /// receive no gradient.
    Eval,
}

impl Mode {
    /// A parameter as this mode uses it: tracked by autograd in training, a constant
    /// (a detached view of the same storage, nothing copied) in evaluation.
    fn param(self, p: &Tensor) -> Tensor {
        match self {
            Mode::Train => p.clone(),
            Mode::Eval => p.detach(),
        }
    }
}

/// 2-D convolution without bias: weight (out, in, k, k), init Normal(0, 2 / (k*k*out)).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// A `k` x `k` convolution `cin -> cout` with the given stride and padding.
    pub fn new(p: &StorePath, cin: usize, cout: usize, k: usize, stride: usize, padding: usize) -> Result<Self> {
        let std = (2.0 / (k * k * cout) as f64).sqrt();
        let weight = p.param("weight", &[cout, cin, k, k], Init::Normal { std })?;
        Ok(Self { weight, stride, padding })
    }

    /// y = conv(x, W) with the layer's stride and zero padding (W frozen in
    /// evaluation mode; see [`Mode`]).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, mode, Kernels::Robal)
    }

    /// [`Self::forward`] with the given kernels.
    pub fn forward_with(&self, x: &Tensor, mode: Mode, kernels: Kernels) -> Result<Tensor> {
        let w = mode.param(&self.weight);
        Ok(match kernels {
            Kernels::Robal => crate::ops::conv2d(x, &w, self.stride, self.padding)?,
            Kernels::Candle => x.conv2d(&w, self.padding, self.stride, 1, 1)?,
        })
    }

    /// y = conv(pre(x), W) as a step of a tape (W a parameter of a training tape, a
    /// constant of an evaluation one; `pre` a pending evaluation-mode BatchNorm-ReLU).
    pub(crate) fn tape(&self, t: &mut Tape, x: ValueId, pre: Option<Affine>) -> candle_core::Result<ValueId> {
        t.conv(x, &self.weight, self.stride, self.padding, pre)
    }
}

/// BatchNorm over (N, H, W) per channel with affine weight (init 1) and bias (init 0).
///
/// Train: y = (x - mean_b) / sqrt(var_b + eps) * w + b with the biased batch variance,
/// and running_mean <- (1 - m) running_mean + m mean_b,
/// running_var <- (1 - m) running_var + m var_b * n / (n - 1), n = N*H*W (PyTorch's rule).
/// Eval: the same with running statistics; nothing changes.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

impl BatchNorm2d {
    /// BatchNorm over `c` channels, momentum 0.1, eps 1e-5.
    pub fn new(p: &StorePath, c: usize) -> Result<Self> {
        Self::with_momentum(p, c, 0.1)
    }

    /// BatchNorm over `c` channels with running averages r <- (1 - m) r + m batch
    /// (`momentum` m; 0.01 in DeepMind-style networks), eps 1e-5.
    pub fn with_momentum(p: &StorePath, c: usize, momentum: f64) -> Result<Self> {
        if !(momentum > 0.0 && momentum <= 1.0) {
            return Err(invalid("BatchNorm momentum", format!("{momentum}: expected (0, 1]")));
        }
        Ok(Self {
            weight: p.param("weight", &[c], Init::Const(1.0))?,
            bias: p.param("bias", &[c], Init::Const(0.0))?,
            running_mean: p.buffer("running_mean", &[c], Init::Const(0.0))?,
            running_var: p.buffer("running_var", &[c], Init::Const(1.0))?,
            momentum,
            eps: 1e-5,
        })
    }

    /// Normalise `x` (N, C, H, W) or (N, C).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, mode, false, Kernels::Robal)
    }

    /// relu(BatchNorm(x)), fused into one pass on the CPU.
    pub fn forward_relu(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.forward_with(x, mode, true, Kernels::Robal)
    }

    /// relu?(BatchNorm(x)) with the given kernels.
    pub fn forward_with(&self, x: &Tensor, mode: Mode, relu: bool, kernels: Kernels) -> Result<Tensor> {
        if kernels == Kernels::Candle || !ops::kernels_apply(x) || x.rank() < 2 {
            let y = self.normalise_with_tensor_ops(x, mode)?;
            return Ok(if relu { y.relu()? } else { y });
        }
        match mode {
            Mode::Train => {
                let stats = ops::batch_stats(x)?;
                self.update_running(&stats)?;
                Ok(ops::batch_norm_train(x, &self.weight, &self.bias, &stats, self.eps, relu)?)
            }
            Mode::Eval => {
                let f = self.affine(relu)?;
                Ok(ops::batch_norm_eval_affine(x, f)?)
            }
        }
    }

    /// The evaluation-mode map as a per-channel affine (+ ReLU when `relu`):
    /// a = w / √(running_var + eps), b = bias - running_mean a.
    pub(crate) fn affine(&self, relu: bool) -> candle_core::Result<Affine> {
        let v = |t: &Tensor| t.to_dtype(DType::F32).and_then(|t| t.to_vec1::<f32>());
        Ok(Affine::batch_norm(
            &v(&self.weight)?,
            &v(&self.bias)?,
            &v(self.running_mean.as_tensor())?,
            &v(self.running_var.as_tensor())?,
            self.eps,
            relu,
        ))
    }

    /// relu?(bn(x)) as a step of a tape: with the running statistics in evaluation
    /// mode; with the batch's in training, where the running averages are updated.
    pub(crate) fn tape(&self, t: &mut Tape, x: ValueId, relu: bool, mode: Mode) -> candle_core::Result<ValueId> {
        match mode {
            Mode::Eval => t.affine(x, self.affine(relu)?),
            Mode::Train => {
                let (y, stats) = t.batch_norm(x, &self.weight, &self.bias, self.eps, relu)?;
                self.update_running(&stats)?;
                Ok(y)
            }
        }
    }

    /// running_mean <- (1 - m) running_mean + m mean_b,
    /// running_var <- (1 - m) running_var + m var_b n / (n - 1).
    fn update_running(&self, stats: &ops::BatchStats) -> candle_core::Result<()> {
        let dev = self.running_mean.device();
        let (bm, bv) = (Tensor::new(stats.mean.as_slice(), dev)?, Tensor::new(stats.var.as_slice(), dev)?);
        self.update_running_from(&bm, &bv, stats.count)
    }

    /// [`Self::update_running`] from the batch mean and biased variance as (C,) tensors
    /// of any float dtype, over `count` values per channel.
    fn update_running_from(&self, mean: &Tensor, var: &Tensor, count: usize) -> candle_core::Result<()> {
        let (m, n) = (self.momentum, count as f64);
        let unbiased = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
        let dtype = self.running_mean.dtype();
        let (bm, bv) = (mean.to_dtype(dtype)?, var.to_dtype(dtype)?);
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (bm * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (bv * (m * unbiased))?)?)?;
        Ok(())
    }

    /// The same computation from candle's tensor ops (other devices and dtypes).
    fn normalise_with_tensor_ops(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let c = x.dim(1)?;
        let mut shape = vec![1usize; x.rank()];
        shape[1] = c;
        let (mean, var) = match mode {
            Mode::Train => {
                let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
                let n = x.elem_count() / c;
                let mean = x.mean_keepdim(dims.as_slice())?;
                let centred = x.broadcast_sub(&mean)?;
                let var = centred.sqr()?.mean_keepdim(dims.as_slice())?;
                self.update_running_from(&mean.detach().flatten_all()?, &var.detach().flatten_all()?, n)?;
                (mean, var)
            }
            Mode::Eval => (
                self.running_mean.as_detached_tensor().reshape(shape.as_slice())?,
                self.running_var.as_detached_tensor().reshape(shape.as_slice())?,
            ),
        };
        let (w, b) = (mode.param(&self.weight), mode.param(&self.bias));
        let scale = (var + self.eps)?.sqrt()?.recip()?.broadcast_mul(&w.reshape(shape.as_slice())?)?;
        Ok(x.broadcast_sub(&mean)?.broadcast_mul(&scale)?.broadcast_add(&b.reshape(shape.as_slice())?)?)
    }

    /// The running mean (a copy).
    pub fn running_mean(&self) -> Tensor {
        self.running_mean.as_detached_tensor()
    }

    /// The running variance (a copy).
    pub fn running_var(&self) -> Tensor {
        self.running_var.as_detached_tensor()
    }
}

/// Linear layer y = x W^T + b, weight (out, in) init Uniform(+-1/sqrt(in)) (PyTorch's
/// default), bias init 0 (the reference zeroes it).
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// A linear layer `din -> dout`.
    pub fn new(p: &StorePath, din: usize, dout: usize) -> Result<Self> {
        let bound = 1.0 / (din as f64).sqrt();
        Ok(Self {
            weight: p.param("weight", &[dout, din], Init::Uniform { bound })?,
            bias: p.param("bias", &[dout], Init::Const(0.0))?,
        })
    }

    /// x W^T + b.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?)
    }

    /// The weight (out, in).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias (out,).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
}

/// Global average pool (N, C, H, W) -> (N, C).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    Ok(x.mean(D::Minus1)?.mean(D::Minus1)?)
}

/// Inverted dropout with a mask drawn from `seed` (deterministic): in training mode
/// each element is zeroed with probability `p` and the rest scaled by 1/(1-p).
pub fn dropout(x: &Tensor, p: f64, mode: Mode, seed: u64) -> Result<Tensor> {
    if mode == Mode::Eval || p == 0.0 {
        return Ok(x.clone());
    }
    let mask = Tensor::from_vec(dropout_mask(x.elem_count(), p, seed), x.shape(), x.device())?;
    Ok((x * mask)?)
}

/// The mask of [`dropout`]: each of `len` entries 0 with probability `p`, else 1/(1-p),
/// drawn from `seed`.
pub(crate) fn dropout_mask(len: usize, p: f64, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    (0..len).map(|_| if rng.random_bool(p) { 0.0 } else { keep as f32 }).collect()
}
