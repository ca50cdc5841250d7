//! Models and data shared by the eval crate's tests.
#![allow(dead_code)]

use candle_core::{Device, Result, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use robal_attacks::{model::predict, Model};

/// A small tanh MLP on 1x4x4 inputs: z = out(a * W2 tanh(W1 (x - 0.5))) (3 classes),
/// where `out` is the identity or a saturating map.
pub struct Mlp {
    pub w1: Tensor,
    pub w2: Tensor,
    pub scale: f64,
    /// Cut the input out of the graph (a non-differentiable preprocessing step).
    pub detach_input: bool,
    /// Squash the logits as 10 tanh(100 z): flat (exactly zero gradient in f32) almost everywhere.
    pub saturate: bool,
}

impl Mlp {
    pub fn new(seed: u64, scale: f64, detach_input: bool) -> Self {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut normal =
            |n: usize, s: f32| -> Vec<f32> { (0..n).map(|_| (rng.random::<f32>() - 0.5) * 2.0 * s * 1.7).collect() };
        let w1 = Tensor::from_vec(normal(16 * 32, 1.0), (32, 16), &Device::Cpu).unwrap();
        let w2 = Tensor::from_vec(normal(32 * 3, 1.0), (3, 32), &Device::Cpu).unwrap();
        Self { w1, w2, scale, detach_input, saturate: false }
    }

    /// The same weights with logits multiplied by `factor`.
    pub fn scaled(&self, factor: f64) -> Self {
        Self { w1: self.w1.clone(), w2: self.w2.clone(), scale: self.scale * factor, ..*self }
    }

    /// The same weights with a saturating output.
    pub fn saturating(&self) -> Self {
        Self { w1: self.w1.clone(), w2: self.w2.clone(), saturate: true, ..*self }
    }
}

impl Model for Mlp {
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.detach_input { x.detach() } else { x.clone() };
        let h = (x.flatten_from(1)? - 0.5)?.matmul(&self.w1.t()?)?.tanh()?;
        let z = (h.matmul(&self.w2.t()?)? * self.scale)?;
        if self.saturate {
            (z * 100.0)?.tanh()? * 10.0
        } else {
            Ok(z)
        }
    }
}

/// Random inputs, and labels that `model` predicts (so its clean accuracy is 100%).
pub fn self_labelled(model: &dyn Model, n: usize) -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let px: Vec<f32> = (0..n * 16).map(|_| rng.random::<f32>()).collect();
    let x = Tensor::from_vec(px, (n, 1, 4, 4), &Device::Cpu).unwrap();
    let y = predict(model, &x).unwrap();
    (x, Tensor::new(y.as_slice(), &Device::Cpu).unwrap())
}

/// Three classes of 1x4x4 images in [0, 1]: class c brightens pixel block c
/// (pixels 5c..5c+5) to 0.75 over a background of 0.25, plus N(0, 0.12) noise, clipped.
pub fn blobs(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut px = Vec::with_capacity(n * 16);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i % 3) as u32;
        for p in 0..16 {
            let base = if (p / 5) as u32 == c && p < 15 { 0.75 } else { 0.25 };
            let noise: f32 = rand_distr::Distribution::sample(&rand_distr::Normal::new(0.0, 0.12).unwrap(), &mut rng);
            px.push((base + noise).clamp(0.0, 1.0));
        }
        labels.push(c);
    }
    (Tensor::from_vec(px, (n, 1, 4, 4), &Device::Cpu).unwrap(), Tensor::new(labels.as_slice(), &Device::Cpu).unwrap())
}

/// An ordinary MLP trained by plain SGD on cross-entropy over [`blobs`] (300 steps,
/// full batch of 300, learning rate 0.5): a healthy model whose truth is known.
pub fn trained_mlp() -> Mlp {
    let init = Mlp::new(3, 0.3, false);
    let (w1, w2) = (Var::from_tensor(&init.w1).unwrap(), Var::from_tensor(&init.w2).unwrap());
    let (x, y) = blobs(300, 11);
    for _ in 0..300 {
        let m = Mlp { w1: w1.as_tensor().clone(), w2: w2.as_tensor().clone(), ..init.scaled(1.0) };
        let z = m.logits(&x).unwrap();
        let loss = candle_nn::loss::cross_entropy(&z, &y).unwrap();
        let g = loss.backward().unwrap();
        for v in [&w1, &w2] {
            let step = (g.get(v.as_tensor()).unwrap() * 0.5).unwrap();
            v.set(&(v.as_tensor() - step).unwrap()).unwrap();
        }
    }
    Mlp { w1: w1.as_tensor().detach(), w2: w2.as_tensor().detach(), ..init.scaled(1.0) }
}

/// Accuracy of `model` on (x, y).
pub fn accuracy(model: &dyn Model, x: &Tensor, y: &Tensor) -> f64 {
    let p = model.logits(x).unwrap().argmax(D::Minus1).unwrap().to_dtype(candle_core::DType::U32).unwrap();
    let hits: Vec<u32> = p.eq(y).unwrap().to_dtype(candle_core::DType::U32).unwrap().to_vec1().unwrap();
    hits.iter().sum::<u32>() as f64 / hits.len() as f64
}
