//! PyTorch's legacy checkpoint format (`torch.save` before 1.6, or with
//! `_use_new_zipfile_serialization=False`), as many robust models of 2019-2020 were
//! published. The file is a run of pickles and raw bytes:
//!
//! 1. the magic number 0x1950a86a20f9469cfc6c (pickled: [`MAGIC`]);
//! 2. the protocol version, 1001;
//! 3. system information (`{"protocol_version", "little_endian", "type_sizes"}`);
//! 4. the saved object (a `state_dict`, or a dict holding one), whose tensors are
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` with each
//!    storage a persistent id `("storage", <dtype>Storage, key, location, numel, view)`;
//! 5. the list of storage keys, in the order their bytes follow;
//! 6. for each key: its element count (u64, little endian), then its raw bytes.
//!
//! The pickles are parsed by candle's pickle reader; the layout around them is read
//! here, with every count checked against the bytes that are left. The format has no
//! checksum: a damaged byte inside tensor data cannot be detected (callers say so).

use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{Device, Tensor};

use crate::error::{ModelError, Result};

/// The pickled magic number that starts every legacy file (protocol 2, LONG1 of 10 bytes).
pub const MAGIC: &[u8] = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.";

/// The protocol version legacy files record.
const PROTOCOL_VERSION: i64 = 1001;

fn err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Checkpoint { path: path.to_path_buf(), reason: format!("PyTorch legacy format: {}", reason.into()) }
}

/// Whether `bytes` start like a legacy PyTorch file.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.starts_with(MAGIC)
}

/// One pickle from `cur`. candle's reader can panic on some malformed opcodes (an
/// integer wider than 8 bytes); that is caught and reported as a damaged file.
fn pickle(cur: &mut Cursor<&[u8]>, path: &Path, what: &str) -> Result<Object> {
    let start = cur.position();
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut stack = Stack::empty();
        stack.read_loop(cur)?;
        stack.finalize()
    }));
    match parsed {
        Ok(Ok(obj)) => Ok(obj),
        Ok(Err(e)) => Err(err(path, format!("the {what} (byte {start}) is not a readable pickle: {e}"))),
        Err(_) => Err(err(path, format!("the {what} (byte {start}) is a damaged pickle"))),
    }
}

fn int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(*i as i64),
        Object::Long(i) => Some(*i),
        _ => None,
    }
}

/// The tensors of the state dict inside `obj`: the dict itself when it holds tensors,
/// else its `state_dict` or `model` entry (a training checkpoint's usual shape).
fn state_dict(obj: Object) -> Option<Vec<(Object, Object)>> {
    let Object::Dict(entries) = obj else { return None };
    let holds_tensors = entries.iter().any(|(_, v)| matches!(v, Object::Reduce { .. }));
    if holds_tensors {
        return Some(entries);
    }
    let mut entries = entries;
    for key in ["state_dict", "model"] {
        if let Some(i) = entries.iter().position(|(k, _)| *k == Object::Unicode(key.into())) {
            return state_dict(entries.swap_remove(i).1);
        }
    }
    None
}

/// Read every tensor of a legacy file (names as saved), on the CPU.
pub fn read(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    if !is_legacy(bytes) {
        return Err(err(path, "the magic number is missing"));
    }
    let mut cur = Cursor::new(bytes);
    cur.set_position(MAGIC.len() as u64);
    let version = pickle(&mut cur, path, "protocol version")?;
    if int(&version) != Some(PROTOCOL_VERSION) {
        return Err(err(path, format!("protocol version {version:?}, expected {PROTOCOL_VERSION}")));
    }
    let sys = pickle(&mut cur, path, "system information")?;
    let little_endian = match &sys {
        Object::Dict(kv) => kv.iter().find(|(k, _)| *k == Object::Unicode("little_endian".into())).map(|(_, v)| v),
        _ => None,
    };
    if little_endian != Some(&Object::Bool(true)) {
        return Err(err(path, format!("system information {sys:?}: only little-endian files are supported")));
    }
    let saved = pickle(&mut cur, path, "saved object")?;
    let entries = state_dict(saved)
        .ok_or_else(|| err(path, "no tensors found (expected a state_dict, or a dict with `state_dict` or `model`)"))?;
    // candle's rebuild-argument reader indexes tuples without checking their length.
    let infos = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        entries
            .into_iter()
            .filter_map(|(name, value)| value.into_tensor_info(name, Path::new("")).ok().flatten())
            .collect::<Vec<_>>()
    }))
    .map_err(|_| err(path, "a tensor's rebuild arguments are damaged"))?;
    if infos.is_empty() {
        return Err(err(path, "the state_dict holds no tensors"));
    }
    let keys = match pickle(&mut cur, path, "storage key list")? {
        Object::List(keys) | Object::Tuple(keys) => keys,
        other => return Err(err(path, format!("the storage key list is {other:?}"))),
    };
    // Element size of each storage, from the tensors that use it.
    let storage_key = |p: &str| p.trim_start_matches('/').to_string();
    let mut elem: HashMap<String, usize> = HashMap::new();
    for info in &infos {
        elem.insert(storage_key(&info.path), info.dtype.size_in_bytes());
    }
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    let mut pos = cur.position() as usize;
    for key in keys {
        let Object::Unicode(key) = key else { return Err(err(path, format!("storage key {key:?} is not a string"))) };
        let size = *elem.get(&key).ok_or_else(|| err(path, format!("storage {key} is used by no tensor")))?;
        let count = bytes.get(pos..pos + 8).ok_or_else(|| {
            err(path, format!("truncated: the element count of storage {key} is missing (byte {pos})"))
        })?;
        let count = u64::from_le_bytes(count.try_into().unwrap_or_default());
        pos += 8;
        let left = bytes.len() - pos;
        let need = count.checked_mul(size as u64).filter(|&n| n <= left as u64).ok_or_else(|| {
            err(path, format!("truncated: storage {key} holds {count} elements of {size} bytes, {left} bytes are left"))
        })? as usize;
        storages.insert(key, &bytes[pos..pos + need]);
        pos += need;
    }
    if pos != bytes.len() {
        return Err(err(path, format!("{} unexpected bytes after the last storage", bytes.len() - pos)));
    }
    let mut tensors = Vec::with_capacity(infos.len());
    for info in infos {
        let key = storage_key(&info.path);
        let data =
            storages.get(&key).ok_or_else(|| err(path, format!("{}: storage {key} is not in the file", info.name)))?;
        if !info.layout.is_contiguous() {
            return Err(err(path, format!("{}: non-contiguous tensors are not supported", info.name)));
        }
        let start = info.layout.start_offset();
        let len = info.layout.dims().iter().try_fold(info.dtype.size_in_bytes(), |n, &d| n.checked_mul(d));
        let slice = len.and_then(|len| data.get(start..start.checked_add(len)?)).ok_or_else(|| {
            err(
                path,
                format!(
                    "{}: shape {:?} does not fit in storage {key} ({} bytes)",
                    info.name,
                    info.layout.dims(),
                    data.len()
                ),
            )
        })?;
        let t = Tensor::from_raw_buffer(slice, info.dtype, info.layout.dims(), &Device::Cpu)?;
        tensors.push((info.name, t));
    }
    Ok(tensors)
}
