//! Waking local agents through their OpenClaw gateway when mail arrives.
//!
//! `dispatch` follows the stream and hands each message to the `waker` of
//! every local agent it is for; a waker calls the `gateway` with a `notice`,
//! folding whatever arrives meanwhile into its `pending` summary; `marks`
//! records durably what each agent has been woken for, and `backlog` reads
//! what it has been neither woken for nor acknowledged.

mod backlog;
mod dispatch;
mod gateway;
mod marks;
mod members;
mod notice;
mod pending;
mod record;
mod waker;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, OrUnavailable, Unavailable};
use crate::config::{LocalAgent, WakeConfig};
use crate::metrics::Metrics;
use crate::names::AgentName;
use crate::registry::Registered;

use dispatch::Group;
use gateway::Hooks;
use marks::WakeMarks;
use record::Groups;
pub(crate) use record::{LastWake, WakeRecord, fleet as fleet_records, highest, of as record_of};
use waker::{Slot, Waker};

/// Calls in flight to one gateway at most, across the agents behind it: a
/// broadcast to 10,000 local agents opens this many connections to their
/// gateway, not 10,000. Each agent still has at most one, and agents behind
/// another gateway do not wait for these.
const MAX_CALLS_PER_GATEWAY: usize = 128;

/// The running wake machinery of one adapter.
pub(crate) struct Wakes {
    tasks: JoinSet<()>,
    marks: Option<Arc<WakeMarks>>,
    slots: HashMap<AgentName, Arc<Slot>>,
    stop: CancellationToken,
}

/// Everything a waker needs besides its agent.
pub(crate) struct WakeContext {
    pub bus: Bus,
    pub config: WakeConfig,
    pub metrics: Arc<Metrics>,
    /// Base URL of this adapter's API, as the agents reach it.
    pub base_url: String,
    /// This adapter's host, recorded with each agent's wakes.
    pub host: String,
    /// This adapter process, the only writer of the host's wake marks.
    pub instance: String,
}

impl Wakes {
    /// Starts waking `agents` for every message not yet covered by a wake,
    /// including those stored while this adapter was down.
    pub(crate) async fn start(
        context: WakeContext,
        agents: Vec<(LocalAgent, Registered)>,
    ) -> Result<Wakes, Unavailable> {
        let bus = context.bus.clone();
        let stop = CancellationToken::new();
        let mut wakes = Wakes { tasks: JoinSet::new(), marks: None, slots: HashMap::new(), stop: stop.clone() };
        let mut waking: Vec<(LocalAgent, Registered)> =
            agents.into_iter().filter(|(agent, _)| agent.mode.wakes()).collect();
        if waking.is_empty() {
            return Ok(wakes);
        }
        waking.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
        let limit = crate::bus::record_limit(bus.max_payload());
        let members: Groups = record::grouped(waking.iter().map(|(a, _)| a.name.to_string()).collect(), limit);
        let previous: Vec<(AgentName, Option<String>)> =
            waking.iter().map(|(agent, registered)| (agent.name.clone(), registered.was.clone())).collect();
        let stored = marks::load(&bus, &context.host, &members, &previous).await?;
        let slots: Vec<Arc<Slot>> = waking
            .iter()
            .map(|(_, Registered { inbox, .. })| {
                let mark = stored.marks.get(&inbox.agent).map_or(inbox.since, |mark| (*mark).max(inbox.since));
                Arc::new(Slot::new(inbox.clone(), mark))
            })
            .collect();
        // Each group's consumer starts just after its lowest mark: nothing a
        // member has not been woken for is older.
        let mut rest = slots.as_slice();
        let groups: Vec<Arc<Group>> = members
            .iter()
            .map(|names| {
                let (chunk, tail) = rest.split_at(names.len());
                rest = tail;
                let from = chunk.iter().map(|slot| slot.woken()).min().unwrap_or(0).saturating_add(1);
                Arc::new(Group::new(chunk.to_vec(), from))
            })
            .collect();
        tracing::info!(
            agents = slots.len(),
            groups = groups.len(),
            from = groups.iter().map(|g| g.routed() + 1).min(),
            "wakes starting"
        );
        let marks = Arc::new(WakeMarks::new(
            bus.clone(),
            context.host.clone(),
            context.instance.clone(),
            groups.clone(),
            stored,
        ));

        let http = reqwest::Client::builder()
            .timeout(context.config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // A redirect is a failed wake (see `gateway::Cause::Redirected`):
            // followed, it would turn the POST into a GET of whatever page
            // it points to, and that page's 200 into a wake.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unavailable("cannot build the gateway client")?;
        let mut calls: HashMap<String, Arc<Semaphore>> = HashMap::new();
        for ((agent, _), slot) in waking.into_iter().zip(&slots) {
            let gateway = agent.gateway.expect("waking agents have a gateway");
            let calls =
                calls.entry(gateway.url.to_string()).or_insert_with(|| Arc::new(Semaphore::new(MAX_CALLS_PER_GATEWAY)));
            let waker = Waker {
                slot: slot.clone(),
                mode: agent.mode,
                hooks: Hooks::new(&gateway),
                http: http.clone(),
                calls: calls.clone(),
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
        for group in groups {
            wakes.tasks.spawn(group.run(bus.clone(), stop.clone()));
        }
        let flusher = marks.clone();
        wakes.tasks.spawn(async move { flusher.run(stop).await });
        wakes.marks = Some(marks);
        Ok(wakes)
    }

    /// Wakes `agent` here or not: only one host wakes an agent that several
    /// list (see `registry`). Taking an agent back picks up the wake mark
    /// the other host left.
    pub(crate) async fn set_serving(&self, agent: &AgentName, serving: bool) -> Result<(), Unavailable> {
        let (Some(slot), Some(marks)) = (self.slots.get(agent), &self.marks) else { return Ok(()) };
        if serving == slot.serving() {
            return Ok(());
        }
        let woken = if serving { marks.stored(agent).await? } else { 0 };
        slot.set_serving(serving, woken);
        Ok(())
    }

    /// Stops waking for good, writing nothing more: another adapter
    /// process took this host over.
    pub(crate) fn abandon(&self) {
        if let Some(marks) = &self.marks {
            marks.lose();
        }
        self.stop.cancel();
    }

    /// Stops waking. Calls in flight get `grace` to finish; whatever is not
    /// covered by then is woken again after the next start.
    pub(crate) async fn stop(mut self, grace: Duration) {
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async { while self.tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!("wake calls still in flight at shutdown; they will be repeated after restart");
            self.tasks.shutdown().await;
        }
        let Some(marks) = self.marks else { return };
        if !tokio::time::timeout(Duration::from_secs(2), marks.flush(true)).await.unwrap_or(false) {
            tracing::warn!("some wake marks were not saved; those agents will be woken again after restart");
        }
    }
}
