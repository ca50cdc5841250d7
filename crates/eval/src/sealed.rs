//! JSON files that are read back into results (an evaluation's saved progress, shard
//! files), sealed with a SHA-256 of their content so that a damaged file is refused
//! rather than resumed or merged: `{"sha256": hex, "content": ...}`, where the digest
//! is over `content` as serde_json writes it (compact, keys in the order they are
//! stored, numbers in their shortest round-tripping form, so reading and re-writing
//! gives the same bytes).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{file_err, Result};

fn digest(content: &Value) -> String {
    let text = content.to_string();
    Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Write `value` sealed into `path`, atomically.
pub fn save<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let content = serde_json::to_value(value).map_err(|e| file_err(path, e))?;
    let sealed = serde_json::json!({ "sha256": digest(&content), "content": content });
    robal_data::write_atomic(path, sealed.to_string().as_bytes())?;
    Ok(())
}

/// Read a sealed file written by [`save`]; `what` names the kind of file in errors
/// ("state file", "shard file").
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let bad = |reason: String| file_err(path, format!("not a robal-eval {what}: {reason}"));
    let mut sealed: Value = serde_json::from_str(&text).map_err(|e| bad(format!("{e} (truncated or damaged?)")))?;
    let (Some(expected), Some(content)) =
        (sealed.get("sha256").and_then(Value::as_str).map(str::to_string), sealed.get_mut("content"))
    else {
        return Err(bad("expected {\"sha256\", \"content\"} (written by an older robal-rs, or damaged)".into()));
    };
    let content = content.take();
    let actual = digest(&content);
    if actual != expected {
        return Err(bad(format!(
            "its content does not match its sha256 ({expected}, computed {actual}): the file is damaged"
        )));
    }
    serde_json::from_value(content).map_err(|e| bad(e.to_string()))
}
