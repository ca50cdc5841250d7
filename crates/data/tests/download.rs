//! Download, md5 check and atomic extraction against a local HTTP server.

mod support;

use std::path::Path;

use robal_data::download::{fetch, fetch_file, ArchiveSpec, FetchOutcome};
use robal_data::{cifar, Cifar, Dataset, Split};
use support::http_server::{cifar10_archive, md5_hex, serve};

fn spec(url: String, md5: String) -> ArchiveSpec {
    ArchiveSpec { url, md5, ..ArchiveSpec::cifar(Cifar::Cifar10) }
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn official_spec_is_the_spec_md5_and_url() {
    let s = ArchiveSpec::cifar(Cifar::Cifar10);
    assert_eq!(s.md5, "c32a1d4ab5d03f1284b67883e8d87530");
    assert!(s.url.ends_with("/cifar-10-binary.tar.gz"));
    assert_eq!(s.members.len(), 6);
    assert_eq!(ArchiveSpec::cifar(Cifar::Cifar100).md5, "03b5dce01913d631647c71ecec9e9cb8");
}

#[test]
fn good_archive_is_verified_extracted_and_not_fetched_twice() {
    let archive = cifar10_archive(3, false);
    let server = serve(archive.clone());
    let dir = tempfile::tempdir().unwrap();
    let s = spec(format!("{}/good/cifar-10-binary.tar.gz", server.base), md5_hex(&archive));
    let out = fetch(&s, dir.path(), false).unwrap();
    let folder = dir.path().join("cifar-10-batches-bin");
    assert_eq!(out, FetchOutcome::Extracted(folder.clone()));
    assert_eq!(listing(dir.path()), ["cifar-10-batches-bin", "cifar-10-binary.tar.gz"]);
    let test = cifar::read_batch_file(folder.join("test_batch.bin"), Cifar::Cifar10).unwrap();
    assert_eq!(test.labels(), &[0, 1, 2]);
    // Reading straight from the kept archive gives the same records.
    let e = cifar::read_tar_gz(dir.path().join("cifar-10-binary.tar.gz"), Cifar::Cifar10, Split::Test).unwrap_err();
    assert!(e.to_string().contains("holds 3 records, expected 10000"), "{e}");
    assert_eq!(fetch(&s, dir.path(), false).unwrap(), FetchOutcome::AlreadyPresent(folder));
    assert_eq!(server.log.lock().unwrap().len(), 1, "second run made no request");
}

#[test]
fn wrong_checksum_leaves_nothing_behind() {
    let archive = cifar10_archive(3, false);
    let server = serve(archive);
    let dir = tempfile::tempdir().unwrap();
    let s = spec(format!("{}/good/cifar-10-binary.tar.gz", server.base), "0".repeat(32));
    let e = fetch(&s, dir.path(), false).unwrap_err().to_string();
    assert!(e.contains("md5") && e.contains(&"0".repeat(32)) && e.contains("cifar-10-binary.tar.gz.part"), "{e}");
    assert!(listing(dir.path()).is_empty(), "left {:?}", listing(dir.path()));
}

#[test]
fn cut_short_download_resumes_with_a_range_request() {
    let archive = cifar10_archive(4, false);
    let server = serve(archive.clone());
    let dir = tempfile::tempdir().unwrap();
    let md5 = md5_hex(&archive);
    let e = fetch(&spec(format!("{}/cut/a.tar.gz", server.base), md5.clone()), dir.path(), false).unwrap_err();
    assert!(e.to_string().contains(&format!("stopped after {} of {} bytes", archive.len() / 2, archive.len())), "{e}");
    assert_eq!(listing(dir.path()), ["cifar-10-binary.tar.gz.part"], "only the partial download is kept");
    let out = fetch(&spec(format!("{}/good/a.tar.gz", server.base), md5), dir.path(), false).unwrap();
    assert!(matches!(out, FetchOutcome::Extracted(_)));
    let log = server.log.lock().unwrap().clone();
    assert_eq!(log[1], format!("/good/a.tar.gz range=Some({})", archive.len() / 2));
    assert_eq!(std::fs::read(dir.path().join("cifar-10-binary.tar.gz")).unwrap(), archive);
}

#[test]
fn server_without_ranges_restarts_cleanly() {
    let archive = cifar10_archive(2, false);
    let server = serve(archive.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cifar-10-binary.tar.gz.part"), b"stale bytes from another file").unwrap();
    let s = spec(format!("{}/norange/a.tar.gz", server.base), md5_hex(&archive));
    assert!(matches!(fetch(&s, dir.path(), false).unwrap(), FetchOutcome::Extracted(_)));
    assert_eq!(std::fs::read(dir.path().join("cifar-10-binary.tar.gz")).unwrap(), archive);
}

#[test]
fn stale_partial_beyond_the_end_restarts() {
    let archive = cifar10_archive(2, false);
    let server = serve(archive.clone());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cifar-10-binary.tar.gz.part"), vec![0u8; archive.len() + 10]).unwrap();
    let s = spec(format!("{}/good/a.tar.gz", server.base), md5_hex(&archive));
    assert!(matches!(fetch(&s, dir.path(), false).unwrap(), FetchOutcome::Extracted(_)));
}

#[test]
fn archive_with_a_truncated_member_is_not_installed() {
    let archive = cifar10_archive(3, true);
    let server = serve(archive.clone());
    let dir = tempfile::tempdir().unwrap();
    let s = spec(format!("{}/good/a.tar.gz", server.base), md5_hex(&archive));
    let e = fetch(&s, dir.path(), false).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin") && e.contains("cut short"), "{e}");
    assert_eq!(listing(dir.path()), ["cifar-10-binary.tar.gz"], "no half data set, no scratch");
}

#[test]
fn http_errors_are_reported_with_the_url() {
    let server = serve(vec![1, 2, 3]);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/nothing-here", server.base);
    let e = fetch(&spec(url.clone(), "0".repeat(32)), dir.path(), false).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("404"), "{e}");
    assert!(listing(dir.path()).iter().all(|n| n.ends_with(".part") || n.is_empty()));
}

#[test]
fn a_single_file_is_verified_renamed_and_not_fetched_twice() {
    let bytes = b"not really a numpy archive".to_vec();
    let server = serve(bytes.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sub").join("train.npz");
    let url = format!("{}/good/train.npz", server.base);
    assert!(fetch_file(&url, &dest, &md5_hex(&bytes), false).unwrap(), "downloaded");
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(listing(&dir.path().join("sub")), ["train.npz"], "no .part left");
    assert!(!fetch_file(&url, &dest, &md5_hex(&bytes), false).unwrap(), "verified copy kept");
    assert_eq!(server.log.lock().unwrap().len(), 1, "second run made no request");
}

#[test]
fn a_single_file_with_the_wrong_md5_is_an_error_naming_it_and_leaves_nothing() {
    let server = serve(b"something else".to_vec());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("val.npz");
    // The repack's real md5 (METHODS.md section 6): a different file cannot pass.
    let (name, md5) = robal_data::tiny_imagenet::NPZ_FILES[1];
    assert_eq!((name, md5), ("val.npz", "7762694b6217fec8ba1a7be3c20ef218"));
    let e = fetch_file(&format!("{}/good/val.npz", server.base), &dest, md5, false).unwrap_err().to_string();
    assert!(e.contains("val.npz.part") && e.contains(md5) && e.contains("md5"), "{e}");
    assert!(listing(dir.path()).is_empty(), "left {:?}", listing(dir.path()));
    assert_eq!(robal_data::tiny_imagenet::NPZ_FILES[0], ("train.npz", "db414016436353892fdf00cb30b9ee57"));
}
