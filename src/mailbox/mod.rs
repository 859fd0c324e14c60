//! What agents do with the bus: send, read the inbox, acknowledge, look back,
//! follow live. One file per verb.
//!
//! Everything here is a JetStream operation on subject filters: a page of the
//! inbox is a few batched reads from the read mark on, an unread count is
//! three server-side counts, and nothing scans history it does not return.

mod ack;
mod history;
mod inbox;
mod limits;
mod live;
mod send;

use std::collections::HashSet;
use std::sync::Arc;

use crate::bus::{Bus, Inbox, Unavailable};
use crate::names::AgentName;
use crate::readstate::{self, ReadMark, Versioned};
use crate::registry::Registry;

pub(crate) use ack::Ack;
pub(crate) use history::HistoryQuery;
pub(crate) use inbox::InboxQuery;
pub(crate) use limits::{Refusal, Threading};
pub(crate) use send::NewMessage;

/// A failed mailbox operation, mapped to an HTTP status by the API layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailError {
    #[error("no adapter has ever registered agent {0}")]
    UnknownAgent(AgentName),
    #[error("no message {0}: never stored, or expired")]
    NoMessage(u64),
    #[error("{0} is not a registered agent, nor listed in http.senders: it may not send")]
    UnknownSender(AgentName),
    /// This host's NATS user may write only for its own agents.
    #[error("{agent} lives on host {host}, and this host may not write for it: use {host}'s adapter")]
    Elsewhere { agent: AgentName, host: String },
    #[error("the message exceeds the server's maximum payload")]
    TooLarge,
    /// Others kept changing the agent's read mark while this request tried
    /// to: nothing was changed, and a retry will most likely land.
    #[error("the read mark of {0} is being changed by other requests at the same time; try again")]
    Contended(AgentName),
    /// A conversation safety limit refused the send.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The same Idempotency-Key was settled as "not stored" too many times.
    #[error("this Idempotency-Key failed too often; send with a new one")]
    KeyExhausted,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The send may or may not have been stored.
    #[error(
        "the outcome is unknown: NATS did not answer in time to settle it (unreachable, stalled, or its disk full); \
         retry with the same Idempotency-Key"
    )]
    Unknown,
}

/// Who may act through this adapter, beyond what API tokens decide.
#[derive(Debug, Default)]
pub(crate) struct Rules {
    /// Names that may send without being registered agents.
    pub senders: HashSet<AgentName>,
    /// With least privilege: the names this host's NATS user may write for
    /// (its agents and senders). `None`: any.
    pub writes_only_for: Option<HashSet<AgentName>>,
    /// The fleet's conversation safety limits.
    pub limits: crate::policy::Limits,
}

#[derive(Clone)]
pub(crate) struct Mailbox {
    bus: Bus,
    registry: Arc<Registry>,
    rules: Arc<Rules>,
    hub: Arc<live::Hub>,
    acks: Arc<ack::Turns>,
}

impl Mailbox {
    pub(crate) fn new(bus: Bus, registry: Arc<Registry>, rules: Rules) -> Self {
        let hub = Arc::new(live::Hub::new(bus.clone()));
        Self { bus, registry, rules: Arc::new(rules), hub, acks: Arc::default() }
    }

    fn may_write_for(&self, agent: &AgentName) -> bool {
        self.rules.writes_only_for.as_ref().is_none_or(|own| own.contains(agent))
    }

    /// Refuses to write for an agent of another host when this host may not.
    async fn check_writable(&self, agent: &AgentName) -> Result<(), MailError> {
        if self.may_write_for(agent) {
            return Ok(());
        }
        let host = self.registry.host_of(agent).await?.unwrap_or_else(|| "unknown".into());
        Err(MailError::Elsewhere { agent: agent.clone(), host })
    }

    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    async fn inbox_of(&self, agent: &AgentName) -> Result<Inbox, MailError> {
        self.registry.inbox(agent).await?.ok_or_else(|| MailError::UnknownAgent(agent.clone()))
    }

    /// `agent`'s read mark, never ahead of the stream: a mark that covers ids
    /// not yet stored (left by an older version, or a stream re-created
    /// behind the adapter's back) is cut back to the newest message stored
    /// before the mark was written, and saved. Mail stored since stays unread.
    async fn read_mark(&self, agent: &AgentName) -> Result<Versioned, Unavailable> {
        let mut current = readstate::load(&self.bus, agent).await?;
        if current.mark.highest() > self.bus.seen() && current.mark.within(self.bus.last_sequence().await?).is_some() {
            let before = self.newest_before(current.written).await?;
            if let Some(repaired) = current.mark.within(before) {
                tracing::warn!(%agent, floor = current.mark.floor, before, "read mark was ahead of the stream; cut back");
                if !self.may_write_for(agent) {
                    // Its own host saves the repair; this read uses it.
                    current.mark = repaired;
                    return Ok(current);
                }
                // Whoever wins a race here wrote a mark at least as sane.
                readstate::save(&self.bus, agent, &current, &repaired).await?;
                current = readstate::load(&self.bus, agent).await?;
            }
        }
        Ok(current)
    }

    /// The newest message id stored before `at` (`None`: now).
    pub(crate) async fn newest_before(&self, at: Option<time::OffsetDateTime>) -> Result<u64, Unavailable> {
        let stored_since = match at {
            Some(at) => self.bus.first_stored_since(at).await?,
            None => None,
        };
        match stored_since {
            Some(first) => Ok(first - 1),
            None => self.bus.last_sequence().await,
        }
    }

    /// Unread messages in `inbox` under `mark`: its messages above the
    /// floor, less those the runs above it cover that still exist.
    pub(crate) async fn unread(&self, inbox: &Inbox, mark: &ReadMark) -> Result<u64, Unavailable> {
        let (above, oldest) = self.count_after(inbox, mark.floor).await?;
        // Messages expire oldest first: runs below the oldest message left
        // cover nothing now, and of the run it falls in, what follows it.
        let (read, straddling) = mark.read_from(oldest.unwrap_or(u64::MAX));
        let read_left = match straddling {
            Some(end) => above.saturating_sub(self.count_after(inbox, end).await?.0),
            None => 0,
        };
        Ok(above.saturating_sub(read).saturating_sub(read_left))
    }

    /// How many messages of `inbox` are stored after `after`, and a lower
    /// bound of the oldest one's id.
    async fn count_after(&self, inbox: &Inbox, after: u64) -> Result<(u64, Option<u64>), Unavailable> {
        let subjects = self.bus.subjects();
        let above = after.saturating_add(1);
        let broadcasts_from = after.max(inbox.since).saturating_add(1);
        let (to, broadcasts, own) =
            (subjects.to(&inbox.agent), subjects.broadcasts(), subjects.broadcast(&inbox.agent));
        let (direct, broadcasts, own) = tokio::try_join!(
            self.bus.count(&to, above),
            self.bus.count(&broadcasts, broadcasts_from),
            self.bus.count(&own, broadcasts_from),
        )?;
        let oldest = [direct.first, broadcasts.first].into_iter().flatten().min();
        Ok(((direct.total + broadcasts.total).saturating_sub(own.total), oldest))
    }
}
