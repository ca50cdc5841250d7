//! # robal-models
//!
//! The networks robal-rs trains and attacks, on candle:
//!
//! - backbones ([`Backbone`]), each topology written once against [`Graph`] and run
//!   eagerly on candle tensors ([`Eager`]) or recorded for the CPU kernels
//!   ([`Recorder`]): [`WideResNet`] (any 6n+4 depth, pre-activation,
//!   optional dropout; also DeepMind's variant), CIFAR ResNet-18 and PreAct-ResNet-18, ImageNet ResNet-18/50
//!   ([`ResNet`]), and a [`SmallCnn`] for 28x28 digits; all take NCHW f32 in \[0, 1\];
//! - heads ([`Head`]): FC (bias learned, prior-initialised or frozen: [`FcBias`]), RoBal's scale-invariant cosine head
//!   z_c = s <f/||f||, w_c/(||w_c|| + gamma)>, tau-normalised weights and
//!   learnable weight scaling, swappable on a trained backbone;
//! - [`Classifier`]: optional input normalisation + backbone + head + optional
//!   boundary adjustment z_c - tau_p log(pi_c);
//! - [`checkpoint`]: safetensors files that rebuild their model, and import of
//!   the reference PyTorch checkpoints.
//!
//! BatchNorm has PyTorch's train/eval semantics ([`Mode`]): evaluation never
//! changes the model, so attacks can run it freely.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};
//! # fn main() -> robal_models::Result<()> {
//! let config = ModelConfig { arch: Arch::SmallCnn, in_channels: 1, num_classes: 10, head: HeadConfig::ROBAL_EVAL, normalization: None };
//! let model = Classifier::new(config, &Device::Cpu, 0)?;
//! let x = Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &Device::Cpu)?;
//! assert_eq!(model.forward(&x, Mode::Eval)?.dims(), &[2, 10]);
//! # Ok(()) }
//! ```

pub mod arch;
pub mod backbone;
pub mod checkpoint;
pub mod classifier;
pub mod error;
pub mod graph;
pub mod head;
pub mod layers;
pub mod ops;
pub mod resnet;
pub mod small_cnn;
pub mod store;
pub mod torch_legacy;
pub mod wideresnet;

pub use arch::{Arch, ArchEntry, FcBias, HeadConfig, ModelConfig, Normalization, ARCHITECTURES};
pub use backbone::Backbone;
pub use classifier::Classifier;
pub use error::{ModelError, Result};
pub use graph::{Eager, Graph, Recorder, TapeValue};
pub use head::Head;
pub use layers::{BatchNorm2d, Conv2d, Linear, Mode};
pub use resnet::{ResNet, ResNetKind};
pub use small_cnn::SmallCnn;
pub use store::{Init, ParamStore, StorePath, TensorKind};
pub use wideresnet::WideResNet;
