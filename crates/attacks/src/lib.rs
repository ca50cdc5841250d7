//! # robal-attacks
//!
//! White-box adversarial attacks for any differentiable candle classifier
//! (anything implementing [`Model`]: image batch in \[0, 1\] -> logits, in eval mode).
//!
//! | attack | type | threat models |
//! |---|---|---|
//! | FGSM | [`Fgsm`] | L-inf |
//! | PGD (CE, CW margin, DLR; untargeted or targeted; restarts) | [`Pgd`] | L-inf, L2 |
//! | MIM | [`Mim`] | L-inf |
//! | CW-inf (PGD on the margin loss, kappa = 50) | [`Pgd::cw`] | L-inf |
//! | APGD-CE, APGD-DLR, APGD-T | [`Apgd`] | L-inf, L2 |
//! | FAB-T | [`FabTargeted`] | L-inf |
//! | Square | [`Square`] | L-inf |
//! | AutoAttack (standard; or APGD-CE + APGD-T) | [`AutoAttack`] | L-inf |
//!
//! Every attack keeps its output inside the eps-ball and the \[0, 1\] box, never
//! changes the model, and is deterministic for a given seed. `success[i]` means
//! the model misclassifies the returned image.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use robal_attacks::{Attack, Pgd};
//! # fn main() -> candle_core::Result<()> {
//! let w = Tensor::new(&[[1f32, -1.0], [-1.0, 1.0]], &Device::Cpu)?;
//! let model = |x: &Tensor| x.flatten_from(1)?.matmul(&w.t()?);
//! let x = Tensor::new(&[[[[0.6f32, 0.4]]]], &Device::Cpu)?; // margin 0.4, breakable at eps 0.1
//! let y = Tensor::new(&[0u32], &Device::Cpu)?;
//! let r = Pgd::linf(0.11, 0.02, 20).run(&model, &x, &y, 0)?;
//! assert!(r.success[0]);
//! # Ok(()) }
//! ```

pub mod apgd;
pub mod attack;
pub mod autoattack;
pub mod fab;
pub mod loss;
pub mod model;
pub mod pgd;
pub mod square;
pub mod subset;
pub mod threat;

pub use apgd::{Apgd, ApgdLoss};
pub use attack::{Attack, AttackResult};
pub use autoattack::{AutoAttack, Suite, SuiteResult};
pub use fab::FabTargeted;
pub use loss::Loss;
pub use model::{Model, ScaledLogits};
pub use pgd::{Fgsm, Mim, Pgd};
pub use square::Square;
pub use threat::{Norm, RandomStart};
