//! `POST /api/send`: store a message once, and say truthfully what happened.

use bytes::Bytes;

use super::{MailError, Mailbox};
use crate::bus::{Outgoing, SendError, Stored};
use crate::message::{BROADCAST, Envelope, Priority, format_time};
use crate::names::AgentName;

/// A validated send.
#[derive(Debug)]
pub(crate) struct NewMessage {
    pub from: AgentName,
    /// `None`: broadcast.
    pub to: Option<AgentName>,
    pub content: String,
    pub priority: Priority,
    pub reply_to: Option<u64>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Sent {
    pub id: u64,
    pub timestamp: String,
    /// The client's Idempotency-Key matched an earlier send: nothing new was
    /// stored, and `id` is the earlier send's.
    pub duplicate: bool,
}

/// How many sends answered 503 after settling one Idempotency-Key may follow
/// (each needs NATS to stall past `nats.send_timeout` during the send).
const MAX_KEY_REUSES: usize = 8;

impl From<SendError> for MailError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::TooLarge => MailError::TooLarge,
            SendError::Unavailable(err) => MailError::Unavailable(err),
            SendError::Unknown => MailError::Unknown,
        }
    }
}

/// The `Nats-Msg-Id` of a send. Keys are per sender: two agents may both use
/// "1". A key whose id is taken moves on to `<from>#<n>:<key>`, which no
/// client's id can equal: names have neither `#` nor `:`, so the first of
/// the two after the name tells the forms apart.
fn message_id(from: &AgentName, key: &str, reuse: usize) -> String {
    match reuse {
        0 => format!("{from}:{key}"),
        n => format!("{from}#{n}:{key}"),
    }
}

impl Mailbox {
    #[tracing::instrument(skip_all, fields(from = %message.from, to, id))]
    pub(crate) async fn send(&self, message: NewMessage) -> Result<Sent, MailError> {
        let from = &message.from;
        if !self.rules.senders.contains(from) && self.registry.inbox(from).await?.is_none() {
            return Err(MailError::UnknownSender(from.clone()));
        }
        self.check_writable(from).await?;
        if let Some(to) = &message.to {
            self.inbox_of(to).await?;
        }
        let threading = self.admit(&message).await?;
        let subjects = self.bus.subjects();
        let subject = match &message.to {
            Some(to) => {
                tracing::Span::current().record("to", to.as_str());
                subjects.direct(to, &message.from)
            }
            None => subjects.broadcast(&message.from),
        };
        let timestamp = format_time(self.bus.now());
        let envelope = Envelope {
            from: message.from.to_string(),
            to: message.to.as_ref().map_or(BROADCAST.into(), |to| to.to_string()),
            content: message.content,
            priority: message.priority,
            reply_to: message.reply_to,
            thread: threading.thread,
            hops: threading.hops,
            timestamp: timestamp.clone(),
        };
        let payload = Bytes::from(serde_json::to_vec(&envelope).expect("an envelope serializes"));
        let key = message.idempotency_key.as_deref();
        for reuse in 0..MAX_KEY_REUSES {
            // Without a key, a fresh id that nothing but this send can hold.
            let msg_id = key.map_or_else(|| nuid::next().to_string(), |key| message_id(&message.from, key, reuse));
            let out = Outgoing { subject: subject.clone(), msg_id, payload: payload.clone() };
            match self.bus.store(&out).await? {
                Stored::New(id) => return Ok(stored(id, timestamp)),
                Stored::Earlier(original) => {
                    let timestamp = original.envelope().map_or(timestamp, |e| e.timestamp);
                    tracing::Span::current().record("id", original.seq);
                    tracing::info!("duplicate of an earlier send with the same key");
                    return Ok(Sent { id: original.seq, timestamp, duplicate: key.is_some() });
                }
                // An earlier send with this key was answered 503 (its id names
                // the marker that settled it), or another sender took the id:
                // this is a new send, under the key's next id.
                Stored::Taken => {}
            }
        }
        Err(MailError::KeyExhausted)
    }
}

fn stored(id: u64, timestamp: String) -> Sent {
    tracing::Span::current().record("id", id);
    tracing::info!(target: "clawbus::lifecycle", id, "stored");
    Sent { id, timestamp, duplicate: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No client key, at any reuse, gives the id of another key or reuse.
        #[test]
        fn message_ids_never_collide(a in "[ -~]{1,20}", b in "[ -~]{1,20}", n in 0usize..8, m in 0usize..8) {
            let alice = AgentName::parse("alice").unwrap();
            prop_assume!((a.as_str(), n) != (b.as_str(), m));
            prop_assert_ne!(message_id(&alice, &a, n), message_id(&alice, &b, m));
        }
    }

    #[test]
    fn a_key_with_a_hash_cannot_take_a_retry_id() {
        let alice = AgentName::parse("alice").unwrap();
        assert_ne!(message_id(&alice, "x#1", 0), message_id(&alice, "x", 1));
        assert_eq!(message_id(&alice, "x", 1), "alice#1:x");
    }
}
