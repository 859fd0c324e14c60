//! Wake marks: per agent, the newest message id covered by a successful wake.
//!
//! They are what makes wakes survive crashes: at start-up an adapter wakes
//! each of its agents for anything stored after its mark. A mark is written
//! only after the gateway answered 200, so a crash in between causes a second
//! wake, never a missing one. Writes go through one flusher that keeps only
//! the newest mark per agent and flushes at most every `FLUSH_PACE`: a busy
//! agent costs a few KV writes per second, not one per wake. (Every write is
//! an fsync on the NATS side, the resource that caps a node's throughput; a
//! crash within the pace only repeats those agents' last wake.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, OrUnavailable, Unavailable};
use crate::names::AgentName;

/// Least time between two flushes.
const FLUSH_PACE: Duration = Duration::from_millis(100);
/// Pause after a flush that did not land (NATS away).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub struct WakeMarks {
    bus: Bus,
    dirty: Mutex<HashMap<AgentName, u64>>,
    changed: Notify,
}

fn key(agent: &AgentName) -> String {
    format!("woken.{agent}")
}

impl WakeMarks {
    pub fn new(bus: Bus) -> Self {
        Self { bus, dirty: Mutex::default(), changed: Notify::new() }
    }

    /// Every agent's stored mark.
    pub async fn load(&self) -> Result<HashMap<String, u64>, Unavailable> {
        Ok(self.bus.kv_values("woken.").await?.into_iter().map(|(agent, mark)| (agent, mark.value)).collect())
    }

    /// One agent's stored mark (0: none).
    pub async fn stored(&self, agent: &AgentName) -> Result<u64, Unavailable> {
        let value = self.bus.kv().get(key(agent)).await.unavailable("cannot read a wake mark")?;
        Ok(value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0))
    }

    pub fn set(&self, agent: &AgentName, seq: u64) {
        self.dirty.lock().expect("marks lock").insert(agent.clone(), seq);
        self.changed.notify_one();
    }

    /// Writes every changed mark; what fails stays dirty. True if all landed.
    pub async fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.dirty.lock().expect("marks lock"));
        let failed: Vec<(AgentName, u64)> = stream::iter(batch)
            .map(|(agent, seq)| async move {
                let written = self.bus.kv().put(key(&agent), seq.to_string().into()).await;
                written.err().map(|err| {
                    tracing::debug!(%agent, "wake mark not written yet: {err}");
                    (agent, seq)
                })
            })
            .buffer_unordered(16)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        let all_written = failed.is_empty();
        let mut dirty = self.dirty.lock().expect("marks lock");
        for (agent, seq) in failed {
            // A newer mark set meanwhile wins.
            dirty.entry(agent).or_insert(seq);
        }
        all_written
    }

    /// Flushes whenever a mark changes, until `shutdown`. The last flush is
    /// the caller's, after the wakers have stopped.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            loop {
                let landed = self.flush().await;
                tokio::select! {
                    _ = tokio::time::sleep(if landed { FLUSH_PACE } else { RETRY_PAUSE }) => {}
                    _ = shutdown.cancelled() => return,
                }
                if landed {
                    break;
                }
            }
        }
    }
}
