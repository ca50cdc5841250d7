//! The data crate's error type: every variant names the file (or item) at fault
//! and what was expected, so that a user can act on the message alone.

use std::path::PathBuf;

/// Errors raised while reading, downloading or batching data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record file whose length is not a whole number of records.
    #[error(
        "{path}: {len} bytes is not a whole number of {record_len}-byte records \
         (record {record} is cut short: {partial} of {record_len} bytes present); \
         the file is truncated or not a {format} file"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length in bytes.
        len: u64,
        /// Bytes per record.
        record_len: usize,
        /// Index of the incomplete record.
        record: usize,
        /// Bytes of that record present.
        partial: usize,
        /// The expected format, e.g. "CIFAR-10 binary".
        format: &'static str,
    },
    /// A record count that differs from what the file is known to hold.
    #[error("{path}: holds {found} records, expected {expected} ({format})")]
    WrongRecordCount {
        /// The file.
        path: PathBuf,
        /// Records found.
        found: usize,
        /// Records expected.
        expected: usize,
        /// The expected format.
        format: &'static str,
    },
    /// A label byte outside `0..num_classes`.
    #[error("{path}: record {record} has label {label}, expected a {kind} label in 0..{num_classes}")]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Index of the record.
        record: usize,
        /// The label found.
        label: u32,
        /// Which label ("fine", "coarse", "class").
        kind: &'static str,
        /// Number of classes.
        num_classes: usize,
    },
    /// A file that should exist but does not.
    #[error("{path}: not found ({hint})")]
    Missing {
        /// The path looked for.
        path: PathBuf,
        /// What to do about it.
        hint: String,
    },
    /// A checksum that does not match.
    #[error("{path}: {algo} is {found}, expected {expected}; the file is corrupt or incomplete and was removed")]
    Checksum {
        /// The file checked.
        path: PathBuf,
        /// "md5" or "sha256".
        algo: &'static str,
        /// Digest found.
        found: String,
        /// Digest expected.
        expected: String,
    },
    /// A download failed (network error, HTTP status, short body).
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A malformed line or value in a text file (split lists, metadata).
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was expected.
        reason: String,
    },
    /// An image that could not be decoded.
    #[error("{path}: cannot decode image: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// Decoder message.
        reason: String,
    },
    /// An invalid argument (ratio outside (0,1], empty data set, bad batch size...).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument or option.
        what: &'static str,
        /// What was expected.
        reason: String,
    },
    /// A tensor could not be built.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Attach the path to an I/O error.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DataError {
    let path = path.into();
    move |source| DataError::Io { path, source }
}

/// Shorthand for [`DataError::Invalid`].
pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> DataError {
    DataError::Invalid { what, reason: reason.into() }
}
