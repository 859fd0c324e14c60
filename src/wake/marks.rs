//! Wake records (see `record`): per agent, the wake mark (the newest message
//! id covered by a successful wake), the last call and counts.
//!
//! The mark is what makes wakes survive crashes: at start-up an adapter
//! wakes each of its agents for anything stored after its mark. It advances
//! only after the gateway answered 200, so a crash in between causes a
//! second wake, never a missing one. Writes go through one flusher that
//! keeps only the newest record per agent and flushes at most every
//! `FLUSH_PACE`: a busy agent costs a few KV writes per second, not one per
//! wake. (Every write is an fsync on the NATS side, the resource that caps a
//! node's throughput; a crash within the pace only repeats those agents'
//! last wake.)

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::record::{LastWake, WakeRecord};
use crate::bus::{Bus, OrUnavailable, Unavailable};
use crate::message::format_time;
use crate::metrics::WakeOutcome;
use crate::names::AgentName;

/// Least time between two flushes.
const FLUSH_PACE: Duration = Duration::from_millis(100);
/// Pause after a flush that did not land (NATS away).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

pub struct WakeMarks {
    bus: Bus,
    host: String,
    /// Each local agent's record as this adapter knows it.
    records: Mutex<HashMap<AgentName, WakeRecord>>,
    /// Agents whose record changed since the last flush.
    dirty: Mutex<Vec<AgentName>>,
    changed: Notify,
}

fn key(agent: &AgentName) -> String {
    format!("woken.{agent}")
}

impl WakeMarks {
    pub fn new(bus: Bus, host: String) -> Self {
        Self { bus, host, records: Mutex::default(), dirty: Mutex::default(), changed: Notify::new() }
    }

    /// Every agent's stored record; this adapter's agents' are kept, so
    /// counts go on across restarts.
    pub async fn load(&self, local: &[AgentName]) -> Result<HashMap<String, WakeRecord>, Unavailable> {
        let stored: HashMap<String, WakeRecord> =
            self.bus.kv_values("woken.").await?.into_iter().map(|(agent, record)| (agent, record.value)).collect();
        let mut records = self.records.lock().expect("marks lock");
        for agent in local {
            records.insert(agent.clone(), stored.get(agent.as_str()).cloned().unwrap_or_default());
        }
        Ok(stored)
    }

    /// One agent's stored mark (0: none), as another host may have left it.
    pub async fn stored(&self, agent: &AgentName) -> Result<u64, Unavailable> {
        let value = self.bus.kv().get(key(agent)).await.unavailable("cannot read a wake record")?;
        Ok(value.and_then(|v| serde_json::from_slice::<WakeRecord>(&v).ok()).map_or(0, |r| r.up_to))
    }

    /// A call for `agent` ended with `outcome`; a success covered messages
    /// up to `up_to` (`messages` of them, the oldest stored `latency` ago).
    pub fn record(&self, agent: &AgentName, outcome: WakeOutcome, covered: Option<(u64, u64, Duration)>) {
        {
            let mut records = self.records.lock().expect("marks lock");
            let record = records.entry(agent.clone()).or_default();
            record.host.clone_from(&self.host);
            let mut last = LastWake {
                at: format_time(OffsetDateTime::now_utc()),
                outcome: outcome.label().into(),
                latency_ms: None,
            };
            match covered {
                Some((up_to, messages, latency)) => {
                    record.up_to = record.up_to.max(up_to);
                    record.sent += 1;
                    record.coalesced += messages.saturating_sub(1);
                    record.failing = 0;
                    last.latency_ms = Some(latency.as_secs_f64() * 1e3);
                }
                None => {
                    record.failed += 1;
                    record.failing += 1;
                }
            }
            record.last = Some(last);
        }
        let mut dirty = self.dirty.lock().expect("marks lock");
        if !dirty.contains(agent) {
            dirty.push(agent.clone());
        }
        self.changed.notify_one();
    }

    /// Writes every changed record; what fails stays dirty. True if all landed.
    pub async fn flush(&self) -> bool {
        let agents = std::mem::take(&mut *self.dirty.lock().expect("marks lock"));
        let batch: Vec<(AgentName, WakeRecord)> = {
            let records = self.records.lock().expect("marks lock");
            agents.into_iter().filter_map(|agent| Some((agent.clone(), records.get(&agent)?.clone()))).collect()
        };
        let failed: Vec<AgentName> = stream::iter(batch)
            .map(|(agent, record)| async move {
                let value = serde_json::to_vec(&record).expect("a record serializes");
                let written = self.bus.kv().put(key(&agent), value.into()).await;
                written.err().map(|err| {
                    tracing::debug!(%agent, "wake record not written yet: {err}");
                    agent
                })
            })
            .buffer_unordered(16)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        let all_written = failed.is_empty();
        let mut dirty = self.dirty.lock().expect("marks lock");
        for agent in failed {
            if !dirty.contains(&agent) {
                dirty.push(agent);
            }
        }
        all_written
    }

    /// Flushes whenever a record changes, until `shutdown`. The last flush
    /// is the caller's, after the wakers have stopped.
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
