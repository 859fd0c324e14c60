//! The HTTP API's bodies and answers as typed values: what a request may
//! hold (decoded by serde, refusing unknown fields), and every answer of
//! API.md (encoded by serde). The endpoints and the command-line client
//! share them, so a field added here is one the compiler carries to both.

mod answer;
mod decode;
mod field;
mod request;

pub use answer::{
    Acked, AgentEntry, Agents, ErrorAnswer, Health, History, HostRow, Inbox, Latencies, MessagePage, NatsStats,
    PathSteps, Ready, Released, Sent, Stats, StoppedThread, ThreadStats, WakeFailing, WakeStats,
};
pub use decode::{Invalid, agent_name, decode, only_known};
pub use request::{AckBody, SendBody, bad_priority};
