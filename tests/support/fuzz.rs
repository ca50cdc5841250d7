//! The fuzz budget shared by the property tests of every reader (included with
//! `#[path]`): CI runs each property a small fixed number of times; `cargo xtask fuzz
//! --cases N` (or `ROBAL_FUZZ_CASES=N cargo test --release --test fuzz_...`) runs N, and
//! each case must end within `ROBAL_FUZZ_CASE_SECONDS` (default 10) or the property
//! fails as a hang.

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::Duration;

/// Cases per property: `ROBAL_FUZZ_CASES` if set, else `ci`.
pub fn cases(ci: u32) -> u32 {
    std::env::var("ROBAL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(ci)
}

/// The time limit of one case.
pub fn case_limit() -> Duration {
    let secs = std::env::var("ROBAL_FUZZ_CASE_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

/// Run one case on its own thread and wait at most [`case_limit`]: a case that runs
/// longer is reported as a hang (its thread is left behind; the property fails). A
/// panic in the case is re-raised here, so proptest sees and shrinks it.
pub fn within<T: Send + 'static>(case: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = channel();
    let handle = std::thread::spawn(move || {
        let out = case();
        let _ = tx.send(());
        out
    });
    match rx.recv_timeout(case_limit()) {
        Ok(()) | Err(RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(out) => out,
            Err(panic) => std::panic::resume_unwind(panic),
        },
        Err(RecvTimeoutError::Timeout) => panic!("a case ran longer than {:?}: a hang", case_limit()),
    }
}

/// `bytes` damaged at `i` (< len): cut short there (`cut`) or that byte replaced by
/// `byte` (the damage every file-format property applies; the caller resolves its
/// random index into the file's length).
#[allow(dead_code)] // included by several test crates; not all of them damage files
pub fn damaged(mut bytes: Vec<u8>, i: usize, byte: u8, cut: bool) -> Vec<u8> {
    if cut {
        bytes.truncate(i)
    } else {
        bytes[i] = byte
    }
    bytes
}
