//! Waking local agents through their OpenClaw gateway when mail arrives.
//!
//! `dispatch` follows the stream and hands each message to the `waker` of
//! every local agent it is for; a waker calls the `gateway` with a `notice`,
//! folding whatever arrives meanwhile into its `pending` summary; `marks`
//! records durably what each agent has been woken for, and `backlog` reads
//! what it has not.

mod backlog;
mod dispatch;
mod gateway;
mod marks;
mod notice;
mod pending;
mod record;
mod waker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, OrUnavailable, Unavailable};
use crate::config::{LocalAgent, WakeConfig, WakeMode};
use crate::message::Inbox;
use crate::metrics::Metrics;
use crate::names::AgentName;

use marks::WakeMarks;
pub use record::WakeRecord;
use waker::{Slot, Waker};

/// Start-up probes ("first message not yet woken for") in flight at once.
const CONCURRENCY: usize = 32;

/// The running wake machinery of one adapter.
pub struct Wakes {
    tasks: JoinSet<()>,
    marks: Arc<WakeMarks>,
    slots: HashMap<AgentName, Arc<Slot>>,
    stop: CancellationToken,
}

/// Everything a waker needs besides its agent.
pub struct WakeContext {
    pub bus: Bus,
    pub config: WakeConfig,
    pub metrics: Arc<Metrics>,
    /// Base URL of this adapter's API, as the agents reach it.
    pub base_url: String,
    /// This adapter's host, recorded with each agent's wakes.
    pub host: String,
}

impl Wakes {
    /// Starts waking `agents` (paired with their inboxes) for every message
    /// not yet covered by a wake, including those stored while this adapter
    /// was down.
    pub async fn start(context: WakeContext, agents: Vec<(LocalAgent, Inbox)>) -> Result<Wakes, Unavailable> {
        let bus = context.bus.clone();
        let marks = Arc::new(WakeMarks::new(bus.clone(), context.host.clone()));
        let stop = CancellationToken::new();
        let mut wakes =
            Wakes { tasks: JoinSet::new(), marks: marks.clone(), slots: HashMap::new(), stop: stop.clone() };
        let waking: Vec<(LocalAgent, Inbox)> =
            agents.into_iter().filter(|(a, _)| matches!(a.mode, WakeMode::Wake | WakeMode::Agent)).collect();
        if waking.is_empty() {
            return Ok(wakes);
        }
        let local: Vec<AgentName> = waking.iter().map(|(_, inbox)| inbox.agent.clone()).collect();
        let stored = marks.load(&local).await?;
        // Anything stored after this is delivered by the consumer below.
        let last = bus.last_sequence().await?;
        let slots: Vec<Arc<Slot>> = waking
            .iter()
            .map(|(_, inbox)| {
                let woken =
                    stored.get(inbox.agent.as_str()).map_or(inbox.since, |record| record.up_to.max(inbox.since));
                Arc::new(Slot::new(inbox.clone(), woken))
            })
            .collect();
        let first_unwoken: Vec<Option<u64>> = stream::iter(&slots)
            .map(|slot| backlog::first_after(&bus, &slot.inbox, slot.woken()))
            .buffered(CONCURRENCY)
            .try_collect()
            .await?;
        let from = follow_from(first_unwoken, last);
        let behind = slots.iter().filter(|s| s.woken() < last).count();
        tracing::info!(agents = slots.len(), from, behind, "wakes starting");

        let http = reqwest::Client::builder()
            .timeout(context.config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .unavailable("cannot build the gateway client")?;
        for ((agent, _), slot) in waking.into_iter().zip(&slots) {
            let waker = Waker {
                slot: slot.clone(),
                mode: agent.mode,
                gateway: agent.gateway.expect("waking agents have a gateway"),
                http: http.clone(),
                bus: bus.clone(),
                marks: marks.clone(),
                metrics: context.metrics.clone(),
                coalesce: context.config.coalesce,
                max_backoff: context.config.max_backoff,
                base_url: context.base_url.clone(),
            };
            wakes.tasks.spawn(waker.run(stop.clone()));
            wakes.slots.insert(slot.inbox.agent.clone(), slot.clone());
        }
        wakes.tasks.spawn(dispatch::run(bus, slots, from, stop.clone()));
        let flusher = marks.clone();
        wakes.tasks.spawn(async move { flusher.run(stop).await });
        Ok(wakes)
    }

    /// Wakes `agent` here or not: only one host wakes an agent that several
    /// list (see `registry`). Taking an agent back picks up the wake mark
    /// the other host left.
    pub async fn set_serving(&self, agent: &AgentName, serving: bool) -> Result<(), Unavailable> {
        let Some(slot) = self.slots.get(agent) else { return Ok(()) };
        if serving == slot.serving() {
            return Ok(());
        }
        let woken = if serving { self.marks.stored(agent).await? } else { 0 };
        slot.set_serving(serving, woken);
        Ok(())
    }

    /// Stops waking. Calls in flight get `grace` to finish; whatever is not
    /// covered by then is woken again after the next start.
    pub async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("wake calls still in flight at shutdown; they will be repeated after restart");
            self.tasks.shutdown().await;
        }
        if !tokio::time::timeout(Duration::from_secs(2), self.marks.flush()).await.unwrap_or(false) {
            tracing::warn!("some wake marks were not saved; those agents will be woken again after restart");
        }
    }
}

/// Where the dispatcher starts following: the oldest message some agent has
/// not been woken for, and at the latest just after `last`, the newest id
/// when the probes began. A message stored during the probes has a higher
/// id than `last`, so none is skipped, whichever agent it is for.
fn follow_from(first_unwoken: impl IntoIterator<Item = Option<u64>>, last: u64) -> u64 {
    first_unwoken.into_iter().flatten().chain([last.saturating_add(1)]).min().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_starts_no_later_than_just_after_the_newest_id_before_the_probes() {
        // Agent b had nothing pending when probed; a later probe of agent c
        // found a message stored after the probes began (id 15), while one
        // for b stored meanwhile got id 12: start at 11, not 15.
        assert_eq!(follow_from([None, Some(15)], 10), 11);
        assert_eq!(follow_from([Some(4), Some(15)], 10), 4);
        assert_eq!(follow_from([None, None], 10), 11);
        assert_eq!(follow_from([], u64::MAX), u64::MAX);
    }
}
