//! # robal
//!
//! RoBal (Wu et al., CVPR 2021) and the long-tailed adversarial-training baselines
//! it is measured against, on candle:
//!
//! - [`losses`]: CE, sigmoid focal, class-balanced weights, LDAM, logit adjustment
//!   (balanced softmax at tau = 1), CDT, RoBal's class-aware margin loss and the
//!   TRADES KL term, each with its formula;
//! - [`objective`]: one file per training method (plain, PGD-AT, TRADES, RoBal, TAET),
//!   AWP and RobustLT's per-class budgets;
//! - [`config`]: TOML presets (`configs/`) with `--set key=value` overrides;
//! - [`train`](mod@train): the loop that runs an objective, with resumable
//!   checkpoints, NaN guards, progress bars and a metrics file;
//! - [`run_dir`]: a run folder's file names, its one-process lock and what it holds;
//! - [`metrics`]: the typed lines of a run's `metrics.jsonl`, shared by writer and readers;
//! - [`selection`]: a validation split held out of training and the best epoch on it;
//! - [`splits`]: the training, validation and test splits a config's `[data]` names;
//! - [`evaluate`]: clean and PGD accuracy per class and shot group.

pub mod config;
pub mod error;
pub mod evaluate;
pub mod losses;
pub mod metrics;
pub mod objective;
pub mod optim;
pub mod run_dir;
pub mod selection;
pub mod splits;
pub mod train;

pub use config::TrainConfig;
pub use error::{Result, TrainError};
pub use evaluate::{quick_eval, Accuracy, EvalModel, QuickEval};
pub use losses::{LossConfig, TrainLoss};
pub use optim::Sgd;
pub use run_dir::{RunDir, RunLock, RunState};
pub use train::{train, RunOptions, RunSummary};
