//! A wrong clock for an adapter process: libfaketime, preloaded through
//! `env` (so that the adapter keeps the pid a test signals; the `faketime`
//! wrapper would fork).

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The command prefix that runs a program with its wall clock `offset` off
/// (`+10m`, `-10m`), its monotonic clock left alone; `None` where
/// libfaketime is not installed (`scripts/test.sh` installs it).
pub fn skewed(offset: &str) -> Option<Vec<String>> {
    let listed = Command::new("dpkg").args(["-L", "libfaketime"]).stderr(Stdio::null()).output().ok()?;
    let library = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(PathBuf::from)
        .find(|path| path.ends_with("libfaketime.so.1") && path.is_file())?;
    Some(vec![
        "env".into(),
        format!("LD_PRELOAD={}", library.display()),
        format!("FAKETIME={offset}"),
        "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
    ])
}
