//! How a command ended, as the exit codes scripts rely on.

use std::process::ExitCode;

/// How a client command (or `import`) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// The adapter refused the request (4xx other than 404) or failed (5xx
    /// other than 503/504).
    Refused = 1,
    /// Bad arguments or config.
    Usage = 2,
    /// No adapter answered at the URL.
    Unreachable = 3,
    /// An unknown agent (404).
    NotFound = 4,
    /// NATS is unavailable right now (503/504): try again.
    Unavailable = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}
