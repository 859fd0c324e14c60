//! Every answer of the API, as the endpoints write it. Those the command
//! line client reads are also decoded by it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bus::{Health as NatsHealth, Placement};
use crate::fleet::{Acknowledged, AgentRow, Woken};
use crate::message::MessageView;
use crate::names::AgentName;
use crate::policy::WakeMode;
use crate::wake::{LastWake, WakeRecord};

/// Every error: `{"ok": false, "error": code, "message": text}`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ErrorAnswer {
    pub ok: bool,
    pub error: String,
    pub message: String,
}

/// `POST /api/send`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Sent {
    pub ok: bool,
    pub id: u64,
    pub timestamp: String,
    /// Shown only when true: the send matched an earlier one's key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// `GET /api/inbox`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Inbox {
    pub agent: AgentName,
    pub messages: Vec<MessageView>,
    pub unread: u64,
}

/// `POST /api/ack`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Acked {
    pub ok: bool,
    pub acked: u64,
    /// Ids named that are not in the agent's inbox.
    pub ignored: Vec<u64>,
}

/// `GET /api/history`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct History {
    pub agent: AgentName,
    pub with: Option<AgentName>,
    pub messages: Vec<MessageView>,
}

/// `POST /api/threads/{id}/release`.
#[derive(Debug, Serialize)]
pub(crate) struct Released {
    pub ok: bool,
    pub thread: u64,
    pub releases: u32,
}

/// `GET /healthz`.
#[derive(Debug, Serialize)]
pub(crate) struct Health {
    pub ok: bool,
}

/// `GET /readyz`: the NATS server JetStream answers through.
#[derive(Debug, Serialize)]
pub(crate) struct Ready {
    pub ok: bool,
    pub server: Option<String>,
}

/// `GET /api/agents`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Agents {
    pub agents: Vec<AgentEntry>,
    /// How old the listing is.
    pub age_ms: u64,
}

/// One agent of `GET /api/agents`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct AgentEntry {
    pub name: AgentName,
    pub host: String,
    pub online: bool,
    pub last_seen: Option<String>,
    pub unread: u64,
    pub wake_mode: Option<WakeMode>,
    /// What its wakes came to; `null` if it was never woken.
    pub wakes: Option<Wakes>,
}

impl From<&AgentRow> for AgentEntry {
    fn from(row: &AgentRow) -> Self {
        let status = &row.status;
        AgentEntry {
            name: status.inbox.agent.clone(),
            host: status.host.clone(),
            online: status.online,
            last_seen: status.last_seen.clone(),
            unread: row.unread,
            wake_mode: status.wake_mode,
            wakes: row.wakes.as_ref().map(Wakes::from),
        }
    }
}

/// An agent's wakes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Wakes {
    pub host: String,
    pub woken_up_to: u64,
    pub last: Option<LastWake>,
    pub failing: u32,
    pub sent: u64,
    pub failed: u64,
}

impl From<&WakeRecord> for Wakes {
    fn from(record: &WakeRecord) -> Self {
        let stats = &record.stats;
        Wakes {
            host: record.host.clone(),
            woken_up_to: record.up_to,
            last: stats.last.clone(),
            failing: stats.failing,
            sent: stats.sent,
            failed: stats.failed,
        }
    }
}

/// `GET /api/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct Stats<'a> {
    pub messages: u64,
    pub agents: usize,
    pub online: usize,
    pub unread: BTreeMap<&'a str, u64>,
    pub hosts: Vec<HostRow<'a>>,
    pub wakes: WakeStats<'a>,
    pub threads: ThreadStats,
    pub refusals: BTreeMap<&'a str, u64>,
    pub age_ms: u64,
    pub host: &'a str,
    pub nats: NatsStats,
}

/// A host of `GET /api/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct HostRow<'a> {
    pub host: &'a str,
    pub agents: usize,
    pub online: bool,
    pub last_seen: Option<&'a str>,
}

/// The fleet's wakes in `GET /api/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct WakeStats<'a> {
    pub sent: u64,
    pub failed: u64,
    pub coalesced: u64,
    pub failing: Vec<WakeFailing<'a>>,
    /// Over the last wake of each agent; `null` before any.
    pub latency_ms: Option<Latencies>,
}

/// An agent whose wakes fail.
#[derive(Debug, Serialize)]
pub(crate) struct WakeFailing<'a> {
    pub agent: &'a str,
    pub host: &'a str,
    pub failing: u32,
    pub last: Option<&'a LastWake>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Latencies {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ThreadStats {
    pub stopped: Vec<StoppedThread>,
}

/// A thread stopped as a loop.
#[derive(Debug, Serialize)]
pub(crate) struct StoppedThread {
    pub thread: u64,
    pub hops: u32,
    pub between: Vec<String>,
    pub stopped_at: Option<String>,
    pub releases: u32,
}

/// The NATS connection in `GET /api/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct NatsStats {
    pub connected: bool,
    pub health: NatsHealth,
    /// Where the stream lives; `null` while JetStream does not answer.
    pub stream: Option<Placement>,
}

/// `GET /api/messages/{id}`.
#[derive(Debug, Serialize)]
pub(crate) struct MessagePage {
    pub message: MessageView,
    pub path: PathSteps,
}

/// How far a message got.
#[derive(Debug, Serialize)]
pub(crate) struct PathSteps {
    pub stored: String,
    pub woken: Option<Woken>,
    pub acknowledged: Option<Acknowledged>,
}
