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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backlog;
use super::dispatch::Group;
use super::members;
use super::record::{self, Groups, HostMarks, LastWake, Legacy, WakeStats};
use crate::bus::{self, Bus, OrUnavailable, Owned, Unavailable};
use crate::message::format_time;
use crate::metrics::WakeOutcome;
use crate::names::AgentName;
use crate::readstate;

/// Least time between two writes of the marks.
const FLUSH_PACE: Duration = Duration::from_millis(100);
/// Least time between two writes of an agent's counts.
const STATS_PACE: Duration = Duration::from_secs(5);
/// Pause after a flush that did not land (NATS away).
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What this host recorded before: where each agent's wakes resume, and
/// its counts.
pub(super) struct Stored {
    /// Generation of the members record for the groups in use now.
    pub generation: u64,
    /// Members keys no longer referred to once the marks are written.
    retired: Vec<String>,
    /// Revision of the marks record as read (`None`: there is none).
    revision: Option<u64>,
    pub marks: HashMap<AgentName, u64>,
    stats: HashMap<AgentName, WakeStats>,
}

/// Reads what this host, and the hosts `agents` come from, recorded for
/// them (for an agent none of them covers, its read floor), and saves
/// `groups` as a new generation of members if they changed.
/// `agents` pairs each local agent with the host its registration named
/// before this start (`None`: registered just now, nothing to resume).
pub(super) async fn load(
    bus: &Bus,
    host: &str,
    groups: &Groups,
    agents: &[(AgentName, Option<String>)],
) -> Result<Stored, Unavailable> {
    let own = bus.kv_get::<HostMarks>(record::marks_key(host)).await?;
    let revision = own.as_ref().map(|own| own.revision);
    let previous = own.map(|own| own.value.members);
    let mut generations = members::generations(bus, host).await?;
    let before = previous.and_then(|generation| generations.get_mut(&generation)).and_then(|g| g.groups.take());
    let generation = match (previous, &before) {
        (Some(generation), Some(before)) if before == groups => generation,
        _ => previous.into_iter().chain(generations.keys().copied()).max().unwrap_or(0) + 1,
    };
    // Every other generation: the one the marks refer to now, and any left
    // by a start that ended before its marks were written.
    let retired: Vec<String> =
        generations.into_iter().filter(|(g, _)| *g != generation).flat_map(|(_, g)| g.keys).collect();
    if previous != Some(generation) {
        members::save(bus, host, generation, groups).await?;
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
    // Compatibility: see docs/architecture.md#compatibility
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
    let uncovered: Vec<&AgentName> = known.iter().filter(|agent| !marks.contains_key(*agent)).collect();
    if !uncovered.is_empty() {
        marks.extend(acknowledged(bus, &uncovered).await?);
    }
    Ok(Stored { generation, retired, revision, marks, stats })
}

/// Where the wakes of `agents`, which no host's record covers, resume:
/// after their read floors. A host whose list no longer has an agent (it
/// was removed from that host's config) keeps no mark of it, and the host
/// it moved to has handed it nothing: what it has not acknowledged is
/// handed over again there, at least once; what it has, never (the slices
/// of `backlog` leave out acknowledged messages above the floor too).
async fn acknowledged(bus: &Bus, agents: &[&AgentName]) -> Result<HashMap<AgentName, u64>, Unavailable> {
    let mut floors = HashMap::new();
    for (agent, mark) in readstate::load_many(bus, agents).await? {
        let floor = backlog::trusted(bus, mark).await?.floor;
        if floor > 0 {
            floors.insert(agent, floor);
        }
    }
    Ok(floors)
}

pub(super) struct WakeMarks {
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
    /// Members keys no longer referred to once the marks are written.
    retired: Mutex<Vec<String>>,
    changed: Notify,
    /// Agents behind left out of the marks last written (see `bound_behind`).
    left_out: AtomicUsize,
    /// Set while writes of the marks fail.
    failing: AtomicBool,
}

/// Lists `behind` (group, agent, mark) in `marks`, lowest marks first, as
/// long as the record stays within `limit` bytes, and returns how many did
/// not fit. The group of each agent left out keeps a mark no higher than
/// its own: nothing it was not woken for is marked, at worst a wake is
/// repeated after a restart. A record the server refuses would stop every
/// flush, every agent's marks with it.
fn bound_behind(marks: &mut HostMarks, mut behind: Vec<(usize, String, u64)>, limit: usize) -> usize {
    let mut size = serde_json::to_vec(marks).expect("marks serialize").len();
    behind.sort_by_key(|(_, _, woken)| *woken);
    let mut left_out = 0;
    for (group, agent, woken) in behind {
        // `"agent":woken,`
        let cost = agent.len() + woken.to_string().len() + 4;
        if size + cost <= limit {
            size += cost;
            marks.behind.insert(agent, woken);
        } else {
            left_out += 1;
            marks.up_to[group] = marks.up_to[group].min(woken);
        }
    }
    left_out
}

impl WakeMarks {
    pub(super) fn new(bus: Bus, host: String, instance: String, groups: Vec<Arc<Group>>, stored: Stored) -> Self {
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
            left_out: AtomicUsize::new(0),
            failing: AtomicBool::new(false),
        }
    }

    /// `agent`'s highest mark any host recorded; with none, its read floor
    /// (see `acknowledged`; 0: neither).
    pub(super) async fn stored(&self, agent: &AgentName) -> Result<u64, Unavailable> {
        let marks = record::recorded_marks(&self.bus, None, std::slice::from_ref(agent)).await?;
        match marks.get(agent) {
            Some(mark) => Ok(*mark),
            None => Ok(acknowledged(&self.bus, &[agent]).await?.get(agent).copied().unwrap_or(0)),
        }
    }

    /// A call for `agent` ended with `outcome`; a success covered `messages`
    /// messages, the oldest stored `latency` ago. (The mark itself is the
    /// agent's slot's.)
    pub(super) fn record(&self, agent: &AgentName, outcome: WakeOutcome, covered: Option<(u64, Duration)>) {
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

    /// A mark moved without a call (see `Waker::nothing_left`).
    pub(super) fn moved(&self) {
        self.changed.notify_one();
    }

    /// The marks as they stand: per group, what its consumer has routed
    /// (read first), and the members whose wakes lag behind that, as many
    /// as the record can hold (see `bound_behind`).
    fn snapshot(&self) -> HostMarks {
        let mut marks = HostMarks {
            members: self.generation,
            writer: Some(self.instance.clone()),
            stream: self.bus.incarnation().map(|i| i.to_string()),
            ..HostMarks::default()
        };
        let mut behind = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            marks.up_to.push(group.routed());
            for slot in &group.slots {
                if let Some(woken) = slot.behind() {
                    behind.push((i, slot.inbox.agent.to_string(), woken));
                }
            }
        }
        let left_out = bound_behind(&mut marks, behind, bus::record_limit(self.bus.max_payload()));
        let before = self.left_out.swap(left_out, Ordering::Relaxed);
        if left_out > 0 && before == 0 {
            tracing::error!(
                host = %self.host, left_out,
                "the wake marks of host {} cannot list every agent whose wakes lag behind: {left_out} do not fit \
                 the server's payload limit; their groups' marks stay at the lowest of theirs, so a restart may \
                 repeat wakes of that group until they catch up",
                self.host
            );
        } else if left_out == 0 && before > 0 {
            tracing::info!(host = %self.host, "the wake marks of host {} list every agent again", self.host);
        }
        marks
    }

    /// Writes the marks if they changed, and the counts if `STATS_PACE` has
    /// passed (`now`: whatever the pace). True if everything due landed, or
    /// if nothing is to be written any more (the marks were lost to another
    /// writer).
    pub(super) async fn flush(&self, now: bool) -> bool {
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
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(host = %self.host, "wake marks of host {} written again", self.host);
                    }
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
                    // Once per run of failures: they are retried every
                    // `RETRY_PAUSE` while NATS is away.
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(host = %self.host, "wake marks of host {} not written: {err}", self.host);
                    } else {
                        tracing::debug!("wake marks not written yet: {err}");
                    }
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
    pub(super) fn lose(&self) {
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
        for key in retired {
            if let Err(err) = self.bus.kv().delete(&key).await {
                tracing::debug!("old members record not deleted yet: {err}");
                self.retired.lock().expect("marks lock").push(key);
            }
        }
    }

    fn stats_pending(&self) -> bool {
        !self.dirty.lock().expect("marks lock").is_empty()
    }

    /// Flushes whenever a wake ends, until `shutdown`. The last flush is
    /// the caller's, after the wakers have stopped.
    pub(super) async fn run(&self, shutdown: CancellationToken) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_behind_that_do_not_fit_hold_their_group_back_and_the_record_fits() {
        let mut marks = HostMarks { members: 1, up_to: vec![100, 200], ..HostMarks::default() };
        let behind: Vec<(usize, String, u64)> =
            (0..40).map(|i| (i % 2, format!("agent-with-a-long-name-{i:02}"), 50 + i as u64)).collect();
        let limit = 600;
        let left_out = bound_behind(&mut marks, behind.clone(), limit);
        assert!(left_out > 0 && left_out < 40, "{left_out}");
        assert!(serde_json::to_vec(&marks).unwrap().len() <= limit);
        let groups: Vec<Vec<String>> =
            (0..2).map(|g| behind.iter().filter(|(i, _, _)| *i == g).map(|(_, a, _)| a.clone()).collect()).collect();
        for (group, agent, woken) in &behind {
            let mut sorted = groups.clone();
            sorted[*group].sort();
            let mark = marks.mark_of(&sorted, agent).unwrap();
            assert!(mark <= *woken, "{agent}: marked {mark}, woken only up to {woken}");
        }
        assert_eq!(marks.behind.len(), 40 - left_out);
    }
}
