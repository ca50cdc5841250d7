//! Checkpoints on the Hugging Face Hub: `hf://owner/repo/path/in/repo.safetensors`
//! (optionally `hf://owner/repo@revision/path`), resolved through hf-hub's cache so
//! that a file fetched once is used offline afterwards.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{EvalError, Result};

/// A parsed `hf://` reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubFile {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit (`main` by default).
    pub revision: String,
    /// Path of the file inside the repository.
    pub file: String,
}

impl HubFile {
    /// Parse `hf://owner/repo[@revision]/path/to/file`; `None` if `spec` does not start with `hf://`.
    pub fn parse(spec: &str) -> Option<Result<Self>> {
        let rest = spec.strip_prefix("hf://")?;
        let bad = || EvalError::Hub {
            spec: spec.to_string(),
            reason: "expected hf://owner/repo[@revision]/path/to/file".into(),
        };
        let mut parts = rest.splitn(3, '/');
        let (owner, name, file) = match (parts.next(), parts.next(), parts.next()) {
            (Some(o), Some(n), Some(f)) if !o.is_empty() && !n.is_empty() && !f.is_empty() => (o, n, f),
            _ => return Some(Err(bad())),
        };
        let (name, revision) = match name.split_once('@') {
            Some((n, r)) if !n.is_empty() && !r.is_empty() => (n, r.to_string()),
            Some(_) => return Some(Err(bad())),
            None => (name, "main".to_string()),
        };
        Some(Ok(Self { repo: format!("{owner}/{name}"), revision, file: file.to_string() }))
    }

    fn repo(&self) -> Repo {
        Repo::with_revision(self.repo.clone(), RepoType::Model, self.revision.clone())
    }
}

/// The hf-hub cache folder: `cache_dir` if given, else `$HF_HOME/hub` (default `~/.cache/huggingface/hub`).
pub fn cache(cache_dir: Option<&Path>) -> Cache {
    match cache_dir {
        Some(d) => Cache::new(d.to_path_buf()),
        None => Cache::from_env(),
    }
}

/// Local path of a checkpoint argument: a plain path is returned as is; an `hf://`
/// reference is looked up in the cache and, unless `offline` (or `HF_HUB_OFFLINE=1`),
/// downloaded into it when missing.
pub fn resolve(spec: &str, cache_dir: Option<&Path>, offline: bool) -> Result<PathBuf> {
    let hub = match HubFile::parse(spec) {
        None => return Ok(PathBuf::from(spec)),
        Some(h) => h?,
    };
    let cache = cache(cache_dir);
    if let Some(p) = cache.repo(hub.repo()).get(&hub.file) {
        return Ok(p);
    }
    let offline = offline || std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    if offline {
        return Err(EvalError::Hub {
            spec: spec.to_string(),
            reason: format!("not in the cache {} and offline (run once online to fetch it)", cache.path().display()),
        });
    }
    let api = hf_hub::api::sync::ApiBuilder::from_cache(cache)
        .with_progress(true)
        .build()
        .map_err(|e| EvalError::Hub { spec: spec.to_string(), reason: e.to_string() })?;
    api.repo(hub.repo()).get(&hub.file).map_err(|e| EvalError::Hub { spec: spec.to_string(), reason: e.to_string() })
}
