//! What agents do with the bus: send, read the inbox, acknowledge, look back.
//!
//! Everything here is a JetStream operation on subject filters: a page of the
//! inbox is a few batched reads from the read mark on, an unread count is
//! three server-side counts, and nothing scans history it does not return.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};
use time::{Duration, OffsetDateTime};

use crate::bus::{Bus, Follower, Outgoing, RawMessage, SendError, Start, Unavailable};
use crate::message::{BROADCAST, Envelope, Inbox, MessageView, Priority, Route, Subjects, format_time};
use crate::names::AgentName;
use crate::readstate::{self, ReadMark};
use crate::registry::{AgentStatus, Registry};

/// A failed mailbox operation, mapped to an HTTP status by the API layer.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("no adapter has ever registered agent {0}")]
    UnknownAgent(AgentName),
    #[error("the message exceeds the server's maximum payload")]
    TooLarge,
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The send may or may not have been stored.
    #[error("the outcome is unknown: NATS could not be reached to settle it; retry with the same Idempotency-Key")]
    Unknown,
}

impl From<SendError> for MailError {
    fn from(err: SendError) -> Self {
        match err {
            SendError::TooLarge => MailError::TooLarge,
            SendError::Unavailable(why) => MailError::Unavailable(Unavailable(why)),
            SendError::Unknown => MailError::Unknown,
        }
    }
}

/// A validated send.
#[derive(Debug)]
pub struct NewMessage {
    pub from: AgentName,
    /// `None`: broadcast.
    pub to: Option<AgentName>,
    pub content: String,
    pub priority: Priority,
    pub reply_to: Option<u64>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug)]
pub struct Sent {
    pub id: u64,
    pub timestamp: String,
    /// The idempotency key matched an earlier send: nothing new was stored.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct InboxQuery {
    pub unread_only: bool,
    pub limit: usize,
    pub after: u64,
    pub priority: Option<Priority>,
}

#[derive(Debug)]
pub struct InboxPage {
    pub messages: Vec<MessageView>,
    pub unread: u64,
}

#[derive(Debug, Clone)]
pub enum Ack {
    Ids(Vec<u64>),
    All,
    UpTo(u64),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Acked {
    pub acked: u64,
    pub ignored: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub with: Option<AgentName>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub limit: usize,
    pub after: u64,
}

/// Messages as they are stored, for one agent or the whole fleet.
pub struct Live {
    follower: Follower,
    inbox: Option<Inbox>,
    mark: ReadMark,
    subjects: Subjects,
}

impl Live {
    /// The next message; waits for it.
    pub async fn next(&mut self) -> MessageView {
        loop {
            let raw = self.follower.next().await;
            let Some(route) = self.subjects.route(&raw.subject) else {
                continue;
            };
            let read = match &self.inbox {
                Some(inbox) if !inbox.contains(raw.seq, route) => continue,
                Some(_) => self.mark.is_read(raw.seq),
                None => false,
            };
            if let Some(view) = view(&raw, read) {
                return view;
            }
        }
    }
}

/// One row of `GET /api/agents`.
pub struct AgentRow {
    pub status: AgentStatus,
    pub unread: u64,
}

/// Timestamps are written by the sending adapter and seeks use the server's
/// clock: seek this much earlier so that modest clock skew loses nothing.
const CLOCK_SKEW: Duration = Duration::minutes(1);

/// How many sends answered 503 after settling one Idempotency-Key may follow
/// (each needs NATS to stall past `nats.send_timeout` during the send).
const MAX_KEY_REUSES: usize = 8;

/// How many times a contended read-mark update is retried.
const CAS_ATTEMPTS: usize = 16;

#[derive(Clone)]
pub struct Mailbox {
    bus: Bus,
    registry: Arc<Registry>,
}

impl Mailbox {
    pub fn new(bus: Bus, registry: Arc<Registry>) -> Self {
        Self { bus, registry }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    async fn inbox_of(&self, agent: &AgentName) -> Result<Inbox, MailError> {
        self.registry.inbox(agent).await?.ok_or_else(|| MailError::UnknownAgent(agent.clone()))
    }

    pub async fn send(&self, message: NewMessage) -> Result<Sent, MailError> {
        let subjects = self.bus.subjects();
        let subject = match &message.to {
            Some(to) => {
                self.inbox_of(to).await?;
                subjects.direct(to, &message.from)
            }
            None => subjects.broadcast(&message.from),
        };
        let timestamp = format_time(OffsetDateTime::now_utc());
        let envelope = Envelope {
            from: message.from.to_string(),
            to: message.to.as_ref().map_or(BROADCAST.into(), |to| to.to_string()),
            content: message.content,
            priority: message.priority,
            reply_to: message.reply_to,
            timestamp: timestamp.clone(),
        };
        // Keys are per sender: two agents may both use "1".
        let base_id = match &message.idempotency_key {
            Some(key) => format!("{}:{key}", message.from),
            None => nuid::next().to_string(),
        };
        let payload = Bytes::from(serde_json::to_vec(&envelope).expect("serializes"));
        for attempt in 0..MAX_KEY_REUSES {
            let msg_id = if attempt == 0 { base_id.clone() } else { format!("{base_id}#{attempt}") };
            let out = Outgoing { subject: subject.clone(), msg_id, payload: payload.clone() };
            let stored = self.bus.store(&out).await?;
            if !stored.duplicate {
                return Ok(Sent { id: stored.seq, timestamp, duplicate: false });
            }
            if let Some(original) = self.bus.message(stored.seq).await?.and_then(|m| envelope_of(&m)) {
                return Ok(Sent { id: stored.seq, timestamp: original.timestamp, duplicate: true });
            }
            // An earlier send with this key was answered 503: its id names
            // the marker that settled it, so this retry is a new send, under
            // the key's next id.
        }
        Err(MailError::Unavailable(Unavailable("this Idempotency-Key failed too often; use a new one".into())))
    }

    pub async fn inbox(&self, agent: &AgentName, query: &InboxQuery) -> Result<InboxPage, MailError> {
        let inbox = self.inbox_of(agent).await?;
        let mark = readstate::load(&self.bus, agent).await?.mark;
        let after = if query.unread_only { query.after.max(mark.floor) } else { query.after };
        let page = async {
            let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), after), query.limit + 1);
            let mut messages = Vec::new();
            while messages.len() < query.limit {
                let Some(raw) = scan.next().await? else { break };
                let Some(view) = self.view_in(&inbox, &mark, &raw) else {
                    continue;
                };
                let wanted =
                    !(query.unread_only && view.read) && query.priority.is_none_or(|p| p == view.envelope.priority);
                if wanted {
                    messages.push(view);
                }
            }
            Ok::<_, Unavailable>(messages)
        };
        let (messages, unread) = tokio::try_join!(page, self.unread(&inbox, &mark))?;
        Ok(InboxPage { messages, unread })
    }

    /// The message as `inbox`'s owner sees it, if it is in that inbox.
    fn view_in(&self, inbox: &Inbox, mark: &ReadMark, raw: &RawMessage) -> Option<MessageView> {
        let route = self.bus.subjects().route(&raw.subject)?;
        inbox.contains(raw.seq, route).then(|| view(raw, mark.is_read(raw.seq))).flatten()
    }

    /// Unread messages in `inbox` under `mark`: direct messages above the
    /// floor, plus others' broadcasts above it, less the out-of-order acks.
    pub async fn unread(&self, inbox: &Inbox, mark: &ReadMark) -> Result<u64, Unavailable> {
        let subjects = self.bus.subjects();
        let broadcasts_from = mark.floor.max(inbox.since) + 1;
        let (to, broadcasts, own) =
            (subjects.to(&inbox.agent), subjects.broadcasts(), subjects.broadcast(&inbox.agent));
        let (direct, broadcasts, own) = tokio::try_join!(
            self.bus.count(&to, mark.floor + 1),
            self.bus.count(&broadcasts, broadcasts_from),
            self.bus.count(&own, broadcasts_from),
        )?;
        Ok((direct + broadcasts).saturating_sub(own).saturating_sub(mark.acked.len() as u64))
    }

    pub async fn ack(&self, agent: &AgentName, ack: Ack) -> Result<Acked, MailError> {
        let inbox = self.inbox_of(agent).await?;
        match ack {
            Ack::Ids(ids) => self.ack_ids(&inbox, ids).await,
            Ack::UpTo(seq) => self.ack_up_to(&inbox, seq).await,
            Ack::All => {
                let last = self.bus.last_sequence().await?;
                self.ack_up_to(&inbox, last).await
            }
        }
    }

    async fn ack_ids(&self, inbox: &Inbox, ids: Vec<u64>) -> Result<Acked, MailError> {
        let mut distinct = BTreeSet::new();
        let requested: Vec<u64> = ids.into_iter().filter(|id| distinct.insert(*id)).collect();
        let membership: Vec<bool> = stream::iter(requested.iter().copied())
            .map(|id| async move {
                let raw = self.bus.message(id).await?;
                Ok::<_, Unavailable>(raw.is_some_and(|m| self.in_inbox(inbox, &m)))
            })
            .buffered(32)
            .try_collect()
            .await?;
        let (mut members, mut ignored) = (Vec::new(), Vec::new());
        for (id, member) in requested.into_iter().zip(membership) {
            if member { members.push(id) } else { ignored.push(id) }
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = readstate::load(&self.bus, &inbox.agent).await?;
            let newly: Vec<u64> = members.iter().copied().filter(|id| !current.mark.is_read(*id)).collect();
            if newly.is_empty() {
                return Ok(Acked { acked: 0, ignored });
            }
            let mut mark = current.mark.clone();
            mark.acked.extend(&newly);
            self.compact(inbox, &mut mark).await?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                return Ok(Acked { acked: newly.len() as u64, ignored });
            }
        }
        Err(contended())
    }

    async fn ack_up_to(&self, inbox: &Inbox, seq: u64) -> Result<Acked, MailError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = readstate::load(&self.bus, &inbox.agent).await?;
            if seq <= current.mark.floor {
                return Ok(Acked { acked: 0, ignored: vec![] });
            }
            let mut mark = current.mark.raised_to(seq);
            self.compact(inbox, &mut mark).await?;
            let (before, after) = tokio::try_join!(self.unread(inbox, &current.mark), self.unread(inbox, &mark))?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                return Ok(Acked { acked: before.saturating_sub(after), ignored: vec![] });
            }
        }
        Err(contended())
    }

    /// Moves the floor up over acknowledged ids that directly follow it.
    async fn compact(&self, inbox: &Inbox, mark: &mut ReadMark) -> Result<(), Unavailable> {
        if mark.acked.is_empty() {
            return Ok(());
        }
        let chunk = mark.acked.len() + 1;
        let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), mark.floor), chunk);
        while let Some(raw) = scan.next().await? {
            if !self.in_inbox(inbox, &raw) {
                continue;
            }
            if !mark.acked.remove(&raw.seq) {
                break;
            }
            mark.floor = raw.seq;
        }
        Ok(())
    }

    /// Id of the first message in `inbox` after `after`.
    pub async fn first_after(&self, inbox: &Inbox, after: u64) -> Result<Option<u64>, Unavailable> {
        Ok(self.inbox_messages(inbox, after, u64::MAX, 1).await?.first().map(|raw| raw.seq))
    }

    /// The messages in `inbox` with ids in `(after, up_to]`, as unread.
    pub async fn messages_between(
        &self,
        inbox: &Inbox,
        after: u64,
        up_to: u64,
    ) -> Result<Vec<MessageView>, Unavailable> {
        let raws = self.inbox_messages(inbox, after, up_to, usize::MAX).await?;
        Ok(raws.iter().filter_map(|raw| view(raw, false)).collect())
    }

    async fn inbox_messages(
        &self,
        inbox: &Inbox,
        after: u64,
        up_to: u64,
        limit: usize,
    ) -> Result<Vec<RawMessage>, Unavailable> {
        let chunk = limit.min(256);
        let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), after), chunk);
        let mut found = Vec::new();
        while found.len() < limit {
            match scan.next().await? {
                Some(raw) if raw.seq > up_to => break,
                Some(raw) if self.in_inbox(inbox, &raw) => found.push(raw),
                Some(_) => {}
                None => break,
            }
        }
        Ok(found)
    }

    fn in_inbox(&self, inbox: &Inbox, raw: &RawMessage) -> bool {
        self.bus.subjects().route(&raw.subject).is_some_and(|route| inbox.contains(raw.seq, route))
    }

    pub async fn history(&self, agent: &AgentName, query: &HistoryQuery) -> Result<Vec<MessageView>, MailError> {
        let inbox = self.inbox_of(agent).await?;
        let mark = readstate::load(&self.bus, agent).await?.mark;
        let subjects = self.bus.subjects();
        let mut filters = match &query.with {
            None => vec![subjects.to(agent), subjects.sent_by(agent), subjects.broadcasts()],
            Some(other) => vec![
                subjects.direct(agent, other),
                subjects.direct(other, agent),
                subjects.broadcast(agent),
                subjects.broadcast(other),
            ],
        };
        filters.dedup();
        let start = match query.since {
            Some(since) if query.after == 0 => Start::Time(since - CLOCK_SKEW),
            _ => Start::Seq(query.after + 1),
        };
        let mut scan = self.bus.scan(filters.into_iter().map(|filter| (filter, start)).collect(), query.limit + 1);
        let mut messages = Vec::new();
        while messages.len() < query.limit {
            let Some(raw) = scan.next().await? else { break };
            if query.until.is_some_and(|until| raw.stored > until + CLOCK_SKEW) {
                break;
            }
            let Some(route) = subjects.route(&raw.subject) else {
                continue;
            };
            if raw.seq <= query.after || !in_history(&inbox, query.with.as_ref(), raw.seq, route) {
                continue;
            }
            // The reader's own sends are not waiting for the reader.
            let read = !inbox.contains(raw.seq, route) || mark.is_read(raw.seq);
            let Some(view) = view(&raw, read) else {
                continue;
            };
            let at = view.envelope.time();
            let in_window = query.since.is_none_or(|since| at.is_some_and(|t| t >= since))
                && query.until.is_none_or(|until| at.is_some_and(|t| t <= until));
            if in_window {
                messages.push(view);
            }
        }
        Ok(messages)
    }

    /// Every registered agent with its unread count.
    pub async fn agents(&self) -> Result<Vec<AgentRow>, Unavailable> {
        let (statuses, marks) = tokio::try_join!(self.registry.list(), readstate::load_all(&self.bus))?;
        stream::iter(statuses)
            .map(|status| {
                let mark = marks.get(status.inbox.agent.as_str()).cloned().unwrap_or_default();
                async move {
                    let unread = self.unread(&status.inbox, &mark).await?;
                    Ok(AgentRow { status, unread })
                }
            })
            .buffered(16)
            .try_collect()
            .await
    }

    /// Follows `agent`'s inbox (or, for `None`, every message) from just
    /// after `after`, or from now on.
    pub async fn live(&self, agent: Option<&AgentName>, after: Option<u64>) -> Result<Live, MailError> {
        let subjects = self.bus.subjects().clone();
        let (filters, inbox, mark) = match agent {
            Some(agent) => {
                let inbox = self.inbox_of(agent).await?;
                let mark = readstate::load(&self.bus, agent).await?.mark;
                (inbox.filters(&subjects), Some(inbox), mark)
            }
            None => (vec![subjects.every_message()], None, ReadMark::default()),
        };
        let from = match after {
            Some(id) => id + 1,
            None => self.bus.last_sequence().await? + 1,
        };
        Ok(Live { follower: self.bus.follow(filters, from), inbox, mark, subjects })
    }

    /// Messages in the stream (markers excluded).
    pub async fn message_count(&self) -> Result<u64, Unavailable> {
        self.bus.count(&self.bus.subjects().every_message(), 1).await
    }
}

/// Whether a message belongs to `inbox.agent`'s history, narrowed to the
/// conversation with `with` when given.
fn in_history(inbox: &Inbox, with: Option<&AgentName>, seq: u64, route: Route<'_>) -> bool {
    let me = inbox.agent.as_str();
    match (route, with.map(AgentName::as_str)) {
        (Route::Direct { to, from }, None) => to == me || from == me,
        (Route::Direct { to, from }, Some(other)) => (to == me && from == other) || (to == other && from == me),
        (Route::Broadcast { from }, other) => {
            (from == me || inbox.contains(seq, route)) && other.is_none_or(|other| from == me || from == other)
        }
    }
}

pub fn envelope_of(raw: &RawMessage) -> Option<Envelope> {
    serde_json::from_slice(&raw.payload).ok()
}

fn view(raw: &RawMessage, read: bool) -> Option<MessageView> {
    Some(MessageView { id: raw.seq, envelope: envelope_of(raw)?, read })
}

fn contended() -> MailError {
    MailError::Unavailable(Unavailable("read mark is contended; try again".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_membership() {
        let bob = Inbox { agent: AgentName::parse("bob").unwrap(), since: 10 };
        let alice = AgentName::parse("alice").unwrap();
        let direct = |to, from| Route::Direct { to, from };
        assert!(in_history(&bob, None, 1, direct("bob", "alice")));
        assert!(in_history(&bob, None, 1, direct("carol", "bob")));
        assert!(!in_history(&bob, None, 1, direct("carol", "alice")));
        assert!(in_history(&bob, Some(&alice), 1, direct("alice", "bob")));
        assert!(!in_history(&bob, Some(&alice), 1, direct("carol", "bob")));
        // Broadcasts: own always; others' only after registration.
        assert!(in_history(&bob, None, 5, Route::Broadcast { from: "bob" }));
        assert!(!in_history(&bob, None, 5, Route::Broadcast { from: "alice" }));
        assert!(in_history(&bob, Some(&alice), 11, Route::Broadcast { from: "alice" }));
        assert!(!in_history(&bob, Some(&alice), 11, Route::Broadcast { from: "carol" }));
    }
}
