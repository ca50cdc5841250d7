//! The models crate's error type.

use std::path::PathBuf;

/// Errors raised while building, running, saving or loading models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor op failed (shape mismatch in a forward pass, device error...).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An invalid architecture or head setting.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The setting.
        what: &'static str,
        /// What was expected.
        reason: String,
    },
    /// A checkpoint whose tensors do not match the model it is loaded into.
    #[error("{path}: checkpoint does not match the model:\n{report}")]
    Mismatch {
        /// The checkpoint file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors, one per line.
        report: String,
    },
    /// A checkpoint that cannot be read or lacks the metadata needed to rebuild the model.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong and what was expected.
        reason: String,
    },
    /// A file that cannot be written.
    #[error("{path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> ModelError {
    ModelError::Invalid { what, reason: reason.into() }
}
