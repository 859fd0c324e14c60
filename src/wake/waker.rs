//! One task per local agent that turns pending messages into gateway calls.
//!
//! At most one call per agent is in flight. Messages that arrive meanwhile
//! wait in the agent's [`Pending`] summary and are covered by the next call.
//! A failed call puts its summary back, so the retry covers everything
//! pending by then. Agents do not share a task, so a slow or failing gateway
//! delays only its own agents.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Inbox};
use crate::message::Priority;
use crate::metrics::{Metrics, WakeOutcome};
use crate::policy::WakeMode;

use super::backlog;
use super::gateway::{self, Call, Cause, Delivered, Failed, Hook, Hooks};
use super::marks::WakeMarks;
use super::notice;
use super::pending::Pending;

/// First retry delay after a transient failure; it doubles up to
/// `wake.max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// What the dispatcher and an agent's waker share.
pub(super) struct Slot {
    pub inbox: Inbox,
    pending: Mutex<Pending>,
    /// Messages up to this id are covered by a successful wake.
    woken: AtomicU64,
    /// The newest message offered.
    noted: AtomicU64,
    /// False while another host has claimed the agent (see `registry`):
    /// messages keep being noted, and are woken for once it is back.
    serving: AtomicBool,
    arrived: Notify,
}

impl Slot {
    pub(super) fn new(inbox: Inbox, woken: u64) -> Self {
        Self {
            inbox,
            pending: Mutex::default(),
            woken: AtomicU64::new(woken),
            noted: AtomicU64::new(0),
            serving: AtomicBool::new(true),
            arrived: Notify::new(),
        }
    }

    pub(super) fn woken(&self) -> u64 {
        self.woken.load(Ordering::Acquire)
    }

    /// The wake mark, if messages offered since are not all covered by it.
    pub(super) fn behind(&self) -> Option<u64> {
        let woken = self.woken();
        (self.noted.load(Ordering::Acquire) > woken).then_some(woken)
    }

    /// A message for this agent was stored.
    pub(super) fn offer(&self, seq: u64, from: &str, priority: Priority, stored: OffsetDateTime) {
        if seq <= self.woken() {
            return;
        }
        self.noted.fetch_max(seq, Ordering::AcqRel);
        self.pending.lock().expect("slot lock").add(seq, from, priority, stored);
        self.arrived.notify_one();
    }

    /// Forgets what the agent was woken for: the stream was created again,
    /// and those ids are not its messages.
    pub(super) fn restart(&self) {
        self.woken.store(0, Ordering::Release);
        self.noted.store(0, Ordering::Release);
        *self.pending.lock().expect("slot lock") = Pending::default();
    }

    pub(super) fn serving(&self) -> bool {
        self.serving.load(Ordering::Acquire)
    }

    /// Starts or stops waking the agent here. On taking it back, `woken` is
    /// what the other host recorded meanwhile.
    pub(super) fn set_serving(&self, serving: bool, woken: u64) {
        self.woken.fetch_max(woken, Ordering::AcqRel);
        if self.serving.swap(serving, Ordering::AcqRel) != serving {
            tracing::info!(agent = %self.inbox.agent, serving, "wakes for this agent {}", if serving { "resumed" } else { "paused: another host serves it" });
        }
        if serving {
            self.arrived.notify_one();
        }
    }

    fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock().expect("slot lock"))
    }

    fn put_back(&self, batch: Pending) {
        self.pending.lock().expect("slot lock").merge(batch);
    }
}

pub(super) struct Waker {
    pub slot: Arc<Slot>,
    pub mode: WakeMode,
    pub hooks: Hooks,
    pub http: reqwest::Client,
    /// Calls that may be in flight to this agent's gateway, across agents.
    pub calls: Arc<Semaphore>,
    pub bus: Bus,
    pub marks: Arc<WakeMarks>,
    pub metrics: Arc<Metrics>,
    pub coalesce: Duration,
    pub max_backoff: Duration,
    /// Where the agent reads its inbox, for the notice.
    pub base_url: String,
}

impl Waker {
    #[tracing::instrument(name = "waker", skip_all, fields(agent = %self.slot.inbox.agent))]
    pub(super) async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.slot.arrived.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            if !self.slot.serving() {
                continue;
            }
            if !self.coalesce.is_zero() && !sleep_unless(&shutdown, self.coalesce).await {
                return;
            }
            self.metrics.agents_waiting.inc();
            let done = self.deliver(&shutdown).await;
            self.metrics.agents_waiting.dec();
            if !done {
                return;
            }
        }
    }

    /// Calls the gateway until everything pending is covered. False if
    /// interrupted by shutdown (what was pending is replayed after restart).
    async fn deliver(&self, shutdown: &CancellationToken) -> bool {
        let mut failures = 0;
        while self.slot.serving() {
            let batch = self.slot.take();
            if batch.is_empty() || batch.up_to <= self.slot.woken() {
                return true;
            }
            let outcome = match self.call_for(&batch).await {
                Ok(None) => {
                    self.nothing_left(batch.up_to);
                    continue;
                }
                Ok(Some(call)) => {
                    let _permit = self.calls.acquire().await.expect("the call limit is never closed");
                    gateway::call(&self.http, &self.hooks, &call).await.map(|d| (d, call.up_to))
                }
                Err(cause) => Err(Failed::Transient { retry_after: None, cause }),
            };
            let delay = match outcome {
                Ok((delivered, up_to)) => {
                    self.delivered(delivered, &batch, up_to);
                    if up_to < batch.up_to {
                        // Handed over in slices: the rest goes next.
                        self.slot.put_back(batch);
                    }
                    failures = 0;
                    continue;
                }
                Err(failure) => {
                    self.slot.put_back(batch);
                    failures += 1;
                    self.failed(failure, failures)
                }
            };
            if !sleep_unless(shutdown, delay).await {
                return false;
            }
        }
        true
    }

    /// The call that covers `batch`, or its next slice in `agent` mode;
    /// `None` when no message left in it is to be handed over (the agent
    /// acknowledged them, or they expired).
    async fn call_for(&self, batch: &Pending) -> Result<Option<Call>, Cause> {
        let agent = &self.slot.inbox.agent;
        if self.mode != WakeMode::Agent {
            let text = notice::wake_text(agent, batch, &self.base_url);
            return Ok(Some(Call { up_to: batch.up_to, hook: Hook::Wake { text } }));
        }
        let slice = backlog::slice(&self.bus, &self.slot.inbox, self.slot.woken(), batch.up_to)
            .await
            .map_err(Cause::Backlog)?;
        if slice.messages.is_empty() {
            return Ok(None);
        }
        let up_to = slice.up_to;
        let message = notice::agent_text(agent, &slice.messages, up_to < batch.up_to, &self.base_url);
        Ok(Some(Call { up_to, hook: Hook::Agent { message, idempotency_key: format!("clawbus-{agent}-{up_to}") } }))
    }

    /// Nothing up to `up_to` is left to hand over: the mark moves without a
    /// call, which would run the agent for nothing.
    fn nothing_left(&self, up_to: u64) {
        self.slot.woken.fetch_max(up_to, Ordering::AcqRel);
        self.marks.moved();
        tracing::debug!(id = up_to, "nothing left to hand over up to id: acknowledged or expired");
    }

    fn delivered(&self, delivered: Delivered, batch: &Pending, up_to: u64) {
        let agent = &self.slot.inbox.agent;
        let outcome = match delivered {
            Delivered::Queued => WakeOutcome::Queued,
            Delivered::Coalesced => WakeOutcome::Coalesced,
        };
        self.metrics.wake(agent.as_str(), outcome);
        let latency =
            batch.oldest.map_or(Duration::ZERO, |oldest| (self.bus.now() - oldest).try_into().unwrap_or_default());
        // Sliced agent-mode calls count the batch once, with its last slice.
        let messages = if up_to >= batch.up_to { batch.messages } else { 1 };
        if up_to >= batch.up_to {
            self.metrics.woke(batch.messages, latency);
        }
        self.slot.woken.fetch_max(up_to, Ordering::AcqRel);
        self.marks.record(agent, outcome, Some((messages, latency)));
        tracing::info!(
            target: "clawbus::lifecycle",
            id = up_to,
            from_id = batch.first,
            outcome = outcome.label(),
            latency_ms = latency.as_millis() as u64,
            "woke for messages from_id..=id"
        );
    }

    /// Counts and logs a failure; returns how long to wait before retrying.
    fn failed(&self, failure: Failed, failures: u32) -> Duration {
        // A `Retry-After` of 0 or in the past is no reason to hammer.
        let backoff = backoff(failures, self.max_backoff);
        let agent = &self.slot.inbox.agent;
        match failure {
            Failed::Transient { retry_after, cause } => {
                self.metrics.wake(agent.as_str(), WakeOutcome::Retryable);
                self.marks.record(agent, WakeOutcome::Retryable, None);
                let delay = retry_after.map_or(backoff, |asked| asked.max(backoff));
                tracing::warn!(
                    attempt = failures,
                    ?delay,
                    error = &cause as &dyn std::error::Error,
                    "wake failed, will retry"
                );
                delay
            }
            Failed::Refused { cause } => {
                self.metrics.wake(agent.as_str(), WakeOutcome::Rejected);
                self.marks.record(agent, WakeOutcome::Rejected, None);
                tracing::error!(
                    gateway = %self.hooks.gateway,
                    error = &cause as &dyn std::error::Error,
                    "gateway refused the wake; {}. Retrying in {:?}; messages stay in the inbox",
                    cause.hint(),
                    self.max_backoff
                );
                self.max_backoff
            }
        }
    }
}

/// Capped exponential backoff with jitter: a random delay between half and
/// all of `FIRST_BACKOFF * 2^(failures-1)`, at most `cap`.
fn backoff(failures: u32, cap: Duration) -> Duration {
    let ceiling = FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(cap);
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}

/// Sleeps; false if `shutdown` came first.
async fn sleep_unless(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let cap = Duration::from_secs(30);
        for failures in 1..40 {
            let ceiling = FIRST_BACKOFF.saturating_mul(1 << (failures - 1).min(16)).min(cap);
            let delay = backoff(failures, cap);
            assert!(delay >= ceiling / 2 && delay <= ceiling, "{failures}: {delay:?}");
        }
        assert!(backoff(30, cap) >= Duration::from_secs(15));
    }
}
