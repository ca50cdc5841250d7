//! The robal crate's error type.

/// Errors of training and its configuration.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A configuration that cannot be used, naming its source and field.
    #[error("config {origin}: {reason}")]
    Config {
        /// Preset file or "--set".
        origin: String,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// An invalid value.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// What was expected.
        reason: String,
    },
    /// A loss that became NaN or infinite.
    #[error(
        "non-finite loss ({value}) at epoch {epoch}, step {step}; training stopped. Last good checkpoint: {checkpoint}"
    )]
    NonFinite {
        /// The loss value.
        value: f32,
        /// Epoch (1-based).
        epoch: usize,
        /// Step within the epoch (1-based).
        step: usize,
        /// Path of the last good checkpoint, or "none".
        checkpoint: String,
    },
    /// Resume requested without a usable checkpoint, or with a different config.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// Run folder.
        path: String,
        /// Why.
        reason: String,
    },
    /// The run folder is locked by another process.
    #[error("run folder {path} is in use: {holder}; wait for it to finish, stop it, or choose another --run-dir")]
    Busy {
        /// Run folder.
        path: String,
        /// Who holds it (pid, host, purpose, since when).
        holder: String,
    },
    /// The run folder already holds a run and neither resuming nor replacing it was asked for.
    #[error(
        "run folder {path} already holds a run ({holds}){differences}.\nChoose one: --resume to continue it, \
         another --run-dir, or --overwrite to move the old run aside (into {path}/replaced-<time>) and start over"
    )]
    RunExists {
        /// Run folder.
        path: String,
        /// What it holds, e.g. "12 of 40 epochs done".
        holds: String,
        /// The config differences as text (empty when the configs are the same).
        differences: String,
    },
    /// Tensor errors.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Model errors.
    #[error(transparent)]
    Model(#[from] robal_models::ModelError),
    /// Data errors.
    #[error(transparent)]
    Data(#[from] robal_data::DataError),
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Error.
        source: std::io::Error,
    },
}

/// Result alias.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> TrainError {
    TrainError::Invalid { what, reason: reason.into() }
}
