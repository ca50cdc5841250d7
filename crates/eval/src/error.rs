//! The eval crate's error type.

/// Errors of evaluation, reports and plots.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A tensor op failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Data loading failed.
    #[error(transparent)]
    Data(#[from] robal_data::DataError),
    /// Model building or checkpoint loading failed.
    #[error(transparent)]
    Model(#[from] robal_models::ModelError),
    /// Training-side helpers (configs, data of a run) failed.
    #[error(transparent)]
    Train(#[from] robal::TrainError),
    /// An invalid option or input, naming it.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The flag, file or field.
        what: String,
        /// What was expected.
        reason: String,
    },
    /// A file that cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A Hugging Face Hub reference that cannot be resolved.
    #[error("{spec}: {reason}")]
    Hub {
        /// The `hf://` reference.
        spec: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;

pub(crate) fn file_err(path: &std::path::Path, reason: impl std::fmt::Display) -> EvalError {
    EvalError::File { path: path.display().to_string(), reason: reason.to_string() }
}
