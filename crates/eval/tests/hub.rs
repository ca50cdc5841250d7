//! `hf://` checkpoints resolved through a local hf-hub cache folder, offline: the
//! cache layout is the one hf-hub writes (`models--owner--name/refs/<rev>` holding the
//! commit, the file under `snapshots/<commit>/`).

use std::path::Path;

use candle_core::{Device, Tensor};
use robal_eval::hub::{resolve, HubFile};
use robal_eval::{load_model, EvalError, ModelFlags};
use robal_models::checkpoint::{save, CheckpointInfo};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig};

fn model() -> Classifier {
    let cfg = ModelConfig {
        arch: Arch::SmallCnn,
        in_channels: 1,
        num_classes: 10,
        head: HeadConfig::Cosine { scale: 10.0, gamma: 0.03125, bias: false },
        normalization: None,
    };
    Classifier::new(cfg, &Device::Cpu, 3).unwrap()
}

/// Put `model` into the cache as `owner/repo` at `revision` -> `commit`, file `name`.
fn cache_file(cache: &Path, revision: &str, commit: &str, name: &str, model: &Classifier) {
    let repo = cache.join("models--owner--repo");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join(revision), commit).unwrap();
    let file = repo.join("snapshots").join(commit).join(name);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    save(model, &file, &CheckpointInfo::default()).unwrap();
}

#[test]
fn parses_references() {
    let h = HubFile::parse("hf://owner/repo/sub/dir/model.safetensors").unwrap().unwrap();
    assert_eq!(
        (h.repo.as_str(), h.revision.as_str(), h.file.as_str()),
        ("owner/repo", "main", "sub/dir/model.safetensors")
    );
    let h = HubFile::parse("hf://owner/repo@v1.0/model.safetensors").unwrap().unwrap();
    assert_eq!((h.repo.as_str(), h.revision.as_str()), ("owner/repo", "v1.0"));
    assert!(HubFile::parse("runs/x/model.safetensors").is_none());
    for bad in ["hf://owner", "hf://owner/repo", "hf://owner/repo/", "hf://owner/@v1/file", "hf:///repo/file"] {
        assert!(matches!(HubFile::parse(bad), Some(Err(EvalError::Hub { .. }))), "{bad}");
    }
}

#[test]
fn cached_checkpoint_loads_offline_and_predicts_like_the_original() {
    let cache = tempfile::tempdir().unwrap();
    let original = model();
    cache_file(cache.path(), "main", "abc123", "ckpt/model.safetensors", &original);
    cache_file(cache.path(), "v1", "def456", "model.safetensors", &original);

    let path = resolve("hf://owner/repo/ckpt/model.safetensors", Some(cache.path()), true).unwrap();
    assert_eq!(path, cache.path().join("models--owner--repo/snapshots/abc123/ckpt/model.safetensors"));
    assert!(resolve("hf://owner/repo@v1/model.safetensors", Some(cache.path()), true)
        .unwrap()
        .ends_with("def456/model.safetensors"));

    let loaded = load_model(
        "hf://owner/repo/ckpt/model.safetensors",
        &ModelFlags::default(),
        Some(cache.path()),
        true,
        &Device::Cpu,
    )
    .unwrap();
    let x = Tensor::rand(0f32, 1f32, (4, 1, 28, 28), &Device::Cpu).unwrap();
    let a: Vec<Vec<f32>> = original.forward(&x, Mode::Eval).unwrap().to_vec2().unwrap();
    let b: Vec<Vec<f32>> = loaded.model.forward(&x, Mode::Eval).unwrap().to_vec2().unwrap();
    assert_eq!(a, b);
}

#[test]
fn missing_file_offline_names_the_reference_and_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    cache_file(cache.path(), "main", "abc123", "model.safetensors", &model());
    for spec in [
        "hf://owner/repo/other.safetensors",
        "hf://owner/repo@v2/model.safetensors",
        "hf://someone/else/model.safetensors",
    ] {
        let err = resolve(spec, Some(cache.path()), true).unwrap_err().to_string();
        assert!(
            err.contains(spec) && err.contains("offline") && err.contains(&cache.path().display().to_string()),
            "{err}"
        );
    }
}
