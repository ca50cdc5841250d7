//! A whole classifier: optional input normalisation, backbone, head, and an
//! optional post-hoc boundary adjustment at inference.

use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};

use crate::arch::{HeadConfig, ModelConfig, Normalization};
use crate::backbone::Backbone;
use crate::error::{invalid, Result};
use crate::head::Head;
use crate::layers::Mode;
use crate::store::ParamStore;

/// The model robal-rs trains and attacks: logits = head(backbone(normalise(x))) - tau_p log(pi).
#[derive(Debug)]
pub struct Classifier {
    config: ModelConfig,
    store: ParamStore,
    backbone: Backbone,
    head: Head,
    norm: Option<(Tensor, Tensor)>,
    class_counts: Option<Vec<usize>>,
    posthoc: Option<(f64, Tensor)>,
    forward_count: AtomicU64,
    seed: u64,
}

impl Classifier {
    /// Build `config` on `device`; every tensor's init is drawn from (seed, name).
    pub fn new(config: ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::build(config, ParamStore::new(device.clone(), seed), seed)
    }

    /// The same model (weights, BatchNorm statistics, class counts, post-hoc term) with
    /// every tensor in `dtype`. F64 runs candle's own tensor ops instead of the f32 CPU
    /// kernels: slow, for comparisons against float64 references.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self> {
        let store = ParamStore::with_dtype(self.device().clone(), self.seed, dtype);
        let mut out = Self::build(self.config.clone(), store, self.seed)?;
        out.store.load_state(&self.store.state()).map_err(|report| invalid("model dtype", report))?;
        out.class_counts = self.class_counts.clone();
        out.set_posthoc(self.posthoc_tau())?;
        out.set_kernels(self.backbone.kernels());
        Ok(out)
    }

    fn build(config: ModelConfig, store: ParamStore, seed: u64) -> Result<Self> {
        let root = store.root();
        let backbone = Backbone::new(&root.pp("backbone"), &config.arch, config.in_channels)?;
        let head = Head::new(&root.pp("head"), config.head, backbone.feature_dim(), config.num_classes)?;
        let norm = norm_tensors(config.normalization.as_ref(), config.in_channels, store.device())?;
        Ok(Self {
            config,
            store,
            backbone,
            head,
            norm,
            class_counts: None,
            posthoc: None,
            forward_count: AtomicU64::new(0),
            seed,
        })
    }

    /// Replace the input normalisation inside the model (e.g. the mean/std a
    /// RobustBench-style wrapper carries in its checkpoint).
    pub fn set_normalization(&mut self, normalization: Option<Normalization>) -> Result<()> {
        self.norm = norm_tensors(normalization.as_ref(), self.config.in_channels, self.store.device())?;
        self.config.normalization = normalization;
        Ok(())
    }

    /// Run the backbone on these CPU kernels ([`crate::ops::Kernels::Candle`]: candle's
    /// own ops, for side-by-side measurements); the default is robal-rs's.
    pub fn set_kernels(&mut self, kernels: crate::ops::Kernels) {
        self.backbone.set_kernels(kernels);
    }

    /// The settings that rebuild this model.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// All tensors by name.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// Training counts per class, if known (needed for post-hoc adjustment).
    pub fn class_counts(&self) -> Option<&[usize]> {
        self.class_counts.as_deref()
    }

    /// Record the training counts per class (stored in checkpoints).
    pub fn set_class_counts(&mut self, counts: Vec<usize>) -> Result<()> {
        if counts.len() != self.config.num_classes || counts.contains(&0) {
            return Err(invalid(
                "class counts",
                format!("{} counts for {} classes (every count must be > 0)", counts.len(), self.config.num_classes),
            ));
        }
        self.class_counts = Some(counts);
        Ok(())
    }

    /// Switch boundary adjustment on (`Some(tau_p)`: logits - tau_p * log(pi)) or off.
    /// Needs the class counts.
    pub fn set_posthoc(&mut self, tau_p: Option<f64>) -> Result<()> {
        self.posthoc = match tau_p {
            None => None,
            Some(tau) => {
                let counts = self.class_counts.as_ref().ok_or_else(|| {
                    invalid(
                        "post-hoc adjustment",
                        "needs the training counts per class (set_class_counts or a checkpoint that has them)",
                    )
                })?;
                let total: usize = counts.iter().sum();
                let shift: Vec<f64> = counts.iter().map(|&n| tau * (n as f64 / total as f64).ln()).collect();
                let shift = Tensor::from_vec(shift, (1, counts.len()), self.device())?.to_dtype(self.store.dtype())?;
                Some((tau, shift))
            }
        };
        Ok(())
    }

    /// tau_p of the post-hoc adjustment in use, if any.
    pub fn posthoc_tau(&self) -> Option<f64> {
        self.posthoc.as_ref().map(|(t, _)| *t)
    }

    /// Pooled features (N, d) of images (N, C, H, W) in \[0, 1\].
    pub fn features(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let x = match &self.norm {
            Some((m, s)) => x.broadcast_sub(&m.to_dtype(x.dtype())?)?.broadcast_div(&s.to_dtype(x.dtype())?)?,
            None => x.clone(),
        };
        let seed = match mode {
            Mode::Train => {
                self.seed ^ self.forward_count.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            }
            Mode::Eval => 0,
        };
        self.backbone.forward(&x, mode, seed)
    }

    /// Logits of features, with the post-hoc adjustment if switched on.
    pub fn logits_from_features(&self, f: &Tensor) -> Result<Tensor> {
        let z = self.head.forward(f)?;
        Ok(match &self.posthoc {
            Some((_, shift)) => z.broadcast_sub(shift)?,
            None => z,
        })
    }

    /// The head's class weight matrix W (classes, d), the tensor the optimiser updates
    /// (gradients of a loss built on it reach the head).
    pub fn head_weight(&self) -> &Tensor {
        self.head.weight()
    }

    /// Logits (N, classes) of images (N, C, H, W) in \[0, 1\].
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        self.logits_from_features(&self.features(x, mode)?)
    }

    /// Set the head's bias to the focal-loss prior init b_c = log(pi_c / (1 - pi_c)),
    /// pi_c = n_c / N ([`crate::head::prior_bias`]): what an [`crate::arch::FcBias::Prior`]
    /// head starts from. Call it on a fresh model, before training.
    pub fn init_prior_bias(&self, counts: &[usize]) -> Result<()> {
        if counts.len() != self.config.num_classes {
            return Err(invalid(
                "prior bias init",
                format!("{} class counts for a model of {} classes", counts.len(), self.config.num_classes),
            ));
        }
        let values = crate::head::prior_bias(counts)?;
        let var = self.store.var("head.bias").ok_or_else(|| invalid("prior bias init", "the head has no bias"))?;
        let t = Tensor::from_vec(values, counts.len(), self.store.device())?.to_dtype(self.store.dtype())?;
        var.set(&t)?;
        Ok(())
    }

    /// Replace the head with a fresh one of `config` (classifier re-training), or
    /// re-use the trained weight and bias (`keep_weights`: FC -> tau-norm or LWS).
    pub fn replace_head(&mut self, config: HeadConfig, keep_weights: bool) -> Result<()> {
        let kept = if keep_weights {
            if matches!(config, HeadConfig::Cosine { .. })
                || matches!(self.config.head, HeadConfig::Cosine { bias: false, .. })
            {
                return Err(invalid(
                    "head swap",
                    "weights can only be kept between FC-style heads (fc, tau-norm, lws)",
                ));
            }
            Some(
                self.store
                    .state()
                    .into_iter()
                    .filter(|(n, _)| n == "head.weight" || n == "head.bias")
                    .collect::<Vec<_>>(),
            )
        } else {
            None
        };
        self.store.remove_prefix("head.");
        self.head =
            Head::new(&self.store.root().pp("head"), config, self.backbone.feature_dim(), self.config.num_classes)?;
        if let Some(kept) = kept {
            for (name, value) in kept {
                if let Some(var) = self.store.var(&name) {
                    var.set(&value)?;
                }
            }
        }
        self.config.head = config;
        Ok(())
    }
}

/// (x - mean) / std as (1, C, 1, 1) tensors, after checking the values.
fn norm_tensors(n: Option<&Normalization>, c: usize, device: &Device) -> Result<Option<(Tensor, Tensor)>> {
    let Some(n) = n else { return Ok(None) };
    if n.mean.len() != c || n.std.len() != c || n.std.iter().any(|&s| s.is_nan() || s <= 0.0) {
        return Err(invalid(
            "input normalisation",
            format!("mean {:?}, std {:?}: need {c} values each, std > 0", n.mean, n.std),
        ));
    }
    Ok(Some((
        Tensor::from_vec(n.mean.clone(), (1, c, 1, 1), device)?,
        Tensor::from_vec(n.std.clone(), (1, c, 1, 1), device)?,
    )))
}
