//! JSON files that are read back into results (an evaluation's saved progress, shard
//! files), sealed with a SHA-256 so that a damaged file is refused rather than resumed
//! or merged: `{"sha256": hex, "content": "<the value as JSON text>"}`. The digest is
//! over the exact bytes of the content text, kept as a string, so checking it never
//! depends on how numbers re-serialise.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{file_err, Result};

fn digest(text: &str) -> String {
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    sha256: String,
    content: String,
}

/// Write `value` sealed into `path`, atomically.
pub fn save<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let content = serde_json::to_string(value).map_err(|e| file_err(path, e))?;
    let sealed = Sealed { sha256: digest(&content), content };
    let text = serde_json::to_string(&sealed).map_err(|e| file_err(path, e))?;
    robal_data::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Read a sealed file written by [`save`]; `what` names the kind of file in errors
/// ("state file", "shard file").
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let bad = |reason: String| file_err(path, format!("not a robal-eval {what}: {reason}"));
    let sealed: Sealed = serde_json::from_str(&text).map_err(|e| {
        bad(format!("{e} (expected {{\"sha256\", \"content\"}}: truncated, damaged, or written by an older robal-rs)"))
    })?;
    let actual = digest(&sealed.content);
    if actual != sealed.sha256 {
        return Err(bad(format!(
            "its content does not match its sha256 ({}, computed {actual}): the file is damaged",
            sealed.sha256
        )));
    }
    serde_json::from_str(&sealed.content).map_err(|e| bad(e.to_string()))
}
