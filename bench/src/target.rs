//! What the load generator drives: the adapters' HTTP API with wakes at the
//! gateways, raw JetStream with a consumer, or an HTTP endpoint that does
//! nothing. All answer the same questions, so every step is measured by the
//! same code.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The paths measured side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// HTTP send to one adapter, wake at another host's gateway.
    Clawbus,
    /// Publish with ack, receipt at an ordered consumer: JetStream's floor.
    Raw,
    /// The same HTTP send to an endpoint that answers at once: what one
    /// request costs before any work.
    Http,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Clawbus => "clawbus",
            Side::Raw => "raw",
            Side::Http => "http",
        }
    }

    /// What happens to a stored message at the far end.
    pub fn arrival(self) -> &'static str {
        match self {
            Side::Clawbus => "woken",
            Side::Raw => "received",
            Side::Http => "answered",
        }
    }
}

/// One send as the client saw it.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Which recipient (an index the target understands).
    pub to: usize,
    /// When an open-loop generator meant to send it.
    pub scheduled: Option<Instant>,
    /// The client clock just before the send.
    pub started: Instant,
    /// When the answer (HTTP 200, publish ack) or the error came back.
    pub answered: Instant,
    /// The message id (the stream sequence), or why it was not stored.
    pub outcome: Result<u64, String>,
}

/// When stored messages reached their recipients.
pub struct Arrivals {
    /// Per stored message, in the order asked: the first arrival covering it.
    pub at: Vec<Option<Instant>>,
    /// Wake calls (clawbus), consumer receipts (raw) or requests handled
    /// (the HTTP floor) since the step began.
    pub deliveries: usize,
}

pub trait Target: Send + Sync + 'static {
    const SIDE: Side;

    /// Sends one message (between two random agents, where there are
    /// agents).
    fn send(&self) -> impl Future<Output = Attempt> + Send;

    /// For each `(to, id)`, the earliest arrival so far that covers it.
    fn arrivals(&self, since: Instant, stored: &[(usize, u64)]) -> Arrivals;

    /// CPU time the system under test has used so far, where it runs
    /// apart (the adapters, the HTTP floor's thread; not the shared
    /// nats-server).
    fn cpu(&self) -> Option<Duration>;
}
