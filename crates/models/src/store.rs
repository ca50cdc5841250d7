//! Named model tensors: trainable parameters and non-trainable buffers (BatchNorm
//! running statistics), created with a deterministic, order-independent init.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::{invalid, Result};

/// How a tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Every element `v`.
    Const(f64),
    /// Normal(0, std^2).
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Uniform(-bound, bound).
    Uniform {
        /// Half-width.
        bound: f64,
    },
}

/// Whether a tensor is updated by the optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// A trainable parameter.
    Param,
    /// State updated by the forward pass itself (BatchNorm running mean/var).
    Buffer,
}

#[derive(Clone, Debug)]
struct Entry {
    var: Var,
    kind: TensorKind,
}

/// All tensors of a model by name (PyTorch-style dotted names), shared by its layers.
#[derive(Clone, Debug)]
pub struct ParamStore {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    device: Device,
    dtype: DType,
    seed: u64,
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: a fixed, platform-independent hash so a tensor's init depends only on (seed, name).
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl ParamStore {
    /// An empty store on `device`; every tensor's init is drawn from a stream of (seed, name).
    pub fn new(device: Device, seed: u64) -> Self {
        Self::with_dtype(device, seed, DType::F32)
    }

    /// [`Self::new`] with tensors of `dtype` (F32 everywhere but reference comparisons
    /// in F64; the init draws the same f32 values either way).
    pub fn with_dtype(device: Device, seed: u64, dtype: DType) -> Self {
        Self { entries: Arc::new(Mutex::new(BTreeMap::new())), device, dtype, seed }
    }

    /// The device tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of every tensor.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// A path prefix for a layer's tensors.
    pub fn root(&self) -> StorePath {
        StorePath { store: self.clone(), prefix: String::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn create(&self, name: String, shape: &[usize], init: Init, kind: TensorKind) -> Result<Var> {
        let numel: usize = shape.iter().product();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ name_hash(&name));
        let data: Vec<f32> = match init {
            Init::Const(v) => vec![v as f32; numel],
            Init::Normal { std } => (0..numel)
                .map(|_| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    (z * std) as f32
                })
                .collect(),
            Init::Uniform { bound } => (0..numel).map(|_| rng.random_range(-bound..bound) as f32).collect(),
        };
        let var = Var::from_tensor(&Tensor::from_vec(data, shape, &self.device)?.to_dtype(self.dtype)?)?;
        let mut entries = self.lock();
        if entries.contains_key(&name) {
            return Err(invalid("model", format!("tensor {name} is created twice")));
        }
        entries.insert(name, Entry { var: var.clone(), kind });
        Ok(var)
    }

    /// Names, kinds and tensors of every entry, sorted by name.
    pub fn entries(&self) -> Vec<(String, TensorKind, Tensor)> {
        self.lock().iter().map(|(n, e)| (n.clone(), e.kind, e.var.as_tensor().clone())).collect()
    }

    /// Trainable parameters whose name starts with `prefix` ("" for all), sorted by name.
    pub fn trainable(&self, prefix: &str) -> Vec<(String, Var)> {
        self.lock()
            .iter()
            .filter(|(n, e)| e.kind == TensorKind::Param && n.starts_with(prefix))
            .map(|(n, e)| (n.clone(), e.var.clone()))
            .collect()
    }

    /// The variable `name`, parameter or buffer.
    pub fn var(&self, name: &str) -> Option<Var> {
        self.lock().get(name).map(|e| e.var.clone())
    }

    /// Variables of one kind (parameters or buffers), sorted by name.
    pub fn vars(&self, kind: TensorKind) -> Vec<(String, Var)> {
        self.lock().iter().filter(|(_, e)| e.kind == kind).map(|(n, e)| (n.clone(), e.var.clone())).collect()
    }

    /// Number of scalars in trainable parameters.
    pub fn num_params(&self) -> usize {
        self.lock().values().filter(|e| e.kind == TensorKind::Param).map(|e| e.var.elem_count()).sum()
    }

    /// Every tensor (parameters and buffers), detached. The tensors share storage
    /// with the model (no copy): they follow later updates; `.copy()` for a snapshot.
    pub fn state(&self) -> BTreeMap<String, Tensor> {
        self.lock().iter().map(|(n, e)| (n.clone(), e.var.as_tensor().detach())).collect()
    }

    /// Remove every entry whose name starts with `prefix` (to swap a head).
    pub fn remove_prefix(&self, prefix: &str) {
        self.lock().retain(|n, _| !n.starts_with(prefix));
    }

    /// Overwrite tensors from `state`. Every entry must be present with its exact
    /// shape and no extra name may appear; otherwise nothing is changed and the
    /// returned report lists missing, unexpected and mis-shaped tensors.
    pub fn load_state(&self, state: &BTreeMap<String, Tensor>) -> std::result::Result<(), String> {
        let entries = self.lock();
        let mut lines = Vec::new();
        for (name, e) in entries.iter() {
            match state.get(name) {
                None => lines.push(format!("  missing: {name} {:?}", e.var.dims())),
                Some(t) if t.dims() != e.var.dims() => {
                    lines.push(format!("  shape mismatch: {name}: file {:?}, model {:?}", t.dims(), e.var.dims()))
                }
                Some(_) => {}
            }
        }
        for (name, t) in state {
            if !entries.contains_key(name) {
                lines.push(format!("  unexpected: {name} {:?}", t.dims()));
            }
        }
        if !lines.is_empty() {
            return Err(lines.join("\n"));
        }
        for (name, e) in entries.iter() {
            // A copy, so that a tensor sharing storage with the variable (its own state) can be set.
            let t = state[name].to_dtype(self.dtype).and_then(|t| t.to_device(&self.device)).and_then(|t| t.copy());
            if let Err(err) = t.and_then(|t| e.var.set(&t)) {
                return Err(format!("  cannot set {name}: {err}"));
            }
        }
        Ok(())
    }
}

/// A dotted name prefix inside a [`ParamStore`], handed to layer constructors.
#[derive(Clone, Debug)]
pub struct StorePath {
    store: ParamStore,
    prefix: String,
}

impl StorePath {
    /// The sub-path `prefix.name`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        let prefix = if self.prefix.is_empty() { name.to_string() } else { format!("{}.{name}", self.prefix) };
        Self { store: self.store.clone(), prefix }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A trainable parameter `prefix.name`.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor> {
        Ok(self.store.create(self.full(name), shape, init, TensorKind::Param)?.as_tensor().clone())
    }

    /// A buffer `prefix.name` (updated in place by the forward pass).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Var> {
        self.store.create(self.full(name), shape, init, TensorKind::Buffer)
    }

    /// The device.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// Every trainable parameter under this path, sorted by name (the optimiser's and
    /// the training tape's list: read from the store, never written by hand).
    pub fn params(&self) -> Vec<Tensor> {
        let prefix = if self.prefix.is_empty() { String::new() } else { format!("{}.", self.prefix) };
        self.store.trainable(&prefix).into_iter().map(|(_, v)| v.as_tensor().clone()).collect()
    }
}
