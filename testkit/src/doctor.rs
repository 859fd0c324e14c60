//! `clawbus doctor` runs against a test's servers, and their reports.

use std::path::Path;

use crate::{AdapterConfig, clawbus};

/// Runs doctor with `config`, writing it into `dir`, reading the server's
/// monitoring endpoint on port `monitor`; (exit code, report).
pub fn doctor(dir: &Path, config: &AdapterConfig, monitor: u16) -> (i32, String) {
    let path = dir.join("doctor.toml");
    std::fs::write(&path, config.toml(0)).expect("write doctor config");
    let monitor = format!("http://127.0.0.1:{monitor}");
    let output = clawbus(&["doctor", "--config", path.to_str().expect("a UTF-8 path"), "--monitor", &monitor]);
    (output.status.code().unwrap_or(-1), String::from_utf8(output.stdout).expect("a UTF-8 report"))
}

/// The report's line for the check `what` (after the verdict's column).
pub fn report_line<'a>(report: &'a str, what: &str) -> &'a str {
    report
        .lines()
        .find(|line| line.get(6..).is_some_and(|rest| rest.starts_with(what)))
        .unwrap_or_else(|| panic!("no {what} line in:\n{report}"))
}
