//! Which agents exist, where they live, and whether their adapter is alive.
//!
//! KV keys `agent.<name>` record an agent's host and the stream sequence at
//! its first registration (`since`: broadcasts before it are not its mail).
//! Keys `host.<host>` are heartbeats: an adapter rewrites its key every few
//! seconds, and the server's timestamp on that write is the host's last sign
//! of life. Registrations are never removed ("no adapter has ever registered"
//! is what makes a recipient unknown), so positive lookups are cached forever.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bus::{Bus, Unavailable};
use crate::message::{Inbox, format_time};
use crate::names::AgentName;

/// How often an adapter reports that it is alive.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Silence after which a host's agents count as offline.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgentRecord {
    host: String,
    since: u64,
    registered_at: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HostRecord {
    /// False once the adapter has shut down cleanly.
    running: bool,
    version: String,
}

/// One row of `GET /api/agents` (without the unread count).
#[derive(Clone, Debug)]
pub struct AgentStatus {
    pub inbox: Inbox,
    pub host: String,
    pub online: bool,
    pub last_seen: Option<String>,
}

pub struct Registry {
    bus: Bus,
    host: String,
    /// Agent → `since`, for agents known to be registered.
    known: RwLock<HashMap<AgentName, u64>>,
}

fn agent_key(name: &AgentName) -> String {
    format!("agent.{name}")
}

impl Registry {
    pub fn new(bus: Bus, host: String) -> Self {
        Self { bus, host, known: RwLock::default() }
    }

    /// Registers this host's agents (idempotently) and returns their inboxes.
    /// Existing records are read in one bulk scan; only new agents and
    /// agents that moved here cost a write.
    pub async fn register(&self, agents: &[AgentName]) -> Result<Vec<Inbox>, Unavailable> {
        let (last, records) = tokio::try_join!(self.bus.last_sequence(), self.records())?;
        stream::iter(agents.iter().cloned())
            .map(|agent| {
                let existing = records.get(agent.as_str()).cloned();
                self.register_one(agent, existing, last)
            })
            .buffered(32)
            .try_collect()
            .await
    }

    async fn records(&self) -> Result<HashMap<String, AgentRecord>, Unavailable> {
        Ok(self.bus.kv_values("agent.").await?.into_iter().map(|(name, record)| (name, record.value)).collect())
    }

    async fn register_one(
        &self,
        agent: AgentName,
        mut existing: Option<AgentRecord>,
        last: u64,
    ) -> Result<Inbox, Unavailable> {
        let kv = self.bus.kv();
        let key = agent_key(&agent);
        loop {
            if let Some(record) = existing {
                if record.host != self.host {
                    tracing::info!(%agent, from = %record.host, to = %self.host, "agent moved host");
                    let moved = AgentRecord { host: self.host.clone(), ..record.clone() };
                    kv.put(&key, serde_json::to_vec(&moved).expect("serializes").into())
                        .await
                        .map_err(Unavailable::from)?;
                }
                return Ok(self.remember(agent, record.since));
            }
            let record = AgentRecord {
                host: self.host.clone(),
                since: last,
                registered_at: format_time(OffsetDateTime::now_utc()),
            };
            match kv.create(&key, serde_json::to_vec(&record).expect("serializes").into()).await {
                Ok(_) => return Ok(self.remember(agent, last)),
                // Another adapter registered it meanwhile: use theirs.
                Err(err) if err.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists => {
                    let value = kv.get(&key).await.map_err(Unavailable::from)?;
                    existing = value.and_then(|v| serde_json::from_slice(&v).ok());
                }
                Err(err) => return Err(Unavailable::from(err)),
            }
        }
    }

    fn remember(&self, agent: AgentName, since: u64) -> Inbox {
        self.known.write().expect("registry lock").insert(agent.clone(), since);
        Inbox { agent, since }
    }

    /// The inbox of a registered agent, or `None` if no adapter ever
    /// registered it.
    pub async fn inbox(&self, agent: &AgentName) -> Result<Option<Inbox>, Unavailable> {
        if let Some(since) = self.known.read().expect("registry lock").get(agent) {
            return Ok(Some(Inbox { agent: agent.clone(), since: *since }));
        }
        self.bus.ensure_connected()?;
        let value = self.bus.kv().get(agent_key(agent)).await.map_err(Unavailable::from)?;
        Ok(value
            .and_then(|v| serde_json::from_slice::<AgentRecord>(&v).ok())
            .map(|record| self.remember(agent.clone(), record.since)))
    }

    /// Reports this host alive (or, on shutdown, stopped).
    pub async fn heartbeat(&self, running: bool) -> Result<(), Unavailable> {
        self.bus.ensure_connected()?;
        let record = HostRecord { running, version: env!("CARGO_PKG_VERSION").into() };
        self.bus
            .kv()
            .put(format!("host.{}", self.host), serde_json::to_vec(&record).expect("serializes").into())
            .await
            .map_err(Unavailable::from)?;
        Ok(())
    }

    /// Every registered agent with its host's liveness, sorted by name.
    pub async fn list(&self) -> Result<Vec<AgentStatus>, Unavailable> {
        let (agents, hosts) = tokio::try_join!(self.records(), self.bus.kv_values::<HostRecord>("host."))?;
        let now = OffsetDateTime::now_utc();
        let hosts: HashMap<String, (bool, OffsetDateTime)> = hosts
            .into_iter()
            .map(|(host, beat)| (host, (beat.value.running && now - beat.stored < OFFLINE_AFTER, beat.stored)))
            .collect();
        let mut rows: Vec<AgentStatus> = agents
            .into_iter()
            .filter_map(|(name, record)| {
                let agent = AgentName::parse(&name).ok()?;
                let (online, last_seen) = match hosts.get(&record.host) {
                    Some((online, seen)) => (*online, Some(format_time(*seen))),
                    None => (false, None),
                };
                let inbox = self.remember(agent, record.since);
                Some(AgentStatus { inbox, host: record.host, online, last_seen })
            })
            .collect();
        rows.sort_by(|a, b| a.inbox.agent.cmp(&b.inbox.agent));
        Ok(rows)
    }
}
