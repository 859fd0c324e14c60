//! `clawbus doctor`: placeholder, being written.

use std::path::Path;
use std::process::ExitCode;

pub fn run(_config: Option<&Path>) -> ExitCode {
    ExitCode::FAILURE
}
