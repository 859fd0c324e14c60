//! Waking local agents through their OpenClaw gateway when mail arrives.
//!
//! `dispatch` follows the stream and hands each message to the `waker` of
//! every local agent it is for; a waker calls the `gateway` with a `notice`,
//! folding whatever arrives meanwhile into its `pending` summary; `marks`
//! records durably what each agent has been woken for.

mod dispatch;
mod gateway;
mod marks;
mod notice;
mod pending;
mod waker;

use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::bus::Unavailable;
use crate::config::{LocalAgent, WakeConfig, WakeMode};
use crate::mailbox::Mailbox;
use crate::message::Inbox;
use crate::metrics::Metrics;

use marks::WakeMarks;
use waker::{Slot, Waker};

/// The running wake machinery of one adapter.
pub struct Wakes {
    tasks: JoinSet<()>,
    marks: Arc<WakeMarks>,
    stop: CancellationToken,
}

/// Everything a waker needs besides its agent.
pub struct WakeContext {
    pub mailbox: Mailbox,
    pub config: WakeConfig,
    pub metrics: Arc<Metrics>,
    /// Base URL of this adapter's API, as the agents reach it.
    pub base_url: String,
}

impl Wakes {
    /// Starts waking `agents` (paired with their inboxes) for every message
    /// not yet covered by a wake, including those stored while this adapter
    /// was down.
    pub async fn start(context: WakeContext, agents: Vec<(LocalAgent, Inbox)>) -> Result<Wakes, Unavailable> {
        let bus = context.mailbox.bus().clone();
        let marks = Arc::new(WakeMarks::new(bus.clone()));
        let stop = CancellationToken::new();
        let mut wakes = Wakes { tasks: JoinSet::new(), marks: marks.clone(), stop: stop.clone() };
        let waking: Vec<(LocalAgent, Inbox)> = agents.into_iter().filter(|(a, _)| a.mode != WakeMode::None).collect();
        if waking.is_empty() {
            return Ok(wakes);
        }
        let stored = marks.load().await?;
        // Anything stored after this is delivered by the consumer below.
        let last = bus.last_sequence().await?;
        let slots: Vec<Arc<Slot>> = waking
            .iter()
            .map(|(_, inbox)| {
                let woken = stored.get(inbox.agent.as_str()).copied().unwrap_or(inbox.since);
                Arc::new(Slot::new(inbox.clone(), woken))
            })
            .collect();
        let first_unwoken: Vec<Option<u64>> = stream::iter(&slots)
            .map(|slot| context.mailbox.first_after(&slot.inbox, slot.woken()))
            .buffered(32)
            .try_collect()
            .await?;
        let from = first_unwoken.into_iter().flatten().min().unwrap_or(last + 1);
        let behind = slots.iter().filter(|s| s.woken() < last).count();
        tracing::info!(agents = slots.len(), from, behind, "wakes starting");

        let http = reqwest::Client::builder()
            .timeout(context.config.timeout)
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .build()
            .map_err(Unavailable::from)?;
        for ((agent, _), slot) in waking.into_iter().zip(&slots) {
            let waker = Waker {
                slot: slot.clone(),
                mode: agent.mode,
                gateway: agent.gateway.expect("waking agents have a gateway"),
                http: http.clone(),
                mailbox: context.mailbox.clone(),
                marks: marks.clone(),
                metrics: context.metrics.clone(),
                coalesce: context.config.coalesce,
                max_backoff: context.config.max_backoff,
                base_url: context.base_url.clone(),
            };
            wakes.tasks.spawn(waker.run(stop.clone()));
        }
        wakes.tasks.spawn(dispatch::run(bus, slots, from, stop.clone()));
        let flusher = marks.clone();
        wakes.tasks.spawn(async move { flusher.run(stop).await });
        Ok(wakes)
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
