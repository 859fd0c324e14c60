//! `POST /api/ack`: mark messages read, durably and for every adapter.
//!
//! A read mark never covers an id the stream has not reached: `up_to`
//! beyond the newest message acknowledges up to the newest message, and
//! `ids` that name no message are `ignored`. So mail stored after any ack is
//! unread until it is acknowledged itself.

use std::collections::BTreeSet;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{MailError, Mailbox};
use crate::bus::Unavailable;
use crate::message::Inbox;
use crate::names::AgentName;
use crate::readstate::{self, ReadMark};

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

/// How many times a contended read-mark update is retried.
const CAS_ATTEMPTS: usize = 16;
/// Membership look-ups of one ack in flight at once.
const CONCURRENCY: usize = 32;

impl Mailbox {
    pub async fn ack(&self, agent: &AgentName, ack: Ack) -> Result<Acked, MailError> {
        let inbox = self.inbox_of(agent).await?;
        self.check_writable(agent).await?;
        match ack {
            Ack::Ids(ids) => self.ack_ids(&inbox, ids).await,
            Ack::UpTo(seq) if seq <= self.bus.seen() => self.ack_up_to(&inbox, seq).await,
            Ack::UpTo(seq) => {
                let last = self.bus.last_sequence().await?;
                self.ack_up_to(&inbox, seq.min(last)).await
            }
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
                Ok::<_, Unavailable>(raw.is_some_and(|m| inbox.holds(self.bus.subjects(), &m.subject, m.seq)))
            })
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let (mut members, mut ignored) = (Vec::new(), Vec::new());
        for (id, member) in requested.into_iter().zip(membership) {
            if member { members.push(id) } else { ignored.push(id) }
        }
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_mark(&inbox.agent).await?;
            let newly: Vec<u64> = members.iter().copied().filter(|id| !current.mark.is_read(*id)).collect();
            if newly.is_empty() {
                return Ok(Acked { acked: 0, ignored });
            }
            let mut mark = current.mark.clone();
            mark.acked.extend(&newly);
            self.compact(inbox, &mut mark).await?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                for id in &newly {
                    tracing::info!(target: "clawbus::lifecycle", id, agent = %inbox.agent, "acknowledged");
                }
                return Ok(Acked { acked: newly.len() as u64, ignored });
            }
        }
        Err(MailError::Contended(inbox.agent.clone()))
    }

    /// Acknowledges every message up to `seq`, which exists.
    async fn ack_up_to(&self, inbox: &Inbox, seq: u64) -> Result<Acked, MailError> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.read_mark(&inbox.agent).await?;
            if seq <= current.mark.floor {
                return Ok(Acked { acked: 0, ignored: vec![] });
            }
            let mut mark = current.mark.raised_to(seq);
            self.compact(inbox, &mut mark).await?;
            let (before, after) = tokio::try_join!(self.unread(inbox, &current.mark), self.unread(inbox, &mark))?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                tracing::info!(target: "clawbus::lifecycle", up_to = seq, agent = %inbox.agent, "acknowledged");
                return Ok(Acked { acked: before.saturating_sub(after), ignored: vec![] });
            }
        }
        Err(MailError::Contended(inbox.agent.clone()))
    }

    /// Moves the floor up over acknowledged ids that directly follow it.
    async fn compact(&self, inbox: &Inbox, mark: &mut ReadMark) -> Result<(), Unavailable> {
        if mark.acked.is_empty() {
            return Ok(());
        }
        let chunk = mark.acked.len() + 1;
        let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), mark.floor), chunk);
        loop {
            if mark.acked.is_empty() {
                return Ok(());
            }
            let Some(raw) = scan.next().await? else {
                // A direct get may be answered by a replica a moment behind
                // the leader: only the leader says nothing is left. (Batches
                // are complete, and a replica has every message before the
                // newest it has, so a message found is never past a gap.)
                if self.bus.first_on_leader_of(&inbox.starts(self.bus.subjects(), mark.floor)).await?.is_none() {
                    // No message at or above any of them is stored: they expired.
                    mark.acked.clear();
                }
                return Ok(());
            };
            if !inbox.holds(self.bus.subjects(), &raw.subject, raw.seq) {
                continue;
            }
            // Messages expire oldest first: acknowledged ids below the next
            // stored message are gone.
            mark.acked = mark.acked.split_off(&raw.seq);
            if !mark.acked.remove(&raw.seq) {
                return Ok(());
            }
            mark.floor = raw.seq;
        }
    }
}
