//! `POST /api/ack`: mark messages read, durably and for every adapter.
//!
//! A read mark never covers an id the stream has not reached: `up_to`
//! beyond the newest message acknowledges up to the newest message, and
//! `ids` that name no message are `ignored`. So mail stored after any ack is
//! unread until it is acknowledged itself.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::{MailError, Mailbox};
use crate::bus::{self, Inbox, Unavailable};
use crate::names::AgentName;
use crate::readstate::{self, Join, ReadMark};

#[derive(Debug, Clone)]
pub enum Ack {
    Ids(Vec<u64>),
    All,
    UpTo(u64),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Acked {
    pub acked: u64,
    pub ignored: Vec<u64>,
}

/// How many times a contended read-mark update is retried.
const CAS_ATTEMPTS: u32 = 16;
/// The longest pause before retrying a contended update.
const MAX_CAS_PAUSE: Duration = Duration::from_millis(50);
/// Membership look-ups of one ack in flight at once.
const CONCURRENCY: usize = 32;
/// Messages read per request while walking the inbox.
const MAX_CHUNK: usize = 256;

/// Acknowledgements for one agent through this adapter take turns: run
/// side by side, they would race for the same read mark and most of them
/// lose its compare-and-set, again and again. Compare-and-set still settles
/// races with other adapters. One lock per agent acknowledged here.
#[derive(Default)]
pub(super) struct Turns(Mutex<HashMap<AgentName, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    async fn take(&self, agent: &AgentName) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self.0.lock().expect("turns lock").entry(agent.clone()).or_default().clone();
        lock.lock_owned().await
    }
}

impl Mailbox {
    pub(crate) async fn ack(&self, agent: &AgentName, ack: Ack) -> Result<Acked, MailError> {
        let inbox = self.inbox_of(agent).await?;
        self.check_writable(agent).await?;
        let _turn = self.acks.take(agent).await;
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
        for attempt in 0..CAS_ATTEMPTS {
            contended_pause(attempt).await;
            let current = self.read_mark(&inbox.agent).await?;
            let mut mark = current.mark.clone();
            let newly: Vec<u64> = members.iter().copied().filter(|id| mark.insert(*id)).collect();
            let Some(join) = mark.join_around(&newly) else {
                return Ok(Acked { acked: 0, ignored });
            };
            self.walk(inbox, &mut mark, join, newly.len()).await?;
            let given_up = self.bound(inbox, &mut mark, &current.mark).await?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                for id in &newly {
                    tracing::info!(target: "clawbus::lifecycle", id, agent = %inbox.agent, "acknowledged");
                }
                log_given_up(&inbox.agent, &given_up);
                return Ok(Acked { acked: newly.len() as u64, ignored });
            }
        }
        Err(MailError::Contended(inbox.agent.clone()))
    }

    /// Acknowledges every message up to `seq`, which exists.
    async fn ack_up_to(&self, inbox: &Inbox, seq: u64) -> Result<Acked, MailError> {
        for attempt in 0..CAS_ATTEMPTS {
            contended_pause(attempt).await;
            let current = self.read_mark(&inbox.agent).await?;
            if seq <= current.mark.floor {
                return Ok(Acked { acked: 0, ignored: vec![] });
            }
            let mut mark = current.mark.raised_to(seq);
            let join = mark.join_floor();
            self.walk(inbox, &mut mark, join, 1).await?;
            let (before, after) = tokio::try_join!(self.unread(inbox, &current.mark), self.unread(inbox, &mark))?;
            // A longer floor can tip a full record over its bound.
            let given_up = self.bound(inbox, &mut mark, &current.mark).await?;
            if readstate::save(&self.bus, &inbox.agent, &current, &mark).await? {
                tracing::info!(target: "clawbus::lifecycle", up_to = seq, agent = %inbox.agent, "acknowledged");
                log_given_up(&inbox.agent, &given_up);
                return Ok(Acked { acked: before.saturating_sub(after), ignored: vec![] });
            }
        }
        Err(MailError::Contended(inbox.agent.clone()))
    }

    /// Walks the inbox for `join`, joining the runs of `mark` that no unread
    /// message separates; `expected` is about how many messages it reads.
    async fn walk(
        &self,
        inbox: &Inbox,
        mark: &mut ReadMark,
        mut join: Join,
        expected: usize,
    ) -> Result<(), Unavailable> {
        let chunk = (expected + 1).min(MAX_CHUNK);
        let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), join.after), chunk);
        let mut last = join.after;
        while let Some(raw) = scan.next().await? {
            if inbox.holds(self.bus.subjects(), &raw.subject, raw.seq) && !join.next(mark, raw.seq) {
                join.finish(mark);
                return Ok(());
            }
            last = raw.seq;
        }
        // The scan ended: joining up to the next run means nothing unread
        // lies between. A direct get may be answered by a replica a moment
        // (or, after a partition, seconds) behind the leader, so only the
        // leader may say nothing is left.
        if let Some(first) = join.next_run()
            && let Some(found) = self.bus.first_on_leader_of(&inbox.starts(self.bus.subjects(), last)).await?
            && found.seq < first
        {
            return Ok(());
        }
        join.finish(mark);
        Ok(())
    }

    /// Keeps `mark` within the record's bound; returns the unread messages
    /// that were given up to do so (read under `before`, they were not).
    async fn bound(&self, inbox: &Inbox, mark: &mut ReadMark, before: &ReadMark) -> Result<Vec<u64>, Unavailable> {
        let Some((from, to)) = mark.bounded(bus::record_limit(self.bus.max_payload())) else {
            return Ok(Vec::new());
        };
        let mut given_up = Vec::new();
        let mut scan = self.bus.scan(inbox.cursors(self.bus.subjects(), from), MAX_CHUNK);
        while let Some(raw) = scan.next().await? {
            if raw.seq > to {
                break;
            }
            if inbox.holds(self.bus.subjects(), &raw.subject, raw.seq) && !before.is_read(raw.seq) {
                given_up.push(raw.seq);
            }
        }
        let join = mark.join_floor();
        self.walk(inbox, mark, join, 1).await?;
        Ok(given_up)
    }
}

/// Names each message [`Mailbox::bound`] gave up, once its mark is saved.
fn log_given_up(agent: &AgentName, ids: &[u64]) {
    for id in ids {
        tracing::warn!(
            target: "clawbus::lifecycle",
            id,
            %agent,
            "treated as read, unacknowledged: the read record is full (too many unread holes)"
        );
    }
}

/// Before retry `attempt` of a contended update, a random pause growing
/// with the attempts: acks that collided retry at once and collide again.
async fn contended_pause(attempt: u32) {
    if attempt > 0 {
        let ceiling = Duration::from_millis(2).saturating_mul(1 << attempt.min(5)).min(MAX_CAS_PAUSE);
        tokio::time::sleep(ceiling.mul_f64(fastrand::f64())).await;
    }
}
