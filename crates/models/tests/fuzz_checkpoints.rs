//! Property tests: checkpoint readers fed arbitrary bytes, damaged safetensors headers
//! and arbitrary pickles return an error naming the file, and never panic.

#[path = "../../../tests/support/fuzz.rs"]
mod fuzz;

use candle_core::Device;
use proptest::prelude::*;
use robal_models::checkpoint::{self, CheckpointInfo};
use robal_models::{Arch, Classifier, HeadConfig, ModelConfig};

fn model() -> Classifier {
    let cfg =
        ModelConfig { arch: Arch::SmallCnn, in_channels: 1, num_classes: 3, head: HeadConfig::FC, normalization: None };
    Classifier::new(cfg, &Device::Cpu, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_not_a_checkpoint(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            for name in ["x.safetensors", "x.pt"] {
                let p = tmp.path().join(name);
                std::fs::write(&p, &bytes).unwrap();
                let e = if name.ends_with("pt") {
                    checkpoint::import_pytorch(&model(), &p).unwrap_err().to_string()
                } else {
                    checkpoint::load(&p, &Device::Cpu).unwrap_err().to_string()
                };
                prop_assert!(e.contains(name), "{}", e);
            }
            Ok(())
        })?;
    }

    #[test]
    fn damaged_safetensors_headers_and_data_are_errors(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        fuzz::within(move || -> Result<(), TestCaseError> {
            let tmp = tempfile::tempdir().unwrap();
            let good = tmp.path().join("good.safetensors");
            checkpoint::save(&model(), &good, &CheckpointInfo { epoch: 3, extra: Default::default() }).unwrap();
            let mut bytes = std::fs::read(&good).unwrap();
            let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 8;
            // Damage the header (length prefix + JSON) or, with `cut`, truncate the file.
            if cut {
                bytes.truncate(8 + pos.index(bytes.len() - 8));
            } else {
                let i = pos.index(header);
                if bytes[i] == byte {
                    return Ok(());
                }
                bytes[i] = byte;
            }
            let bad = tmp.path().join("bad.safetensors");
            std::fs::write(&bad, &bytes).unwrap();
            match checkpoint::load_checked(&bad, &Device::Cpu) {
                Err(e) => prop_assert!(e.to_string().contains("bad.safetensors"), "{}", e),
                // A changed byte that leaves the header valid JSON with the same meaning
                // (e.g. inside a metadata string) must still load the same tensors.
                Ok((m, _, _)) => {
                    let a = model().store().state();
                    for (n, t) in m.store().state() {
                        let (x, y) = (t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), a[&n].flatten_all().unwrap().to_vec1::<f32>().unwrap());
                        prop_assert_eq!(x, y, "{}", n);
                    }
                }
            }
            Ok(())
        })?;
    }
}

/// A real PyTorch checkpoint (`fixtures/reference_wrn10_1_fc.pt`, the zip format of
/// torch.save) with one byte changed or cut short: imported, or an error naming the file.
#[test]
fn damaged_pytorch_checkpoints_import_or_name_the_file() {
    damaged_pytorch_files("reference_wrn10_1_fc.pt");
}

/// The same for PyTorch's legacy format (`fixtures/reference_wrn10_1_fc_legacy.pt`).
#[test]
fn damaged_legacy_pytorch_checkpoints_import_or_name_the_file() {
    damaged_pytorch_files("reference_wrn10_1_fc_legacy.pt");
}

fn damaged_pytorch_files(fixture: &str) {
    let original = std::fs::read(format!("{}/tests/fixtures/{fixture}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let wrn = || {
        let cfg = ModelConfig {
            arch: Arch::WideResNet { depth: 10, widen: 1, dropout: 0.0 },
            in_channels: 3,
            num_classes: 10,
            head: HeadConfig::FC,
            normalization: None,
        };
        Classifier::new(cfg, &Device::Cpu, 0).unwrap()
    };
    let mut runner =
        proptest::test_runner::TestRunner::new(ProptestConfig { cases: fuzz::cases(24), ..ProptestConfig::default() });
    let strategy = (any::<prop::sample::Index>(), any::<u8>(), any::<bool>());
    runner
        .run(&strategy, |(pos, byte, cut)| {
            let bytes = fuzz::damaged(original.clone(), pos.index(original.len()), byte, cut);
            fuzz::within(move || -> Result<(), TestCaseError> {
                let tmp = tempfile::tempdir().unwrap();
                let p = tmp.path().join("damaged.pt");
                std::fs::write(&p, &bytes).unwrap();
                if let Err(e) = checkpoint::import_pytorch(&wrn(), &p) {
                    prop_assert!(e.to_string().contains("damaged.pt"), "{}", e);
                }
                Ok(())
            })
        })
        .unwrap();
}
