//! Which agents exist, which host serves each, and whether that host is alive.
//!
//! KV keys `agent.<name>` record an agent's host and the stream sequence at
//! its first registration (`since`: broadcasts before it are not its mail).
//! Keys `host.<host>` are heartbeats: an adapter rewrites its key every few
//! seconds, and the server's timestamp on that write is the host's last sign
//! of life, compared with the server's now (`Bus::now`), never this host's
//! clock. Registrations are never removed ("no adapter has ever registered"
//! is what makes a recipient unknown), so positive lookups are cached forever.
//!
//! Two adapters may list the same agent (a move between hosts, or a copied
//! config). The newest claim wins: the adapter that starts last records
//! itself as the agent's host, remembering the host it took over from, and
//! the other stops waking the agent at its next heartbeat. When the new host
//! shuts down cleanly it hands the agent back to that host if it is still
//! alive, so the agent never shows offline while someone serves it; when the
//! new host dies instead, the other reclaims the agent once it is silent.
//!
//! One adapter process at a time holds a host's heartbeat record (see
//! `heartbeat`): a second adapter started with the same host name is refused.

mod heartbeat;

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bus::{Bus, Inbox, Incarnation, KvValue, OrUnavailable, Unavailable};
use crate::message::format_time;
use crate::names::AgentName;
use crate::policy::Policy;
use crate::policy::WakeMode;
use heartbeat::Heartbeat;
pub(crate) use heartbeat::{HostError, HostTaken};

/// How often an adapter reports that it is alive.
pub(crate) const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Silence after which a host's agents count as offline.
const OFFLINE_AFTER: Duration = Duration::from_secs(20);
/// Registry records written at once.
const CONCURRENCY: usize = 32;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct AgentRecord {
    host: String,
    since: u64,
    registered_at: String,
    /// The host this one took the agent over from while it was alive: the
    /// agent goes back to it when this host shuts down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    previous: Option<String>,
    // Compatibility: see docs/architecture.md#compatibility
    /// The agent's own conversation safety settings, for every adapter.
    #[serde(default, skip_serializing_if = "Policy::is_empty")]
    policy: Policy,
    /// The stream incarnation `since` is an id of (see `bus::Incarnation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stream: Option<String>,
}

impl AgentRecord {
    /// `since` in the current stream: a registration made before the stream
    /// was created again predates all of it.
    fn since(&self, bus: &Bus) -> u64 {
        if bus.is_current(self.stream.as_deref()) { self.since } else { 0 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HostRecord {
    /// False once the adapter has shut down cleanly.
    running: bool,
    version: String,
    // Compatibility: see docs/architecture.md#compatibility
    /// The adapter process that wrote it (`None`: an older version's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
    /// The highest message id the adapter knew of: a stream created again
    /// starts above every host's.
    #[serde(default)]
    seen: u64,
}

/// The highest message id any registration or host record mentions,
/// whichever stream it speaks of.
pub(crate) async fn highest(bus: &Bus) -> Result<u64, Unavailable> {
    let (agents, hosts) =
        tokio::try_join!(bus.kv_values::<AgentRecord>("agent."), bus.kv_values::<HostRecord>("host."))?;
    let since = agents.values().map(|record| record.value.since).max().unwrap_or(0);
    Ok(since.max(hosts.values().map(|host| host.value.seen).max().unwrap_or(0)))
}

/// One row of `GET /api/agents` (without the unread count).
#[derive(Clone, Debug)]
pub(crate) struct AgentStatus {
    pub inbox: Inbox,
    pub host: String,
    pub online: bool,
    pub last_seen: Option<String>,
    // Compatibility: see docs/architecture.md#compatibility
    /// How the agent is reached, as its host published it (`None`: a
    /// record of an older version).
    pub wake_mode: Option<WakeMode>,
}

/// A local agent as registered at start-up.
pub(crate) struct Registered {
    pub inbox: Inbox,
    /// The host its record named before (`None`: it is registered just now).
    pub was: Option<String>,
}

pub(crate) struct Registry {
    bus: Bus,
    host: String,
    /// Agent → `since`, for agents known to be registered, and the stream
    /// incarnation it was read in.
    known: RwLock<HashMap<AgentName, (u64, Option<Incarnation>)>>,
    /// This host's agents and their settings.
    local: RwLock<HashMap<AgentName, Policy>>,
    /// Other agents' settings, as last read.
    policies: Mutex<HashMap<AgentName, (Policy, Instant)>>,
    heartbeat: Heartbeat,
}

/// How long another host's agent's settings are used before being read again.
const POLICY_TTL: Duration = Duration::from_secs(30);

fn agent_key(name: &AgentName) -> String {
    format!("agent.{name}")
}

fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    serde_json::to_vec(value).expect("records serialize").into()
}

/// Liveness of every host that ever reported.
struct Hosts(HashMap<String, KvValue<HostRecord>>);

impl Hosts {
    fn alive(&self, host: &str, now: OffsetDateTime) -> bool {
        self.0.get(host).is_some_and(|beat| beat.value.running && now - beat.stored < OFFLINE_AFTER)
    }
}

impl Registry {
    pub(crate) fn new(bus: Bus, host: String) -> Self {
        let heartbeat = Heartbeat::new(host.clone());
        Self { bus, host, known: RwLock::default(), local: RwLock::default(), policies: Mutex::default(), heartbeat }
    }

    /// `agent`'s own settings: this host's from its config, others' from
    /// their records (read again every [`POLICY_TTL`]).
    pub(crate) async fn policy(&self, agent: &AgentName) -> Result<Policy, Unavailable> {
        if let Some(policy) = self.local.read().expect("registry lock").get(agent) {
            return Ok(policy.clone());
        }
        if let Some((policy, read)) = self.policies.lock().expect("registry lock").get(agent)
            && read.elapsed() < POLICY_TTL
        {
            return Ok(policy.clone());
        }
        self.bus.ensure_connected()?;
        let value = self.bus.kv().get(agent_key(agent)).await.unavailable("cannot read a registry record")?;
        let policy =
            value.and_then(|v| serde_json::from_slice::<AgentRecord>(&v).ok()).map(|r| r.policy).unwrap_or_default();
        self.policies.lock().expect("registry lock").insert(agent.clone(), (policy.clone(), Instant::now()));
        Ok(policy)
    }

    /// Registers this host's agents, taking over any that another host
    /// lists (the newest claim wins), and returns their inboxes. Existing
    /// records are read in one bulk scan; only new agents and agents that
    /// change hosts cost a write.
    pub(crate) async fn register(&self, agents: &[(AgentName, Policy)]) -> Result<Vec<Registered>, Unavailable> {
        self.local.write().expect("registry lock").extend(agents.iter().cloned());
        let names: Vec<AgentName> = agents.iter().map(|(agent, _)| agent.clone()).collect();
        let (last, records, hosts) = tokio::try_join!(self.bus.last_sequence(), self.records_of(&names), self.hosts())?;
        let now = self.bus.now();
        // Futures collected first: a stream mapping borrowed closures would
        // not be `Send` for every lifetime, as `tokio::spawn` needs.
        let claims: Vec<_> = agents
            .iter()
            .map(|(agent, _)| {
                let existing = records.get(agent.as_str()).map(|r| (r.value.clone(), r.revision));
                let was = existing.as_ref().map(|(r, _)| r.host.clone());
                let previous = was.clone().filter(|h| hosts.alive(h, now));
                async move {
                    let since = self.claim(agent, existing, previous, last).await?;
                    Ok::<_, Unavailable>(Registered { inbox: self.remember(agent.clone(), since), was })
                }
            })
            .collect();
        stream::iter(claims).buffered(CONCURRENCY).try_collect().await
    }

    /// Records this host as `agent`'s, and returns the agent's `since`.
    /// `existing` is its record as last read, with the record's revision;
    /// `previous` the live host it is taken from.
    async fn claim(
        &self,
        agent: &AgentName,
        mut existing: Option<(AgentRecord, u64)>,
        previous: Option<String>,
        last: u64,
    ) -> Result<u64, Unavailable> {
        let kv = self.bus.kv();
        let key = agent_key(agent);
        let policy = self.local.read().expect("registry lock").get(agent).cloned().unwrap_or_default();
        loop {
            let written = match &existing {
                Some((record, _)) if record.host == self.host && record.policy == policy => {
                    return Ok(record.since(&self.bus));
                }
                Some((record, revision)) if record.host == self.host => {
                    let updated = AgentRecord { policy: policy.clone(), ..record.clone() };
                    let since = updated.since(&self.bus);
                    kv.update(&key, encode(&updated), *revision).await.map(|_| since).map_err(|e| e.to_string())
                }
                Some((record, revision)) => {
                    match &previous {
                        Some(other) => tracing::warn!(
                            %agent, %other,
                            "agent is also listed by host {other}, which is alive: this host takes it over \
                             (the newest claim wins) and {other} stops waking it"
                        ),
                        None => tracing::info!(%agent, from = %record.host, "agent moved to this host"),
                    }
                    let moved = AgentRecord {
                        host: self.host.clone(),
                        previous: previous.clone(),
                        policy: policy.clone(),
                        ..record.clone()
                    };
                    let since = moved.since(&self.bus);
                    kv.update(&key, encode(&moved), *revision).await.map(|_| since).map_err(|e| e.to_string())
                }
                None => {
                    let record = AgentRecord {
                        host: self.host.clone(),
                        since: last,
                        registered_at: format_time(self.bus.now()),
                        previous: None,
                        policy: policy.clone(),
                        stream: self.incarnation(),
                    };
                    kv.create(&key, encode(&record)).await.map(|_| last).map_err(|e| e.to_string())
                }
            };
            match written {
                Ok(since) => return Ok(since),
                // Someone else wrote the record meanwhile: look again.
                Err(why) => {
                    tracing::debug!(%agent, "registry record changed meanwhile ({why}); reading it again");
                    existing = self.record(agent, last).await?;
                }
            }
        }
    }

    /// The record of `agent` and its revision. A record that does not parse
    /// is replaced by a fresh one (logged), so that it cannot block start-up.
    async fn record(&self, agent: &AgentName, last: u64) -> Result<Option<(AgentRecord, u64)>, Unavailable> {
        let kv = self.bus.kv();
        let Some(entry) = kv.entry(agent_key(agent)).await.unavailable("cannot read a registry record")? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        match serde_json::from_slice::<AgentRecord>(&entry.value) {
            Ok(record) => Ok(Some((record, entry.revision))),
            Err(err) => {
                tracing::error!(%agent, "registry record does not parse ({err}); registering the agent anew");
                let record = AgentRecord {
                    host: self.host.clone(),
                    since: last,
                    registered_at: format_time(self.bus.now()),
                    previous: None,
                    policy: Policy::default(),
                    stream: self.incarnation(),
                };
                let revision = kv
                    .update(agent_key(agent), encode(&record), entry.revision)
                    .await
                    .unavailable("cannot repair a registry record")?;
                Ok(Some((record, revision)))
            }
        }
    }

    /// The records of `agents`, keyed by name.
    async fn records_of(&self, agents: &[AgentName]) -> Result<HashMap<String, KvValue<AgentRecord>>, Unavailable> {
        let records = self.bus.kv_get_many(agents.iter().map(agent_key).collect()).await?;
        Ok(records.into_iter().map(|(key, record)| (key.trim_start_matches("agent.").to_owned(), record)).collect())
    }

    async fn hosts(&self) -> Result<Hosts, Unavailable> {
        Ok(Hosts(self.bus.kv_values("host.").await?))
    }

    /// Which of `agents` this host serves now. An agent another host took
    /// over is left to it while that host is alive, and reclaimed once it is
    /// not.
    pub(crate) async fn serving(&self, agents: &[AgentName]) -> Result<Vec<bool>, Unavailable> {
        let (records, hosts) = tokio::try_join!(self.records_of(agents), self.hosts())?;
        let now = self.bus.now();
        let checks: Vec<_> = agents
            .iter()
            .map(|agent| {
                let record = records.get(agent.as_str()).map(|r| (r.value.clone(), r.revision));
                let taken = record.as_ref().is_some_and(|(r, _)| r.host != self.host && hosts.alive(&r.host, now));
                async move {
                    match record {
                        Some((record, _)) if record.host == self.host => Ok(true),
                        _ if taken => Ok(false),
                        existing => self.claim(agent, existing, None, self.bus.seen()).await.map(|_| true),
                    }
                }
            })
            .collect();
        stream::iter(checks).buffered(CONCURRENCY).try_collect().await
    }

    /// At a clean shutdown: hands agents taken over from a host that is
    /// still alive back to it, so they stay online.
    pub(crate) async fn release(&self, agents: &[AgentName]) -> Result<(), Unavailable> {
        let (records, hosts) = tokio::try_join!(self.records_of(agents), self.hosts())?;
        let now = self.bus.now();
        for agent in agents {
            let Some(entry) = records.get(agent.as_str()) else { continue };
            let record = &entry.value;
            let Some(previous) = record.previous.clone().filter(|p| record.host == self.host && hosts.alive(p, now))
            else {
                continue;
            };
            let back = AgentRecord { host: previous.clone(), previous: None, ..record.clone() };
            match self.bus.kv().update(agent_key(agent), encode(&back), entry.revision).await {
                Ok(_) => tracing::info!(%agent, to = %previous, "agent handed back"),
                Err(err) => tracing::warn!(%agent, "agent not handed back to {previous}: {err}"),
            }
        }
        Ok(())
    }

    fn remember(&self, agent: AgentName, since: u64) -> Inbox {
        self.known.write().expect("registry lock").insert(agent.clone(), (since, self.bus.incarnation()));
        Inbox { agent, since }
    }

    /// The inbox of a registered agent, or `None` if no adapter ever
    /// registered it.
    pub(crate) async fn inbox(&self, agent: &AgentName) -> Result<Option<Inbox>, Unavailable> {
        if let Some((since, _)) =
            self.known.read().expect("registry lock").get(agent).filter(|(_, seen)| *seen == self.bus.incarnation())
        {
            return Ok(Some(Inbox { agent: agent.clone(), since: *since }));
        }
        self.bus.ensure_connected()?;
        let value = self.bus.kv().get(agent_key(agent)).await.unavailable("cannot read a registry record")?;
        Ok(value
            .and_then(|v| serde_json::from_slice::<AgentRecord>(&v).ok())
            .map(|record| self.remember(agent.clone(), record.since(&self.bus))))
    }

    /// The host `agent` is registered on.
    pub(crate) async fn host_of(&self, agent: &AgentName) -> Result<Option<String>, Unavailable> {
        self.bus.ensure_connected()?;
        let value = self.bus.kv().get(agent_key(agent)).await.unavailable("cannot read a registry record")?;
        Ok(value.and_then(|v| serde_json::from_slice::<AgentRecord>(&v).ok()).map(|record| record.host))
    }

    fn incarnation(&self) -> Option<String> {
        self.bus.incarnation().map(|i| i.to_string())
    }

    /// This adapter process's id, as its host record and wake records name it.
    pub(crate) fn instance(&self) -> &str {
        &self.heartbeat.instance
    }

    /// Takes this host's record for this adapter process at start-up;
    /// refused while another adapter runs as this host.
    pub(crate) async fn claim_host(&self) -> Result<(), HostError> {
        self.heartbeat.claim(&self.bus).await
    }

    /// Reports this host alive (or, on shutdown, stopped); fails with
    /// [`HostTaken`] once another adapter process took the host over.
    pub(crate) async fn heartbeat(&self, running: bool) -> Result<(), HostError> {
        self.heartbeat.beat(&self.bus, running).await
    }

    /// Every registered agent with its host's liveness, sorted by name.
    pub(crate) async fn list(&self) -> Result<Vec<AgentStatus>, Unavailable> {
        let (agents, hosts) = tokio::try_join!(self.bus.kv_values::<AgentRecord>("agent."), self.hosts())?;
        let now = self.bus.now();
        let mut rows: Vec<AgentStatus> = agents
            .into_iter()
            .filter_map(|(name, record)| {
                let agent = AgentName::parse(&name).ok()?;
                let record = record.value;
                let online = hosts.alive(&record.host, now);
                let last_seen = hosts.0.get(&record.host).map(|beat| format_time(beat.stored));
                let inbox = self.remember(agent, record.since(&self.bus));
                Some(AgentStatus { inbox, host: record.host, online, last_seen, wake_mode: record.policy.wake })
            })
            .collect();
        rows.sort_by(|a, b| a.inbox.agent.cmp(&b.inbox.agent));
        Ok(rows)
    }
}
