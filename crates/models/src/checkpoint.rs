//! safetensors checkpoints that rebuild their own model, and import of the
//! reference implementation's PyTorch `state_dict` files.
//!
//! Metadata keys (all strings): `robal.format` ("1"), `robal.model` (the
//! [`ModelConfig`] as JSON), `robal.class_counts` (JSON list, optional),
//! `robal.posthoc_tau` (optional), `robal.epoch`, `robal.sha256` (see
//! [`tensor_digest`]), and any caller extras under their own keys (e.g. the
//! trainer's state).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::View;
use sha2::{Digest, Sha256};

use crate::arch::{ModelConfig, Normalization};
use crate::classifier::Classifier;
use crate::error::{ModelError, Result};

/// What a checkpoint holds beside the tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointInfo {
    /// Training epoch at which it was written.
    pub epoch: u64,
    /// Other metadata entries (keys not starting with `robal.`).
    pub extra: BTreeMap<String, String>,
}

/// Metadata key of the tensor digest.
pub const DIGEST_KEY: &str = "robal.sha256";

/// Whether a loaded file's tensors were checked against its digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// `robal.sha256` was present and matched the tensor bytes.
    Verified,
    /// The file carries no digest (written before robal-rs recorded one, or by
    /// another tool); its tensors were loaded unchecked.
    Unchecked,
}

/// The digest of a checkpoint's tensors, as hex: SHA-256 over every tensor in
/// ascending name order of
/// `name ‖ 0x00 ‖ dtype ‖ 0x00 ‖ rank (u64 LE) ‖ dims (u64 LE each) ‖ len (u64 LE) ‖ data`,
/// where `dtype` is safetensors' name (`F32`, `I64`, ...) and `data` the little-endian
/// bytes as stored. Independent of where the tensors sit in the file, so the
/// same weights give the same digest whoever wrote them.
pub fn tensor_digest<'a>(
    tensors: impl IntoIterator<Item = (&'a str, safetensors::Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut sorted: Vec<_> = tensors.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in sorted {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(format!("{dtype:?}").as_bytes());
        h.update([0]);
        h.update((shape.len() as u64).to_le_bytes());
        for &d in shape {
            h.update((d as u64).to_le_bytes());
        }
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What a model computes, as hex: SHA-256 of its [`ModelConfig`] (JSON), post-hoc
/// `tau_p`, class counts and [`tensor_digest`] of every parameter and buffer.
/// Two models with the same digest give the same logits, wherever their files sit:
/// an evaluation's saved progress is keyed by it, so a moved or renamed run folder
/// still resumes.
pub fn model_digest(model: &Classifier) -> Result<String> {
    let (_, tensors) = cpu_state(model)?;
    let config = serde_json::to_string(model.config())
        .map_err(|e| ModelError::Invalid { what: "model config", reason: format!("does not serialize: {e}") })?;
    let mut h = Sha256::new();
    for part in [config, format!("{:?}", model.posthoc_tau()), format!("{:?}", model.class_counts()), tensors] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every parameter and buffer of `model`, contiguous on the CPU, with their [`tensor_digest`].
fn cpu_state(model: &Classifier) -> Result<(Vec<(String, Tensor)>, String)> {
    let state: Vec<(String, Tensor)> = model
        .store()
        .state()
        .into_iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_>>()?;
    let data: Vec<_> = state.iter().map(|(n, t)| (n.as_str(), View::dtype(t), View::shape(t), View::data(t))).collect();
    let digest = tensor_digest(data.iter().map(|(n, d, s, b)| (*n, *d, *s, b.as_ref())));
    Ok((state, digest))
}

fn ckpt_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), reason: reason.into() }
}

/// Save every parameter and buffer of `model` with its settings, atomically.
pub fn save(model: &Classifier, path: &Path, info: &CheckpointInfo) -> Result<()> {
    let mut meta: HashMap<String, String> = info.extra.clone().into_iter().collect();
    meta.insert("robal.format".into(), "1".into());
    meta.insert(
        "robal.model".into(),
        serde_json::to_string(model.config()).map_err(|e| ckpt_err(path, e.to_string()))?,
    );
    meta.insert("robal.epoch".into(), info.epoch.to_string());
    if let Some(c) = model.class_counts() {
        meta.insert("robal.class_counts".into(), serde_json::to_string(c).map_err(|e| ckpt_err(path, e.to_string()))?);
    }
    if let Some(t) = model.posthoc_tau() {
        meta.insert("robal.posthoc_tau".into(), format!("{t:?}"));
    }
    let (state, digest) = cpu_state(model)?;
    meta.insert(DIGEST_KEY.into(), digest);
    let bytes = safetensors::serialize(state.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| ckpt_err(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` so that readers see the old file or the new one, never a
/// partial one: a temporary file in the same folder, flushed to disk, renamed over
/// `path`. Errors name `path`, not the temporary file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let write_err = |source| ModelError::Write { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(write_err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(write_err)?;
    tmp.as_file().sync_all().map_err(write_err)?;
    tmp.persist(path).map_err(|e| write_err(e.error))?;
    Ok(())
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        ckpt_err(
            path,
            if e.kind() == std::io::ErrorKind::NotFound {
                "checkpoint not found".to_string()
            } else {
                format!("cannot read: {e}")
            },
        )
    })
}

/// What [`read_safetensors`] returns: tensors by name, metadata, digest check.
type FileContents = (BTreeMap<String, Tensor>, HashMap<String, String>, Integrity);

/// Tensors and metadata of a safetensors file, its digest checked when it has one.
fn read_safetensors(path: &Path) -> Result<FileContents> {
    let bytes = read_file(path)?;
    let view = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a safetensors file (truncated or corrupt?): {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| ckpt_err(path, format!("not a safetensors file (truncated or corrupt?): {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let integrity = match meta.get(DIGEST_KEY) {
        None => Integrity::Unchecked,
        Some(expected) => {
            let views = view.tensors();
            let actual = tensor_digest(views.iter().map(|(n, t)| (n.as_str(), t.dtype(), t.shape(), t.data())));
            if &actual != expected {
                return Err(ckpt_err(
                    path,
                    format!("tensor data does not match its checksum ({DIGEST_KEY} {expected}, computed {actual}): the file is corrupt; restore it from a copy or retrain"),
                ));
            }
            Integrity::Verified
        }
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| ckpt_err(path, format!("cannot decode tensors: {e}")))?;
    Ok((tensors.into_iter().collect(), meta, integrity))
}

/// The metadata of a safetensors file (`__metadata__` of its JSON header), read
/// without loading its tensors; `robal.epoch` is the epoch of a checkpoint.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| ckpt_err(path, format!("cannot read: {e}")))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| ckpt_err(path, format!("no safetensors header: {e}")))?;
    let len = u64::from_le_bytes(len);
    // safetensors caps its header at 100 MB; a larger length is a damaged file.
    if len > 100_000_000 {
        return Err(ckpt_err(path, format!("header length {len} is not a safetensors header")));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).map_err(|e| ckpt_err(path, format!("safetensors header cut short: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| ckpt_err(path, format!("safetensors header is not JSON: {e}")))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default())
}

/// Load a robal-rs checkpoint: rebuilds the model from its metadata, then loads
/// every tensor (exact names and shapes required). A file whose `robal.sha256`
/// does not match its tensors is an error naming it.
pub fn load(path: &Path, device: &Device) -> Result<(Classifier, CheckpointInfo)> {
    load_checked(path, device).map(|(m, info, _)| (m, info))
}

/// [`load`], also saying whether the tensors were verified against a digest (files
/// written before robal-rs recorded one load [`Integrity::Unchecked`]).
pub fn load_checked(path: &Path, device: &Device) -> Result<(Classifier, CheckpointInfo, Integrity)> {
    let (tensors, meta, integrity) = read_safetensors(path)?;
    let config_json = meta.get("robal.model").ok_or_else(|| {
        ckpt_err(path, "no `robal.model` metadata: not a robal-rs checkpoint (a PyTorch or foreign file needs --arch/--head flags and import)")
    })?;
    let config: ModelConfig =
        serde_json::from_str(config_json).map_err(|e| ckpt_err(path, format!("bad `robal.model` metadata: {e}")))?;
    let mut model = Classifier::new(config, device, 0)?;
    load_state(&model, path, &tensors)?;
    if let Some(c) = meta.get("robal.class_counts") {
        let counts: Vec<usize> =
            serde_json::from_str(c).map_err(|e| ckpt_err(path, format!("bad `robal.class_counts`: {e}")))?;
        model.set_class_counts(counts)?;
    }
    if let Some(t) = meta.get("robal.posthoc_tau") {
        let tau: f64 = t.parse().map_err(|_| ckpt_err(path, format!("bad `robal.posthoc_tau` {t:?}")))?;
        model.set_posthoc(Some(tau))?;
    }
    Ok((model, info_of(meta), integrity))
}

/// Load the tensors of `path` into an existing model (e.g. one built from flags),
/// reporting missing, unexpected and mis-shaped tensors; returns the file's epoch and extras.
pub fn load_weights(model: &Classifier, path: &Path) -> Result<CheckpointInfo> {
    let (tensors, meta, _) = read_safetensors(path)?;
    load_state(model, path, &tensors)?;
    Ok(info_of(meta))
}

/// The tensors of a checkpoint that carries no architecture, under our names: a
/// PyTorch file (names mapped by [`map_reference_name`], with a normalisation wrapper's
/// mean and std), or a safetensors file holding our names.
pub struct ForeignState {
    /// Our tensor name -> tensor (f32).
    pub tensors: BTreeMap<String, Tensor>,
    /// Input normalisation a wrapper stored in the file, if any.
    pub normalization: Option<Normalization>,
    /// The file's format.
    pub format: ForeignFormat,
}

/// The format of a foreign checkpoint, and so what could be checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignFormat {
    /// safetensors with our names (no checksum of its own).
    Safetensors,
    /// PyTorch's zip format (`torch.save` since 1.6): every entry's CRC32 was checked.
    PytorchZip,
    /// PyTorch's legacy format ([`crate::torch_legacy`]): it carries no checksum, so
    /// damaged tensor data cannot be detected.
    PytorchLegacy,
}

/// Read a foreign checkpoint: `.safetensors` by its tensor names, anything else as a
/// PyTorch file (zip entries' CRC32 checked; see [`import_pytorch_with_normalization`]).
pub fn read_foreign(path: &Path) -> Result<ForeignState> {
    if path.extension().is_some_and(|e| e == "safetensors") {
        let (tensors, _, _) = read_safetensors(path)?;
        return Ok(ForeignState { tensors, normalization: None, format: ForeignFormat::Safetensors });
    }
    read_pytorch(path)
}

/// What a foreign checkpoint's own shapes say about the model it holds, for `arch`:
/// the input channels (dimension 1 of the first convolution's weight, the one that
/// takes the image) and the classes (dimension 0 of the head's weight), each with the
/// tensor it was read from. `None` where the file lacks that tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct ForeignShape {
    /// (input channels, tensor name).
    pub in_channels: Option<(usize, String)>,
    /// (classes, tensor name).
    pub num_classes: Option<(usize, String)>,
}

/// Read [`ForeignShape`] from `state` for `arch`. The first convolution is found on a
/// probe model of `arch` (3 input channels, 10 classes, on the CPU) as its only 4-D
/// weight with 3 input channels; the head's weight is `head.weight`.
pub fn foreign_shape(arch: crate::arch::Arch, state: &ForeignState) -> Result<ForeignShape> {
    let probe = Classifier::new(
        ModelConfig { arch, in_channels: 3, num_classes: 10, head: crate::arch::HeadConfig::FC, normalization: None },
        &Device::Cpu,
        0,
    )?;
    let stem: Vec<String> = probe
        .store()
        .state()
        .into_iter()
        .filter(|(n, t)| n.starts_with("backbone.") && t.rank() == 4 && t.dims()[1] == 3)
        .map(|(n, _)| n)
        .collect();
    let dim = |name: &str, d: usize| {
        state.tensors.get(name).filter(|t| t.rank() > d).map(|t| (t.dims()[d], name.to_string()))
    };
    let in_channels = match stem.as_slice() {
        [one] => dim(one, 1),
        _ => None,
    };
    Ok(ForeignShape { in_channels, num_classes: dim("head.weight", 0) })
}

/// Load a foreign checkpoint's tensors into `model` (built for it), reporting missing,
/// unexpected and mis-shaped tensors by name.
pub fn load_foreign(model: &Classifier, path: &Path, state: &ForeignState) -> Result<()> {
    load_state(model, path, &state.tensors)
}

fn info_of(meta: HashMap<String, String>) -> CheckpointInfo {
    let epoch = meta.get("robal.epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
    let extra = meta.into_iter().filter(|(k, _)| !k.starts_with("robal.")).collect();
    CheckpointInfo { epoch, extra }
}

fn load_state(model: &Classifier, path: &Path, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    model.store().load_state(tensors).map_err(|report| ModelError::Mismatch { path: path.to_path_buf(), report })
}

/// Rename one tensor of a PyTorch checkpoint to ours, or `None` to skip it. Covers the
/// layouts people have:
/// - the RoBal reference code (`backbone.*`, `classifier.fc.*` / `classifier.*`; the
///   unused `sub_block1` of the TRADES WideResNet is dropped);
/// - the common CIFAR ResNet / PreAct-ResNet (`conv1`, `layer1.0.shortcut.0`, `linear.*`),
///   as in most adversarial-training papers and AutoAttack's example;
/// - RobustBench-style WideResNets (`block1.layer.0.*`, `fc.*`), whose normalisation
///   wrapper's `mu`/`sigma` (or `mean`/`std`) tensors [`import_pytorch`] reads separately;
/// - torchvision ResNets (`layer2.0.downsample.0`, `fc.*`).
///
/// `module.`/`model.` wrappers (DataParallel, normalisation wrappers) are stripped,
/// `linear.*`, `fc.*` and `classifier.*` become `head.*`, anything else outside
/// `backbone.`/`head.` goes under `backbone.`; `num_batches_tracked` is dropped.
pub fn map_reference_name(name: &str) -> Option<String> {
    let mut n = name;
    while let Some(rest) = n.strip_prefix("module.").or_else(|| n.strip_prefix("model.")) {
        n = rest;
    }
    if n.ends_with("num_batches_tracked") || n.starts_with("backbone.sub_block1.") || n.starts_with("sub_block1.") {
        return None;
    }
    if is_normalization_key(n) {
        return None;
    }
    for head in ["classifier.fc.", "classifier.", "linear.", "fc."] {
        if let Some(rest) = n.strip_prefix(head) {
            return Some(format!("head.{rest}"));
        }
    }
    if n.starts_with("backbone.") || n.starts_with("head.") {
        return Some(n.to_string());
    }
    Some(format!("backbone.{n}"))
}

/// Names of a normalisation wrapper's (mean, std) tensors.
const NORMALIZATION_KEYS: [[&str; 2]; 2] = [["mu", "sigma"], ["mean", "std"]];

/// Whether `bare` (wrappers stripped) is one of a normalisation wrapper's tensors.
fn is_normalization_key(bare: &str) -> bool {
    NORMALIZATION_KEYS.iter().flatten().any(|k| *k == bare)
}

/// Check the CRC32 that a zip checkpoint (`torch.save` since 1.6) stores for every entry,
/// by reading each entry to its end (the zip reader compares the checksum there; candle
/// reads tensor storages by size and never gets that far). A flipped byte in a tensor's
/// data is then an error naming the file and the entry, not silently different weights.
/// Files that are not zip archives (PyTorch's legacy format) carry no checksum and pass.
pub fn verify_zip_entries(path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| ckpt_err(path, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 4];
    let is_zip = std::io::Read::read_exact(&mut file, &mut magic).is_ok() && magic == *b"PK\x03\x04";
    if !is_zip {
        return Ok(());
    }
    let mut archive =
        zip::ZipArchive::new(file).map_err(|e| ckpt_err(path, format!("not a readable PyTorch checkpoint: {e}")))?;
    for i in 0..archive.len() {
        let mut entry =
            archive.by_index(i).map_err(|e| ckpt_err(path, format!("zip entry {i} cannot be read: {e}")))?;
        let name = entry.name().map(|n| n.to_string()).unwrap_or_else(|_| format!("#{i}"));
        std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| {
            ckpt_err(path, format!("zip entry {name}: {e} (the stored CRC32 does not match: the file is corrupted)"))
        })?;
    }
    Ok(())
}

/// Load a PyTorch checkpoint of the reference implementation (a `state_dict`, or a
/// dict holding one under `state_dict`/`model`) into `model`, mapping names with
/// [`map_reference_name`]. The architecture comes from the caller.
pub fn import_pytorch(model: &Classifier, path: &Path) -> Result<()> {
    import_pytorch_with_normalization(model, path).map(|_| ())
}

/// [`import_pytorch`], returning the input normalisation (mean, std) a wrapper stored in
/// the checkpoint as `mu`/`sigma` or `mean`/`std` tensors, if any (set it on the model
/// with [`Classifier::set_normalization`], or the inputs are not normalised as trained).
pub fn import_pytorch_with_normalization(model: &Classifier, path: &Path) -> Result<Option<Normalization>> {
    let state = read_pytorch(path)?;
    load_state(model, path, &state.tensors)?;
    Ok(state.normalization)
}

/// A PyTorch checkpoint's tensors under our names, and its normalisation wrapper's.
fn read_pytorch(path: &Path) -> Result<ForeignState> {
    if !path.is_file() {
        return Err(ckpt_err(path, "checkpoint not found"));
    }
    let mut head = [0u8; 16];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| ckpt_err(path, format!("cannot read: {e}")))?;
    let legacy = crate::torch_legacy::is_legacy(&head[..n]);
    let mut raw = if legacy {
        let bytes = std::fs::read(path).map_err(|e| ckpt_err(path, format!("cannot read: {e}")))?;
        crate::torch_legacy::read(path, &bytes)?
    } else {
        verify_zip_entries(path)?;
        candle_core::pickle::read_all(path)
            .map_err(|e| ckpt_err(path, format!("not a readable PyTorch checkpoint: {e}")))?
    };
    if raw.is_empty() && !legacy {
        for key in ["state_dict", "model"] {
            raw = candle_core::pickle::read_all_with_key(path, Some(key)).unwrap_or_default();
            if !raw.is_empty() {
                break;
            }
        }
    }
    if raw.is_empty() {
        return Err(ckpt_err(path, "no tensors found (expected a state_dict, or a dict with `state_dict`)"));
    }
    let mut tensors = BTreeMap::new();
    let mut wrapper = BTreeMap::new();
    for (name, t) in raw {
        let bare = name.trim_start_matches("module.").trim_start_matches("model.");
        if is_normalization_key(bare) {
            wrapper.insert(bare.to_string(), t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?);
        } else if let Some(ours) = map_reference_name(&name) {
            tensors.insert(ours, t.to_dtype(DType::F32)?);
        }
    }
    let normalization = NORMALIZATION_KEYS
        .iter()
        .find_map(|[m, s]| Some(Normalization { mean: wrapper.get(*m)?.clone(), std: wrapper.get(*s)?.clone() }));
    let format = if legacy { ForeignFormat::PytorchLegacy } else { ForeignFormat::PytorchZip };
    Ok(ForeignState { tensors, normalization, format })
}
