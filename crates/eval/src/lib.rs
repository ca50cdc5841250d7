//! # robal-eval
//!
//! Evaluation of robust long-tailed classifiers the way RoBal and its successors
//! report it (SPEC section 6), and a check of whether the numbers can be trusted:
//!
//! - [`suite`]: the attack list (clean, FGSM, PGD-20, MIM, CW-inf, AutoAttack...) and
//!   running it over a test set;
//! - [`metrics`]: confusion matrix, per-class recall / precision / F1, balanced accuracy,
//!   shot groups and groups of ten classes;
//! - [`mod@audit`]: gradient-masking checks (CE vs margin attacks, logit-scale sweep, zero
//!   gradients, steps and eps sweeps);
//! - [`report`]: `report.json` / `report.md` and the paper-style table;
//! - [`plot`]: per-class accuracy vs training count, training curves (SVG + PNG);
//! - [`hub`]: `hf://` checkpoints through the hf-hub cache;
//! - [`runtime`]: AutoAttack's run-time checks (randomised forward, probability outputs,
//!   target classes, Square after the gradient attacks, input range, finite outputs);
//! - [`stats`]: the exact tests behind the audit's verdicts;
//! - [`job`]: all of it for one checkpoint (what `cargo xtask eval` runs);
//! - [`parts`]: resumable state, shards and their merge;
//! - [`compare`]: several runs side by side (`cargo xtask report`);
//! - [`study`]: a study's runs aggregated over seeds (mean ± sd per method, class
//!   group and class) with its plots.

pub mod audit;
pub mod compare;
pub mod error;
pub mod hub;
pub mod job;
pub mod metrics;
mod nan;
pub mod parts;
pub mod plot;
mod progress;
pub mod report;
pub mod runtime;
mod sealed;
pub mod stats;
pub mod study;
pub mod suite;

pub use audit::{audit, AuditConfig, AuditResult, Check, CheckId, Flag, Verdict};
pub use error::{EvalError, Result};
pub use job::{
    evaluate, evaluate_part, evaluate_part_with_digest, load_model, load_test_set, load_test_set_with, write_outputs,
    DataSpec, EvalOptions, LoadedModel, ModelFlags, StateFile, TestProfile,
};
pub use metrics::{balanced_accuracy, ClassMetrics, Confusion, GroupMean};
pub use parts::{merge, Evaluation, Shard};
pub use report::{AttackReport, Report, MODEL_INFO_FILE, REPORT_FILE, REPORT_MD_FILE};
pub use suite::{run_suite, AttackEntry, AttackOutcome, AttackSettings, AttackSpec, ATTACKS, DEFAULT_ATTACKS};
