//! The old bus's read flags as read marks: each read row acknowledged for
//! its recipient (a read broadcast for every registered agent whose inbox
//! holds it), through [`Mailbox::ack`] as the agent would have.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::{Instant, sleep};

use super::error::ImportError;
use super::patience::{RETRY_PAUSE, deadline, patiently};
use super::summary::Tally;
use crate::bus::{Bus, Inbox, Route};
use crate::mailbox::{Ack, MailError, Mailbox, Rules};
use crate::names::AgentName;
use crate::readstate;
use crate::registry::Registry;

/// Ids per acknowledgement (the API's limit).
const ACK_BATCH: usize = 10_000;
/// Acknowledgements (for different agents) at once.
const ACKS_AT_ONCE: usize = 8;
/// Times ids reported as not in the inbox are tried again, and the pause
/// before each.
const RETRIES_OF_IGNORED: u32 = 3;
const IGNORED_PAUSE: Duration = Duration::from_millis(200);

/// A read row to acknowledge.
pub(super) struct ReadRow {
    pub(super) seq: u64,
    pub(super) from: AgentName,
    /// `None`: a broadcast.
    pub(super) to: Option<AgentName>,
}

/// What read marks are set through, and whose.
pub(super) struct Marks {
    registry: Arc<Registry>,
    mailbox: Mailbox,
    /// Registered agents, for the read state of broadcasts.
    inboxes: Vec<Inbox>,
}

/// What acknowledging some ids came to.
#[derive(Default)]
struct Acknowledged {
    applied: u64,
    already: u64,
    missing: u64,
}

impl Marks {
    /// Reads the registry: the agents that have read marks.
    pub(super) async fn open(bus: &Bus, host: &str) -> Result<Marks, ImportError> {
        let registry = Arc::new(Registry::new(bus.clone(), host.to_owned()));
        let mailbox = Mailbox::new(bus.clone(), registry.clone(), Rules::default());
        let listed = registry.list().await;
        let listed = listed.map_err(|source| ImportError::Unavailable { what: "cannot read the registry", source })?;
        let inboxes = listed.into_iter().map(|status| status.inbox).collect();
        Ok(Marks { registry, mailbox, inboxes })
    }

    /// Acknowledges read rows for their recipients.
    pub(super) async fn apply(&self, reads: Vec<ReadRow>, tally: &mut Tally) -> Result<(), ImportError> {
        let mut per_agent: BTreeMap<AgentName, Vec<u64>> = BTreeMap::new();
        for read in reads {
            match read.to {
                Some(to) => per_agent.entry(to).or_default().push(read.seq),
                None => {
                    let route = Route::Broadcast { from: read.from.as_str() };
                    for inbox in self.inboxes.iter().filter(|inbox| inbox.contains(read.seq, route)) {
                        per_agent.entry(inbox.agent.clone()).or_default().push(read.seq);
                    }
                }
            }
        }
        let bus = self.mailbox.bus();
        let mut acks = Vec::new();
        for (agent, ids) in per_agent {
            let registered = patiently("cannot read the registry", || self.registry.inbox(&agent)).await?;
            if registered.is_none() {
                *tally.marks_unregistered.entry(agent.to_string()).or_default() += ids.len() as u64;
                continue;
            }
            // Marks already set cost nothing (a run over an imported
            // database sets none): only the rest goes through an ack.
            let mark = patiently("cannot read a read mark", || readstate::load(bus, &agent)).await?.mark;
            let (read, unread): (Vec<u64>, Vec<u64>) = ids.into_iter().partition(|id| mark.is_read(*id));
            tally.marks_already += read.len() as u64;
            acks.extend(unread.chunks(ACK_BATCH).map(|chunk| (agent.clone(), chunk.to_vec())));
        }
        // Agents' read marks are independent: acknowledged side by side.
        let mut done = futures_util::stream::iter(acks)
            .map(|(agent, ids)| async move { self.acknowledge(&agent, ids).await })
            .buffer_unordered(ACKS_AT_ONCE);
        let mut failure = None;
        while let Some(result) = done.next().await {
            match result {
                Ok(counts) => {
                    tally.marks_applied += counts.applied;
                    tally.marks_already += counts.already;
                    tally.marks_missing += counts.missing;
                }
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Acknowledges `ids` for `agent`. Every id is in its inbox; one
    /// reported as not (a replica that has not caught up yet, in a
    /// cluster) is tried again a few times.
    async fn acknowledge(&self, agent: &AgentName, mut ids: Vec<u64>) -> Result<Acknowledged, ImportError> {
        let mut counts = Acknowledged::default();
        let patience = deadline();
        let mut retries_of_ignored = 0;
        loop {
            let acked = match self.mailbox.ack(agent, Ack::Ids(ids.clone())).await {
                Ok(acked) => acked,
                // NATS away for a moment, or live acks of the same agent.
                Err(MailError::Unavailable(_) | MailError::Contended(_)) if Instant::now() < patience => {
                    sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(source) => return Err(ImportError::Ack { agent: agent.clone(), source }),
            };
            counts.applied += acked.acked;
            counts.already += ((ids.len() - acked.ignored.len()) as u64).saturating_sub(acked.acked);
            if acked.ignored.is_empty() {
                return Ok(counts);
            }
            if retries_of_ignored == RETRIES_OF_IGNORED {
                counts.missing += acked.ignored.len() as u64;
                return Ok(counts);
            }
            retries_of_ignored += 1;
            ids = acked.ignored;
            sleep(IGNORED_PAUSE).await;
        }
    }
}
