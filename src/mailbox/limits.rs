//! Conversation safety, enforced fleet-wide: threads and loop breaking,
//! pair rates, send budgets and contact policies.
//!
//! Every number here is counted from the stream itself, not from per-adapter
//! state: the subjects name both ends of every message, so "what alice sent
//! in the last minute" or "what alice and bob exchanged" is a count the
//! server answers from its subject index, the same through every adapter,
//! and a send costs no extra write. The windows are the server's last minute
//! (its stored times against its now, `Bus::now`), whatever this host's
//! clock says. A stopped thread is recorded in the state bucket
//! (`thread.<id>`), where an operator's release lifts it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{MailError, Mailbox, NewMessage};
use crate::bus::{Count, OrUnavailable, Unavailable};
use crate::message::{Envelope, format_time};

/// The window of the per-minute limits.
const WINDOW: Duration = Duration::from_secs(60);

/// Where a message sits in its thread: the envelope's `thread` and `hops`.
/// The one rule of threads, for sends and for the import alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Threading {
    /// `None`: it starts a thread.
    pub thread: Option<u64>,
    pub hops: u32,
}

impl Threading {
    /// A message that answers none starts a thread.
    pub(crate) const FIRST: Threading = Threading { thread: None, hops: 0 };

    /// Of a stored message.
    pub(crate) fn of(envelope: &Envelope) -> Threading {
        Threading { thread: envelope.thread, hops: envelope.hops }
    }

    /// A reply to message `id`, which sits at `self`: in its thread (the
    /// one `id` starts, for a first message), one hop deeper.
    pub(crate) fn reply(self, id: u64) -> Threading {
        Threading { thread: Some(self.thread.unwrap_or(id)), hops: self.hops.saturating_add(1) }
    }
}

/// Why a send is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "thread {thread} was stopped after {allowed} replies to prevent an agent loop. Do not reply in it again; \
         if something is still open, tell a human operator, or send a new message (without reply_to) only if it \
         carries new information"
    )]
    Hops { thread: u64, allowed: u32 },
    #[error(
        "{a} and {b} exchanged {count} messages in the last minute (the limit is {limit}): stopped to prevent an \
         agent loop. Wait, and do not answer messages that need no answer"
    )]
    Pair { a: String, b: String, count: u64, limit: u32, retry_after: Duration },
    #[error(
        "{agent} sent {used} messages in the last minute (a broadcast counts once per recipient); the limit is {limit}"
    )]
    Budget { agent: String, used: u64, limit: u32, retry_after: Duration },
    #[error("{to} accepts messages only from {accepted}; {from} is not among them")]
    Contact { from: String, to: String, accepted: String },
}

impl Refusal {
    /// The name counted in metrics and logs.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::Hops { .. } => "max_hops",
            Refusal::Pair { .. } => "pair_per_minute",
            Refusal::Budget { .. } => "sends_per_minute",
            Refusal::Contact { .. } => "accept_from",
        }
    }

    /// When trying again can succeed, where waiting helps.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::Pair { retry_after, .. } | Refusal::Budget { retry_after, .. } => Some(*retry_after),
            Refusal::Hops { .. } | Refusal::Contact { .. } => None,
        }
    }
}

/// A thread that was stopped, and how often an operator released it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct ThreadRecord {
    /// Each release allows another `max_hops` replies.
    #[serde(default)]
    pub releases: u32,
    /// When and at which depth it was last stopped (`None`: running).
    #[serde(default)]
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub hops: u32,
    #[serde(default)]
    pub between: Vec<String>,
}

fn thread_key(thread: u64) -> String {
    format!("thread.{thread}")
}

impl Mailbox {
    /// Checks `message` against the limits; returns its place in its thread.
    pub(super) async fn admit(&self, message: &NewMessage) -> Result<Threading, MailError> {
        let limits = self.rules.limits;
        let from = &message.from;
        let sender = self.registry.policy(from).await?;
        if let Some(to) = &message.to {
            let recipient = self.registry.policy(to).await?;
            if !recipient.accepts(from) {
                let accepted = recipient.accept_from.unwrap_or_default().join(", ");
                return Err(Refusal::Contact { from: from.to_string(), to: to.to_string(), accepted }.into());
            }
            let pair = [sender.pair_per_minute, recipient.pair_per_minute, Some(limits.pair_per_minute)];
            if let Some(limit) = pair.into_iter().flatten().filter(|l| *l > 0).min() {
                let subjects = self.bus.subjects();
                let now = self.bus.now();
                let since = now - WINDOW;
                let (to_them, to_us) = (subjects.direct(to, from), subjects.direct(from, to));
                let (there, back) =
                    tokio::try_join!(self.bus.count_since(&to_them, since), self.bus.count_since(&to_us, since))?;
                let count = there.total + back.total;
                if count >= u64::from(limit) {
                    let (a, b) = (from.to_string(), to.to_string());
                    return Err(Refusal::Pair { a, b, count, limit, retry_after: wait(&[there, back], now) }.into());
                }
            }
        }
        let budget = sender.sends_per_minute.unwrap_or(limits.sends_per_minute);
        if budget > 0 {
            self.within_budget(message, budget).await?;
        }
        let threading = self.threading(message.reply_to).await?;
        if let Some(thread) = threading.thread {
            let max = sender.max_hops.unwrap_or(limits.max_hops);
            if threading.hops > max {
                let record = self.thread_record(thread).await?;
                let allowed = max.saturating_mul(record.releases.saturating_add(1));
                if threading.hops > allowed {
                    self.stop_thread(thread, threading.hops, message, record).await;
                    return Err(Refusal::Hops { thread, allowed }.into());
                }
            }
        }
        Ok(threading)
    }

    /// The thread and depth of a reply to `reply_to` (a first message when
    /// `None`; a reply to a message no longer stored starts at depth 1 of a
    /// thread named after it).
    async fn threading(&self, reply_to: Option<u64>) -> Result<Threading, Unavailable> {
        let Some(parent) = reply_to else { return Ok(Threading::FIRST) };
        let stored = self.bus.message(parent).await?.and_then(|raw| raw.envelope());
        Ok(stored.map_or(Threading::FIRST, |envelope| Threading::of(&envelope)).reply(parent))
    }

    async fn within_budget(&self, message: &NewMessage, limit: u32) -> Result<(), MailError> {
        let subjects = self.bus.subjects();
        let now = self.bus.now();
        let since = now - WINDOW;
        let (sent, broadcast) = (subjects.sent_by(&message.from), subjects.broadcast(&message.from));
        let (direct, broadcasts, agents) = tokio::try_join!(
            self.bus.count_since(&sent, since),
            self.bus.count_since(&broadcast, since),
            self.bus.count_keys("agent."),
        )?;
        let recipients = agents.saturating_sub(1).max(1);
        let used = direct.total + broadcasts.total * recipients;
        let cost = if message.to.is_some() { 1 } else { recipients };
        if used + cost > u64::from(limit) {
            let retry_after = wait(&[direct, broadcasts], now);
            return Err(Refusal::Budget { agent: message.from.to_string(), used, limit, retry_after }.into());
        }
        Ok(())
    }

    pub(crate) async fn thread_record(&self, thread: u64) -> Result<ThreadRecord, Unavailable> {
        let value = self.bus.kv().get(thread_key(thread)).await.unavailable("cannot read a thread record")?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default())
    }

    /// Records the thread as stopped, for operators (best effort: the
    /// refusal stands whether or not the record lands).
    async fn stop_thread(&self, thread: u64, hops: u32, message: &NewMessage, mut record: ThreadRecord) {
        let to = message.to.as_ref().map_or("*".into(), ToString::to_string);
        tracing::warn!(target: "clawbus::lifecycle", thread, hops, from = %message.from, %to, "thread stopped: agent loop");
        if record.stopped_at.is_some() && record.hops >= hops {
            return;
        }
        record.stopped_at = Some(format_time(self.bus.now()));
        record.hops = hops;
        record.between = vec![message.from.to_string(), to];
        if let Err(err) =
            self.bus.kv().put(thread_key(thread), serde_json::to_vec(&record).expect("a record").into()).await
        {
            tracing::warn!(thread, "stopped thread not recorded: {err}");
        }
    }

    /// `POST /api/threads/{id}/release`: lets a stopped thread go on for
    /// another `max_hops` replies.
    pub(crate) async fn release_thread(&self, thread: u64) -> Result<ThreadRecord, MailError> {
        for _ in 0..8 {
            let entry = self.bus.kv().entry(thread_key(thread)).await.unavailable("cannot read a thread record")?;
            let (mut record, revision) = match entry {
                Some(entry) => {
                    (serde_json::from_slice::<ThreadRecord>(&entry.value).unwrap_or_default(), Some(entry.revision))
                }
                None => (ThreadRecord::default(), None),
            };
            record.releases += 1;
            record.stopped_at = None;
            let value = serde_json::to_vec(&record).expect("a record").into();
            let written = match revision {
                Some(revision) => self.bus.kv().update(thread_key(thread), value, revision).await.is_ok(),
                None => self.bus.kv().create(thread_key(thread), value).await.is_ok(),
            };
            if written {
                tracing::info!(target: "clawbus::lifecycle", thread, releases = record.releases, "thread released");
                return Ok(record);
            }
        }
        Err(MailError::Unavailable(Unavailable::new("the thread record is being changed by others; try again")))
    }

    /// Threads stopped and not released, for `/api/stats`.
    pub(crate) async fn stopped_threads(&self) -> Result<Vec<(u64, ThreadRecord)>, Unavailable> {
        let records = self.bus.kv_values::<ThreadRecord>("thread.").await?;
        let mut stopped: Vec<(u64, ThreadRecord)> = records
            .into_iter()
            .filter_map(|(key, record)| Some((key.parse().ok()?, record.value)))
            .filter(|(_, record)| record.stopped_at.is_some())
            .collect();
        stopped.sort_by_key(|(thread, _)| *thread);
        Ok(stopped)
    }
}

/// How long after `now` (the server's time) the oldest message counted
/// leaves the window.
fn wait(counts: &[Count], now: OffsetDateTime) -> Duration {
    let oldest = counts.iter().filter_map(|c| c.first_stored).min();
    let waited: Duration = oldest.map_or(Duration::ZERO, |at| (now - at).try_into().unwrap_or_default());
    WINDOW.saturating_sub(waited).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_joins_its_parents_thread_one_hop_deeper() {
        let first = Threading::FIRST.reply(7);
        assert_eq!(first, Threading { thread: Some(7), hops: 1 }, "a reply to a first message: its thread");
        assert_eq!(first.reply(9), Threading { thread: Some(7), hops: 2 }, "the thread stays the first message's");
        let deepest = Threading { thread: Some(7), hops: u32::MAX };
        assert_eq!(deepest.reply(9).hops, u32::MAX, "depth saturates rather than wrapping to a fresh thread");
    }
}
