//! Why an import stopped, with its cause, and the exit code that says so.

use std::path::PathBuf;

use async_nats::jetstream::kv;

use super::source::SourceError;
use crate::bus::{self, SendError};
use crate::cli::Exit;
use crate::mailbox::MailError;
use crate::names::AgentName;

#[derive(Debug, thiserror::Error)]
pub(super) enum ImportError {
    #[error(
        "import publishes as every sender of the old bus and writes every agent's read marks, which a host's \
         least-privilege NATS user may not: run it with the provisioning user's config (the one for `clawbus \
         setup`) and nats.least_privilege = false (or CLAWBUS_NATS__LEAST_PRIVILEGE=false)"
    )]
    LeastPrivilege,
    #[error("--source {0:?} may contain only letters, digits, '_' and '-' (1 to 64)")]
    SourceName(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Unreached(#[from] bus::Unreached),
    /// NATS was reached, but what the import starts from could not be read.
    #[error("{what}")]
    Unavailable {
        what: &'static str,
        #[source]
        source: bus::Unavailable,
    },
    #[error("cannot read the progress record {key}")]
    ProgressRead {
        key: String,
        #[source]
        source: kv::EntryError,
    },
    #[error("the progress record {key} does not parse (delete it only if nothing of this source was imported)")]
    ProgressParse {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot create the progress record {key}")]
    ProgressCreate {
        key: String,
        #[source]
        source: kv::CreateError,
    },
    #[error("the progress record {key} changed meanwhile: another import of the same source is running")]
    ProgressChanged { key: String },
    #[error("cannot record the progress")]
    ProgressWrite(#[source] kv::UpdateError),
    #[error("cannot read the stream")]
    Stream(#[source] bus::Unavailable),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("row {row}: its message ids are all taken")]
    IdsTaken { row: i64 },
    #[error("row {row}")]
    Store {
        row: i64,
        #[source]
        source: SendError,
    },
    /// NATS stayed away longer than one step waits for it.
    #[error("{what}")]
    Patience {
        what: &'static str,
        #[source]
        source: bus::Unavailable,
    },
    #[error("cannot acknowledge for {agent}")]
    Ack {
        agent: AgentName,
        #[source]
        source: MailError,
    },
}

impl ImportError {
    /// How the command exits: 2 for what is wrong before anything is tried,
    /// 5 when NATS cannot be reached (nothing was done), 1 for a failure
    /// while importing (running again continues).
    pub(super) fn exit(&self) -> Exit {
        match self {
            ImportError::LeastPrivilege
            | ImportError::SourceName(_)
            | ImportError::Source(_)
            | ImportError::Unreached(bus::Unreached::Setup(_)) => Exit::Usage,
            ImportError::Unreached(bus::Unreached::Timeout { .. }) | ImportError::Unavailable { .. } => {
                Exit::Unavailable
            }
            ImportError::ProgressRead { .. }
            | ImportError::ProgressParse { .. }
            | ImportError::ProgressCreate { .. }
            | ImportError::ProgressChanged { .. }
            | ImportError::ProgressWrite(_)
            | ImportError::Stream(_)
            | ImportError::Read { .. }
            | ImportError::IdsTaken { .. }
            | ImportError::Store { .. }
            | ImportError::Patience { .. }
            | ImportError::Ack { .. } => Exit::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cli::chain;

    #[test]
    fn a_failed_row_keeps_its_cause_down_to_jetstream() {
        let refusal = std::io::Error::other("insufficient resources");
        let cause = bus::Unavailable::caused("JetStream refused the message", refusal);
        let err = ImportError::Store { row: 42, source: SendError::Unavailable(cause) };
        assert_eq!(chain(&err), "row 42: NATS is unavailable: JetStream refused the message: insufficient resources");
        assert_eq!(err.exit(), Exit::Refused);
    }

    #[test]
    fn exit_codes_say_what_was_tried() {
        let timeout = bus::Unreached::Timeout { url: "nats://127.0.0.1:1".into(), patience: Duration::from_secs(1) };
        assert_eq!(ImportError::Unreached(timeout).exit(), Exit::Unavailable, "NATS away: try again");
        let setup = bus::Unreached::Setup(anyhow::anyhow!("no credentials file"));
        assert_eq!(ImportError::Unreached(setup).exit(), Exit::Usage, "a config that cannot connect");
        assert_eq!(ImportError::Source(SourceError::NoFile("bus.db".into())).exit(), Exit::Usage);
        assert_eq!(ImportError::ProgressChanged { key: "import.x".into() }.exit(), Exit::Refused);
    }
}
