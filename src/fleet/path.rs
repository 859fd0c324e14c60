//! `GET /api/messages/{id}`: one message and how far it got.

use serde::Serialize;

use super::FleetView;
use crate::mailbox::MailError;
use crate::message::MessageView;
use crate::names::AgentName;
use crate::readstate;
use crate::wake;

/// A message, and what happened to it after it was stored.
pub(crate) struct MessagePath {
    pub message: MessageView,
    /// Whether a wake of its recipient covers it: by which host, and when
    /// that host last woke the recipient (at or after this message's wake).
    pub woken: Option<Woken>,
    /// Whether its recipient acknowledged it, and when the recipient's read
    /// mark last changed (at or after the acknowledgement).
    pub acknowledged: Option<Acknowledged>,
}

/// The wake that covers a message.
#[derive(Debug, Serialize)]
pub(crate) struct Woken {
    /// The host that woke the recipient.
    pub by: String,
    pub last_wake_at: Option<String>,
}

/// A message's acknowledgement by its recipient.
#[derive(Debug, Serialize)]
pub(crate) struct Acknowledged {
    pub mark_written_at: Option<String>,
}

impl FleetView {
    pub(crate) async fn path(&self, id: u64) -> Result<MessagePath, MailError> {
        let bus = self.mailbox.bus();
        let raw = bus.message(id).await?.ok_or(MailError::NoMessage(id))?;
        let message = raw.view(false).ok_or(MailError::NoMessage(id))?;
        let Ok(recipient) = AgentName::parse(&message.envelope.to) else {
            // A broadcast: read and woken per recipient, not shown here.
            return Ok(MessagePath { message, woken: None, acknowledged: None });
        };
        let record = match self.mailbox.registry().host_of(&recipient).await? {
            Some(host) => wake::record_of(bus, &host, &recipient).await?,
            None => None,
        };
        let woken = record
            .filter(|r| r.up_to >= id)
            .map(|r| Woken { by: r.host, last_wake_at: r.stats.last.map(|last| last.at) });
        let mark = readstate::load(bus, &recipient).await?;
        let acknowledged = mark
            .mark
            .is_read(id)
            .then(|| Acknowledged { mark_written_at: mark.written.map(crate::message::format_time) });
        Ok(MessagePath { message, woken, acknowledged })
    }
}
