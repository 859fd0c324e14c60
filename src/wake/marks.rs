//! Saving what this host's wakes came to (see `record` for the keys).
//!
//! The marks are what make wakes survive crashes: at start-up an adapter
//! wakes each of its agents for anything stored after its mark. A mark
//! moves only after the gateway answered 200, so a crash in between causes
//! a second wake, never a missing one. All of a host's marks are one record,
//! written by one flusher at most every `FLUSH_PACE`: a broadcast that wakes
//! 1,000 agents costs a few writes, not 1,000 (every write is an fsync on
//! the NATS side, the resource that caps a node's throughput; a crash within
//! the pace only repeats the last wakes). Counts and last calls change with
//! every wake but matter only to people, so they are written every
//! `STATS_PACE`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::dispatch::Group;
use super::record::{self, Groups, HostMarks, LastWake, Legacy, WakeStats};
use crate::bus::{Bus, OrUnavailable, Owned, Unavailable};
use crate::message::format_time;
use crate::metrics::WakeOutcome;
use crate::names::AgentName;

/// Least time between two writes of the marks.
const FLUSH_PACE: Duration = Duration::from_millis(100);
/// Least time between two writes of an agent's counts.
const STATS_PACE: Duration = Duration::from_secs(5);
/// Pause after a flush that did not land (NATS away).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What this host recorded before: where each agent's wakes resume, and
/// its counts.
pub struct Stored {
    /// Generation of the members record for the groups in use now.
    pub generation: u64,
    /// Generations no longer referred to once the marks are written.
    retired: Vec<u64>,
    /// Revision of the marks record as read (`None`: there is none).
    revision: Option<u64>,
    pub marks: HashMap<AgentName, u64>,
    stats: HashMap<AgentName, WakeStats>,
}

/// Reads what this host, and the hosts `agents` come from, recorded for
/// them, and saves `groups` as a new generation of members if they changed.
/// `agents` pairs each local agent with the host its registration named
/// before this start (`None`: registered just now, nothing to resume).
pub async fn load(
    bus: &Bus,
    host: &str,
    groups: &Groups,
    agents: &[(AgentName, Option<String>)],
) -> Result<Stored, Unavailable> {
    let own = bus.kv_get::<HostMarks>(record::marks_key(host)).await?;
    let revision = own.as_ref().map(|own| own.revision);
    let previous = own.map(|own| own.value.members);
    let mut generations = bus.kv_values::<Groups>(&record::members_key_prefix(host)).await?;
    let before = previous.and_then(|generation| generations.remove(&generation.to_string())).map(|m| m.value);
    // Generations no marks refer to are left by a start that ended before
    // its marks were written.
    let leftovers: Vec<u64> = generations.keys().filter_map(|generation| generation.parse().ok()).collect();
    let generation = match (previous, &before) {
        (Some(generation), Some(before)) if before == groups => generation,
        _ => previous.into_iter().chain(leftovers.iter().copied()).max().unwrap_or(0) + 1,
    };
    let mut retired = leftovers;
    if previous != Some(generation) {
        retired.extend(previous);
        save_members(bus, host, generation, groups).await?;
    }
    let stats_groups = before.map_or(0, |before| before.len());
    // Counts of groups that no longer exist would show beside the new ones.
    for group in groups.len()..stats_groups {
        bus.kv().delete(record::stats_key(host, group)).await.unavailable("cannot delete old wake counts")?;
    }
    let mut hosts: BTreeSet<String> = agents.iter().filter_map(|(_, was)| was.clone()).collect();
    hosts.insert(host.to_owned());
    let hosts: Vec<String> = hosts.into_iter().collect();
    let known: Vec<AgentName> = agents.iter().filter(|(_, was)| was.is_some()).map(|(a, _)| a.clone()).collect();
    let stats_keys = (0..stats_groups).map(|group| record::stats_key(host, group)).collect();
    let (mut marks, chunks) = tokio::try_join!(
        record::recorded_marks(bus, Some(&hosts), &known),
        bus.kv_get_many::<BTreeMap<String, WakeStats>>(stats_keys),
    )?;
    let mut stats: HashMap<AgentName, WakeStats> = chunks
        .into_values()
        .flat_map(|chunk| chunk.value)
        .filter_map(|(agent, stats)| Some((AgentName::parse(&agent).ok()?, stats)))
        .collect();
    // Agents last woken by an older version, which kept a record per agent.
    let unmarked: Vec<&AgentName> = known.iter().filter(|agent| !marks.contains_key(*agent)).collect();
    if !unmarked.is_empty() {
        let mut legacy = bus.kv_get_many::<Legacy>(unmarked.iter().map(|agent| Legacy::key(agent)).collect()).await?;
        for agent in unmarked {
            if let Some(record) = legacy.remove(&Legacy::key(agent)) {
                let (up_to, old_stats) = record.value.into_parts();
                marks.insert(agent.clone(), up_to);
                stats.entry(agent.clone()).or_insert(old_stats);
            }
        }
    }
    Ok(Stored { generation, retired, revision, marks, stats })
}

/// Creates generation `generation` of `host`'s members: a generation is
/// written once, so an existing one means another adapter writes this
/// host's records.
async fn save_members(bus: &Bus, host: &str, generation: u64, groups: &Groups) -> Result<(), Unavailable> {
    let members = serde_json::to_vec(groups).expect("groups serialize");
    match bus.kv().create(record::members_key(host, generation), members.into()).await {
        Ok(_) => Ok(()),
        Err(err) => {
            if err.kind() == kv::CreateErrorKind::AlreadyExists {
                tracing::error!(
                    %host, generation,
                    "members record {generation} of host {host} was created by another adapter meanwhile: \
                     is a second adapter running as this host?"
                );
            }
            Err(Unavailable::caused("cannot save members", err))
        }
    }
}

pub struct WakeMarks {
    bus: Bus,
    host: String,
    generation: u64,
    groups: Vec<Arc<Group>>,
    group_of: HashMap<AgentName, usize>,
    stats: Mutex<HashMap<AgentName, WakeStats>>,
    /// Groups whose counts changed since they were last written.
    dirty: Mutex<BTreeSet<usize>>,
    stats_written: Mutex<Option<Instant>>,
    /// The marks as last written.
    written: Mutex<Option<HostMarks>>,
    /// Their record's revision (`None`: there is no record yet).
    revision: Mutex<Option<u64>>,
    /// This adapter process, named as the marks' writer.
    instance: String,
    /// Set once another process wrote the marks: this one writes no more.
    lost: AtomicBool,
    /// Members generations no longer referred to once the marks are written.
    retired: Mutex<Vec<u64>>,
    changed: Notify,
}

impl WakeMarks {
    pub fn new(bus: Bus, host: String, instance: String, groups: Vec<Arc<Group>>, stored: Stored) -> Self {
        let group_of = groups
            .iter()
            .enumerate()
            .flat_map(|(i, group)| group.slots.iter().map(move |slot| (slot.inbox.agent.clone(), i)))
            .collect();
        let every_group = (0..groups.len()).collect();
        Self {
            bus,
            host,
            generation: stored.generation,
            groups,
            group_of,
            stats: Mutex::new(stored.stats),
            // Written once at start: the groups may have changed.
            dirty: Mutex::new(every_group),
            stats_written: Mutex::default(),
            written: Mutex::default(),
            revision: Mutex::new(stored.revision),
            instance,
            lost: AtomicBool::new(false),
            retired: Mutex::new(stored.retired),
            changed: Notify::new(),
        }
    }

    /// `agent`'s highest mark any host recorded (0: none).
    pub async fn stored(&self, agent: &AgentName) -> Result<u64, Unavailable> {
        let marks = record::recorded_marks(&self.bus, None, std::slice::from_ref(agent)).await?;
        Ok(marks.get(agent).copied().unwrap_or(0))
    }

    /// A call for `agent` ended with `outcome`; a success covered `messages`
    /// messages, the oldest stored `latency` ago. (The mark itself is the
    /// agent's slot's.)
    pub fn record(&self, agent: &AgentName, outcome: WakeOutcome, covered: Option<(u64, Duration)>) {
        {
            let mut all = self.stats.lock().expect("marks lock");
            let stats = all.entry(agent.clone()).or_default();
            let mut last =
                LastWake { at: format_time(self.bus.now()), outcome: outcome.label().into(), latency_ms: None };
            match covered {
                Some((messages, latency)) => {
                    stats.sent += 1;
                    stats.coalesced += messages.saturating_sub(1);
                    stats.failing = 0;
                    last.latency_ms = Some(latency.as_secs_f64() * 1e3);
                }
                None => {
                    stats.failed += 1;
                    stats.failing += 1;
                }
            }
            stats.last = Some(last);
        }
        if let Some(group) = self.group_of.get(agent) {
            self.dirty.lock().expect("marks lock").insert(*group);
        }
        self.changed.notify_one();
    }

    /// The marks as they stand: per group, what its consumer has routed
    /// (read first), and the members whose wakes lag behind that.
    fn snapshot(&self) -> HostMarks {
        let mut marks =
            HostMarks { members: self.generation, writer: Some(self.instance.clone()), ..HostMarks::default() };
        for group in &self.groups {
            marks.up_to.push(group.routed());
            for slot in &group.slots {
                if let Some(woken) = slot.behind() {
                    marks.behind.insert(slot.inbox.agent.to_string(), woken);
                }
            }
        }
        marks
    }

    /// Writes the marks if they changed, and the counts if `STATS_PACE` has
    /// passed (`now`: whatever the pace). True if everything due landed, or
    /// if nothing is to be written any more (the marks were lost to another
    /// writer).
    pub async fn flush(&self, now: bool) -> bool {
        if self.is_lost() {
            return true;
        }
        let marks = self.snapshot();
        let mut landed = true;
        if self.written.lock().expect("marks lock").as_ref() != Some(&marks) {
            let value = serde_json::to_vec(&marks).expect("marks serialize");
            let ours = |value: &[u8]| {
                serde_json::from_slice::<HostMarks>(value).is_ok_and(|m| m.writer.as_ref() == Some(&self.instance))
            };
            let key = record::marks_key(&self.host);
            match self.bus.kv_write_owned(&key, value.into(), &self.revision, ours).await {
                Ok(Owned::Written) => {
                    *self.written.lock().expect("marks lock") = Some(marks);
                    self.retire().await;
                }
                Ok(Owned::Lost) => {
                    tracing::error!(
                        host = %self.host,
                        "the wake marks of host {} were written by another adapter: this one stops waking and \
                         writes them no more; is a second adapter running with this host name? Set `host` in \
                         the config of each to a name of its own",
                        self.host
                    );
                    self.lose();
                    return true;
                }
                Err(err) => {
                    tracing::debug!("wake marks not written yet: {err}");
                    landed = false;
                }
            }
        }
        let due = now || self.stats_written.lock().expect("marks lock").is_none_or(|at| at.elapsed() >= STATS_PACE);
        if due {
            landed &= self.flush_stats().await;
        }
        landed
    }

    /// From now on nothing is written: the host is another adapter's.
    pub fn lose(&self) {
        self.lost.store(true, Ordering::Relaxed);
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Relaxed)
    }

    /// Writes the counts of every group that changed; what fails stays dirty.
    async fn flush_stats(&self) -> bool {
        let groups = std::mem::take(&mut *self.dirty.lock().expect("marks lock"));
        if groups.is_empty() {
            return true;
        }
        *self.stats_written.lock().expect("marks lock") = Some(Instant::now());
        let mut landed = true;
        for group in groups {
            let chunk: BTreeMap<String, WakeStats> = {
                let stats = self.stats.lock().expect("marks lock");
                let members = self.groups[group].slots.iter().map(|slot| &slot.inbox.agent);
                members.filter_map(|agent| Some((agent.to_string(), stats.get(agent)?.clone()))).collect()
            };
            let value = serde_json::to_vec(&chunk).expect("stats serialize");
            if let Err(err) = self.bus.kv().put(record::stats_key(&self.host, group), value.into()).await {
                tracing::debug!("wake counts not written yet: {err}");
                self.dirty.lock().expect("marks lock").insert(group);
                landed = false;
            }
        }
        landed
    }

    /// Deletes the members generations the marks no longer refer to.
    async fn retire(&self) {
        let retired = std::mem::take(&mut *self.retired.lock().expect("marks lock"));
        for generation in retired {
            if let Err(err) = self.bus.kv().delete(record::members_key(&self.host, generation)).await {
                tracing::debug!("old members record not deleted yet: {err}");
                self.retired.lock().expect("marks lock").push(generation);
            }
        }
    }

    fn stats_pending(&self) -> bool {
        !self.dirty.lock().expect("marks lock").is_empty()
    }

    /// Flushes whenever a wake ends, until `shutdown`. The last flush is
    /// the caller's, after the wakers have stopped.
    pub async fn run(&self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = shutdown.cancelled() => break,
            }
            loop {
                let landed = self.flush(false).await;
                if self.is_lost() {
                    // The wakes stop with the marks (this token is theirs).
                    shutdown.cancel();
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(if landed { FLUSH_PACE } else { RETRY_PAUSE }) => {}
                    _ = shutdown.cancelled() => return,
                }
                if landed && !self.stats_pending() {
                    break;
                }
            }
        }
    }
}
