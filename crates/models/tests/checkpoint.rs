//! safetensors checkpoints: bit-exact round trips, self-describing metadata,
//! atomic writes, and clear errors for missing, corrupt or mismatched files.

use candle_core::{Device, Tensor};
use robal_models::checkpoint::{load, load_weights, save, CheckpointInfo};
use robal_models::{Arch, Classifier, HeadConfig, Mode, ModelConfig, Normalization};

fn config(arch: Arch, head: HeadConfig) -> ModelConfig {
    ModelConfig {
        arch,
        in_channels: 3,
        num_classes: 4,
        head,
        normalization: Some(Normalization { mean: vec![0.49, 0.48, 0.45], std: vec![0.25, 0.24, 0.26] }),
    }
}

#[test]
fn round_trip_is_bit_exact_and_rebuilds_the_model_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let head = HeadConfig::Cosine { scale: 10.0, gamma: 0.0625, bias: false };
    let mut m =
        Classifier::new(config(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, head), &Device::Cpu, 1).unwrap();
    let x = Tensor::rand(0f32, 1.0, (3, 3, 16, 16), &Device::Cpu).unwrap();
    m.forward(&x, Mode::Train).unwrap(); // move BN running statistics away from their init
    m.set_class_counts(vec![50, 20, 5, 2]).unwrap();
    m.set_posthoc(Some(1.7)).unwrap();
    let info = CheckpointInfo { epoch: 7, extra: [("trainer.step".to_string(), "123".to_string())].into() };
    save(&m, &path, &info).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    let (back, back_info) = load(&path, &Device::Cpu).unwrap();
    assert_eq!(back_info, info);
    assert_eq!(back.config(), m.config());
    assert_eq!(back.class_counts(), Some(&[50, 20, 5, 2][..]));
    assert_eq!(back.posthoc_tau(), Some(1.7));
    let (a, b) = (m.store().state(), back.store().state());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        let (u, v): (Vec<f32>, Vec<f32>) =
            (t.flatten_all().unwrap().to_vec1().unwrap(), b[name].flatten_all().unwrap().to_vec1().unwrap());
        assert!(u.iter().zip(&v).all(|(p, q)| p.to_bits() == q.to_bits()), "{name} differs");
    }
    let (za, zb) = (m.forward(&x, Mode::Eval).unwrap(), back.forward(&x, Mode::Eval).unwrap());
    assert_eq!(za.to_vec2::<f32>().unwrap(), zb.to_vec2::<f32>().unwrap());
}

#[test]
fn mismatched_architecture_lists_missing_unexpected_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("small.safetensors");
    let m = Classifier::new(
        config(Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 }, HeadConfig::FC),
        &Device::Cpu,
        1,
    )
    .unwrap();
    save(&m, &path, &CheckpointInfo::default()).unwrap();
    let other = Classifier::new(
        config(Arch::WideResNet { depth: 10, widen: 2, dropout: 0.0 }, HeadConfig::ROBAL_EVAL),
        &Device::Cpu,
        1,
    )
    .unwrap();
    let e = load_weights(&other, &path).unwrap_err().to_string();
    assert!(e.contains("small.safetensors: checkpoint does not match the model"), "{e}");
    assert!(
        e.contains("shape mismatch: backbone.block1.layer.0.conv1.weight: file [16, 16, 3, 3], model [32, 16, 3, 3]"),
        "{e}"
    );
    assert!(e.contains("unexpected: head.bias [4]"), "{e}");
    let resnet = Classifier::new(config(Arch::ResNet18, HeadConfig::FC), &Device::Cpu, 1).unwrap();
    let e = load_weights(&resnet, &path).unwrap_err().to_string();
    assert!(e.contains("missing: backbone.layer1.0.conv1.weight"), "{e}");
}

#[test]
fn missing_truncated_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(&dir.path().join("none.safetensors"), &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("none.safetensors: checkpoint not found"), "{e}");
    let m = Classifier::new(config(Arch::SmallCnn, HeadConfig::FC), &Device::Cpu, 1).unwrap();
    let path = dir.path().join("cut.safetensors");
    save(&m, &path, &CheckpointInfo::default()).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&path, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("cut.safetensors") && e.contains("truncated or corrupt"), "{e}");
    let foreign = dir.path().join("foreign.safetensors");
    candle_core::safetensors::save(
        &[("w", Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap())].into_iter().collect(),
        &foreign,
    )
    .unwrap();
    let e = load(&foreign, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("not a robal-rs checkpoint"), "{e}");
}

/// A hand-computed digest of one tensor: the layout `tensor_digest` documents, hashed
/// by sha2 directly (name, 0, dtype, 0, rank, dims, length, little-endian data).
#[test]
fn digest_follows_its_documented_layout() {
    use sha2::{Digest, Sha256};
    let data: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut h = Sha256::new();
    h.update(b"w\0F32\0");
    for v in [1u64, 2, 8] {
        h.update(v.to_le_bytes());
    }
    h.update(&data);
    let expected: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let got = robal_models::checkpoint::tensor_digest([("w", safetensors::Dtype::F32, &[2usize][..], &data[..])]);
    assert_eq!(got, expected);
    // Order of the tensors given does not matter; their names and bytes do.
    let a =
        [("a", safetensors::Dtype::F32, &[2usize][..], &data[..]), ("b", safetensors::Dtype::F32, &[2][..], &data[..])];
    let mut b = a;
    b.reverse();
    assert_eq!(robal_models::checkpoint::tensor_digest(a), robal_models::checkpoint::tensor_digest(b));
    let renamed = [("c", safetensors::Dtype::F32, &[2usize][..], &data[..])];
    assert_ne!(robal_models::checkpoint::tensor_digest(renamed), expected);
}

#[test]
fn a_flipped_byte_in_tensor_data_is_an_error_and_old_files_load_unchecked() {
    use robal_models::checkpoint::{load_checked, Integrity, DIGEST_KEY};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let m = Classifier::new(config(Arch::SmallCnn, HeadConfig::FC), &Device::Cpu, 1).unwrap();
    save(&m, &path, &CheckpointInfo::default()).unwrap();
    assert_eq!(load_checked(&path, &Device::Cpu).unwrap().2, Integrity::Verified);

    // Flip one bit of the last tensor byte (data, not header): still a valid
    // safetensors file, so only the digest can tell.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let flipped = dir.path().join("flipped.safetensors");
    std::fs::write(&flipped, &bytes).unwrap();
    let e = load(&flipped, &Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("flipped.safetensors") && e.contains("does not match its checksum"), "{e}");
    let e = load_weights(&m, &flipped).unwrap_err().to_string();
    assert!(e.contains("flipped.safetensors") && e.contains("checksum"), "{e}");

    // A file written before digests existed: same tensors and metadata, no digest.
    let bytes = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    assert!(meta.remove(DIGEST_KEY).is_some());
    let old = dir.path().join("old.safetensors");
    safetensors::serialize_to_file(st.tensors(), Some(meta), &old).unwrap();
    let (back, _, integrity) = load_checked(&old, &Device::Cpu).unwrap();
    assert_eq!(integrity, Integrity::Unchecked);
    let x = Tensor::rand(0f32, 1.0, (2, 3, 32, 32), &Device::Cpu).unwrap();
    let (za, zb) = (m.forward(&x, Mode::Eval).unwrap(), back.forward(&x, Mode::Eval).unwrap());
    assert_eq!(za.to_vec2::<f32>().unwrap(), zb.to_vec2::<f32>().unwrap());
}

#[test]
fn saving_replaces_the_old_file_whole_and_a_failed_save_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let m = Classifier::new(config(Arch::SmallCnn, HeadConfig::FC), &Device::Cpu, 1).unwrap();
    save(&m, &path, &CheckpointInfo { epoch: 1, extra: Default::default() }).unwrap();
    save(&m, &path, &CheckpointInfo { epoch: 2, extra: Default::default() }).unwrap();
    assert_eq!(load(&path, &Device::Cpu).unwrap().1.epoch, 2);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    // A folder where the file should go: the rename fails, the error names the target.
    let blocked = dir.path().join("blocked.safetensors");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("inside"), b"x").unwrap();
    let err = save(&m, &blocked, &CheckpointInfo { epoch: 1, extra: Default::default() }).unwrap_err().to_string();
    assert!(err.contains("blocked.safetensors") && err.contains("cannot write"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "the failed save's temp file is removed");
}
