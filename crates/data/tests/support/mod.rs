//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod http_server;

use std::path::PathBuf;

/// The repository's `tests/fixtures` folder.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Numbers of a whitespace-separated fixture file.
pub fn read_numbers(name: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("fixture present");
    text.split_whitespace().map(|t| t.parse().expect("number")).collect()
}

/// `../shared/data/cifar-10-partial` (or `$ROBAL_CIFAR10_PARTIAL`), or None with a loud line.
pub fn shared_cifar(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("ROBAL_CIFAR10_PARTIAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar-10-partial"));
    if dir.join("test_batch_first1017.bin").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED {test}: real CIFAR-10 records not found at {} (set ROBAL_CIFAR10_PARTIAL to the cifar-10-partial folder)",
            dir.display()
        );
        None
    }
}

/// sha256 of bytes, lower-case hex.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    robal_data::download::hex(&sha2::Sha256::digest(bytes))
}
