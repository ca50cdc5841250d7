//! Download, verify and extract an archive atomically.
//!
//! Layout under the target folder `dir`:
//! - `NAME.part`: the download in progress; a rerun resumes it with an HTTP
//!   `Range` request (or restarts when the server does not honour ranges);
//! - `NAME`: the archive, renamed from `.part` only after its md5 matched;
//! - `.extract-FOLDER`: extraction scratch, renamed to `FOLDER` only once every
//!   expected member is present and whole; removed on failure.
//!
//! A failed or interrupted run therefore never leaves a half data set under
//! `FOLDER`, and a corrupt download is deleted so the rerun starts clean.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};

use crate::cifar::{Cifar, Split};
use crate::error::{io_err, DataError, Result};

/// What to fetch and how to know it is right.
#[derive(Clone, Debug)]
pub struct ArchiveSpec {
    /// Where to download from (http or https).
    pub url: String,
    /// File name of the archive under the target folder.
    pub archive_name: String,
    /// Expected md5 of the whole archive, lower-case hex.
    pub md5: String,
    /// Folder the archive extracts to (its top-level directory).
    pub folder: String,
    /// Members (file names inside `folder`) that must be present, with the record
    /// length their size must be a whole multiple of.
    pub members: Vec<(String, usize)>,
}

impl ArchiveSpec {
    /// The official CIFAR archive (SPEC section 2).
    pub fn cifar(kind: Cifar) -> Self {
        let members = [Split::Train, Split::Test]
            .iter()
            .flat_map(|&s| kind.files(s).iter().map(move |(n, _)| (n.to_string(), kind.record_len())))
            .collect();
        Self {
            url: kind.url(),
            archive_name: kind.archive_name().to_string(),
            md5: kind.archive_md5().to_string(),
            folder: kind.folder().to_string(),
            members,
        }
    }
}

/// What [`fetch`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// The extracted folder was already complete; nothing was done.
    AlreadyPresent(PathBuf),
    /// The archive was downloaded (or found verified) and extracted.
    Extracted(PathBuf),
}

/// md5 of a file, lower-case hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn members_complete(dir: &Path, spec: &ArchiveSpec) -> Result<()> {
    for (name, record_len) in &spec.members {
        let path = dir.join(name);
        let meta = fs::metadata(&path).map_err(|_| DataError::Missing {
            path: path.clone(),
            hint: format!("the archive {} lacks this member", spec.archive_name),
        })?;
        if meta.len() == 0 || !meta.len().is_multiple_of(*record_len as u64) {
            return Err(DataError::Truncated {
                path,
                len: meta.len(),
                record_len: *record_len,
                record: (meta.len() / *record_len as u64) as usize,
                partial: (meta.len() % *record_len as u64) as usize,
                format: "record",
            });
        }
    }
    Ok(())
}

/// Download (resuming a `.part` left by an interrupted run), verify the md5,
/// and extract atomically into `dir/spec.folder`. `progress` shows a bar.
pub fn fetch(spec: &ArchiveSpec, dir: &Path, progress: bool) -> Result<FetchOutcome> {
    let target = dir.join(&spec.folder);
    if target.is_dir() && members_complete(&target, spec).is_ok() {
        return Ok(FetchOutcome::AlreadyPresent(target));
    }
    let archive = dir.join(&spec.archive_name);
    fetch_file(&spec.url, &archive, &spec.md5, progress)?;
    extract_atomically(&archive, dir, spec)?;
    Ok(FetchOutcome::Extracted(target))
}

/// Download `url` to `dest` unless `dest` already has the expected `md5`: into
/// `dest.part` (resuming one left by an interrupted run), verified, then renamed, so
/// `dest` is never a partial or unverified file. A mismatching download is deleted and
/// reported with both sums. Returns whether it downloaded.
pub fn fetch_file(url: &str, dest: &Path, md5: &str, progress: bool) -> Result<bool> {
    if dest.is_file() && md5_file(dest)? == md5 {
        return Ok(false);
    }
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    download_resumable(url, &part, progress)?;
    let found = md5_file(&part)?;
    if found != md5 {
        let _ = fs::remove_file(&part);
        return Err(DataError::Checksum { path: part, algo: "md5", found, expected: md5.to_string() });
    }
    fs::rename(&part, dest).map_err(io_err(dest))?;
    Ok(true)
}

fn extract_atomically(archive: &Path, dir: &Path, spec: &ArchiveSpec) -> Result<()> {
    let scratch = dir.join(format!(".extract-{}", spec.folder));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err(&scratch))?;
    }
    let result = (|| {
        let f = File::open(archive).map_err(io_err(archive))?;
        tar::Archive::new(flate2::read::GzDecoder::new(f)).unpack(&scratch).map_err(io_err(archive))?;
        let extracted = scratch.join(&spec.folder);
        members_complete(&extracted, spec)?;
        let target = dir.join(&spec.folder);
        if target.exists() {
            fs::remove_dir_all(&target).map_err(io_err(&target))?;
        }
        fs::rename(&extracted, &target).map_err(io_err(&target))
    })();
    let _ = fs::remove_dir_all(&scratch);
    result
}

fn download_resumable(url: &str, part: &Path, progress: bool) -> Result<()> {
    let have = fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    let fail = |reason: String| DataError::Download { url: url.to_string(), reason };
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut req = agent.get(url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| fail(e.to_string()))?;
    let status = resp.status().as_u16();
    let (mut offset, append) = match status {
        206 => (have, true),
        200 => (0, false),
        416 if have > 0 => {
            // Our partial file is not a prefix the server recognises: start over.
            fs::remove_file(part).map_err(io_err(part))?;
            return download_resumable(url, part, progress);
        }
        s => return Err(fail(format!("HTTP status {s}"))),
    };
    let content_len: Option<u64> =
        resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let total = content_len.map(|n| n + offset);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(io_err(part))?;
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new(total.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(part.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        bar.set_position(offset);
        bar
    });
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
                return Err(fail(format!(
                    "{e}: stopped after {offset}{of} bytes; rerun to resume from {}",
                    part.display()
                )));
            }
        };
        file.write_all(&buf[..n]).map_err(io_err(part))?;
        offset += n as u64;
        if let Some(b) = &bar {
            b.set_position(offset);
        }
    }
    file.sync_all().map_err(io_err(part))?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(total) = total {
        if offset != total {
            return Err(fail(format!(
                "connection closed: stopped after {offset} of {total} bytes; rerun to resume from {}",
                part.display()
            )));
        }
    }
    Ok(())
}
