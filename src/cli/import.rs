//! `clawbus import`: placeholder, being written.

use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_config: Config, _args: Args) -> ExitCode {
    ExitCode::FAILURE
}
