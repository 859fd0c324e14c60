//! What each host's wakes came to, kept in the state bucket so that every
//! adapter, and every restart, sees every host's. The keys are per host, not
//! per agent, so that the writes a burst of wakes costs do not grow with the
//! number of agents woken (one broadcast wakes the whole fleet):
//!
//! - `wakes.<host>`: the wake marks of all the host's agents in one record,
//!   written with compare-and-set by the one adapter process holding the host.
//!   Per group of agents, an id up to which every member has been woken for
//!   its messages, and the few members whose mark is behind it (a call not
//!   yet answered, a gateway down, an agent another host serves).
//! - `members.<host>.<generation>`: the groups those marks speak for,
//!   written once each time the host's list of agents changes (created, never
//!   overwritten: a generation is only ever one list), in parts if one
//!   record would pass the server's payload limit (see `members`). A mark counts
//!   only for an agent that was a member when it was written: an agent added
//!   to a host has not been woken by it for anything.
//! - `stats.<host>.<group>`: per agent, the last call and counts, written
//!   every few seconds at most.
//!
//! Older versions kept one record per agent, `woken.<agent>`; it is read
//! once, for an agent no host record covers, so an upgrade neither loses
//! nor repeats a wake.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::members;
use crate::bus::{Bus, Unavailable};
use crate::names::AgentName;

/// Most agents in a group: one consumer follows a group, and the server's
/// cost of creating a consumer grows with the square of its filters
/// (measured: about 50 ms for 1,000 filters, 1.8 s for 5,000, and again
/// after every reconnect).
pub(super) const GROUP_SIZE: usize = 1000;

/// Bytes a consumer's filter takes besides its agent's name
/// (`"clawbus.msg.<agent>.*",`), at most.
const FILTER_OVERHEAD: usize = 20;

/// `names` (sorted) in groups of at most [`GROUP_SIZE`] whose consumer's
/// filters take at most `limit` bytes: a consumer create request past the
/// server's payload limit is refused, and would be retried for ever.
pub(super) fn grouped(names: Vec<String>, limit: usize) -> Groups {
    let mut groups: Groups = Vec::new();
    let mut size = 0;
    for name in names {
        let cost = name.len() + FILTER_OVERHEAD;
        match groups.last_mut() {
            Some(group) if group.len() < GROUP_SIZE && size + cost <= limit => {
                size += cost;
                group.push(name);
            }
            _ => {
                size = cost;
                groups.push(vec![name]);
            }
        }
    }
    groups
}

/// The wake marks of one host's agents (`wakes.<host>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct HostMarks {
    /// Generation of the `members` record whose groups `up_to` follows.
    pub members: u64,
    /// Per group: every member has been woken for its messages up to here,
    pub up_to: Vec<u64>,
    /// except these, woken up to the id given.
    #[serde(default)]
    pub behind: BTreeMap<String, u64>,
    // Compatibility: see docs/architecture.md#compatibility
    /// The adapter process that wrote them (`None`: an older version's):
    /// only it writes over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// The stream incarnation whose ids they are (see `bus::Incarnation`):
    /// marks of another are no marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// The groups of a host's agents, each sorted (`members.<host>.<generation>`).
pub(super) type Groups = Vec<Vec<String>>;

/// The group `agent` is a member of.
fn group_of(groups: &Groups, agent: &str) -> Option<usize> {
    groups.iter().position(|members| members.binary_search_by(|m| m.as_str().cmp(agent)).is_ok())
}

impl HostMarks {
    /// `agent`'s mark, if it was a member of `groups`.
    pub(super) fn mark_of(&self, groups: &Groups, agent: &str) -> Option<u64> {
        self.behind.get(agent).or(self.up_to.get(group_of(groups, agent)?)).copied()
    }
}

/// One agent's calls: the last and counts (in `stats.<host>.<group>`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct WakeStats {
    pub last: Option<LastWake>,
    /// Calls failed since the last success.
    pub failing: u32,
    /// Calls answered 200, and calls failed, in all.
    pub sent: u64,
    pub failed: u64,
    /// Messages covered by a wake they did not cause themselves.
    pub coalesced: u64,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct LastWake {
    /// When, as the message timestamps are written.
    pub at: String,
    /// `queued` or `coalesced` (answered 200), `retryable` or `rejected`.
    pub outcome: String,
    /// From the oldest message covered being stored to the answer (successes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// One agent's wakes as the API shows them.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WakeRecord {
    /// The wake mark: the newest message id covered by a call answered 200.
    pub up_to: u64,
    /// The host whose adapter wakes the agent.
    pub host: String,
    pub stats: WakeStats,
}

pub(super) fn marks_key(host: &str) -> String {
    format!("wakes.{host}")
}

pub(super) fn stats_key(host: &str, group: usize) -> String {
    format!("stats.{host}.{group}")
}

// Compatibility: see docs/architecture.md#compatibility
/// An older version's per-agent record: a plain mark, or the mark with stats.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Legacy {
    Mark(u64),
    Record {
        up_to: u64,
        #[serde(flatten)]
        stats: WakeStats,
    },
}

impl Legacy {
    pub(super) fn key(agent: &AgentName) -> String {
        format!("woken.{agent}")
    }

    pub(super) fn into_parts(self) -> (u64, WakeStats) {
        match self {
            Legacy::Mark(up_to) => (up_to, WakeStats::default()),
            Legacy::Record { up_to, stats } => (up_to, stats),
        }
    }
}

/// The marks `hosts` (`None`: every host) recorded for `agents`, the
/// highest where several did: each host's mark is one its own wakes earned,
/// so any of them is safe to resume from. Agents no record covers are left
/// out.
pub(super) async fn recorded_marks(
    bus: &Bus,
    hosts: Option<&[String]>,
    agents: &[AgentName],
) -> Result<HashMap<AgentName, u64>, Unavailable> {
    let per_host: Vec<(String, HostMarks)> = match hosts {
        Some(hosts) => {
            let mut marks = bus.kv_get_many::<HostMarks>(hosts.iter().map(|host| marks_key(host)).collect()).await?;
            hosts.iter().filter_map(|host| Some((host.clone(), marks.remove(&marks_key(host))?.value))).collect()
        }
        None => bus.kv_values::<HostMarks>("wakes.").await?.into_iter().map(|(host, m)| (host, m.value)).collect(),
    };
    let per_host = of_current(bus, per_host);
    let groups = members_of(bus, &per_host).await?;
    let mut found = HashMap::new();
    for (host, marks) in &per_host {
        let Some(groups) = groups.get(host) else { continue };
        for agent in agents {
            if let Some(mark) = marks.mark_of(groups, agent.as_str()) {
                let best = found.entry(agent.clone()).or_insert(mark);
                *best = (*best).max(mark);
            }
        }
    }
    Ok(found)
}

/// The hosts' marks that speak of the current stream.
fn of_current(bus: &Bus, marks: Vec<(String, HostMarks)>) -> Vec<(String, HostMarks)> {
    marks.into_iter().filter(|(_, marks)| bus.is_current(marks.stream.as_deref())).collect()
}

/// The highest message id any host's wake marks mention, whichever stream
/// they speak of.
pub(crate) async fn highest(bus: &Bus) -> Result<u64, Unavailable> {
    let marks = bus.kv_values::<HostMarks>("wakes.").await?;
    Ok(marks.values().flat_map(|m| m.value.up_to.iter().chain(m.value.behind.values())).copied().max().unwrap_or(0))
}

/// The groups each host's marks speak for, by host.
async fn members_of(bus: &Bus, marks: &[(String, HostMarks)]) -> Result<HashMap<String, Groups>, Unavailable> {
    let generations: Vec<(String, u64)> = marks.iter().map(|(host, marks)| (host.clone(), marks.members)).collect();
    members::of_hosts(bus, &generations).await
}

/// Every host's wake records, by agent and host (an agent two hosts list
/// has a record on each).
pub(crate) async fn fleet(bus: &Bus) -> Result<HashMap<(String, String), WakeRecord>, Unavailable> {
    let (marks, stats) =
        tokio::try_join!(bus.kv_values::<HostMarks>("wakes."), bus.kv_values::<BTreeMap<String, WakeStats>>("stats."))?;
    let marks = of_current(bus, marks.into_iter().map(|(host, marks)| (host, marks.value)).collect());
    let groups = members_of(bus, &marks).await?;
    let mut records = HashMap::new();
    for (host, marks) in &marks {
        let Some(groups) = groups.get(host) else { continue };
        for (members, up_to) in groups.iter().zip(&marks.up_to) {
            for agent in members {
                let up_to = marks.behind.get(agent).copied().unwrap_or(*up_to);
                let record = WakeRecord { up_to, host: host.clone(), stats: WakeStats::default() };
                records.insert((agent.clone(), host.clone()), record);
            }
        }
    }
    for (key, chunk) in stats {
        let Some((host, _group)) = key.rsplit_once('.') else { continue };
        for (agent, stats) in chunk.value {
            if let Some(record) = records.get_mut(&(agent, host.to_owned())) {
                record.stats = stats;
            }
        }
    }
    Ok(records)
}

/// `agent`'s wakes on `host`, if that host wakes it.
pub(crate) async fn of(bus: &Bus, host: &str, agent: &AgentName) -> Result<Option<WakeRecord>, Unavailable> {
    let Some(marks) = bus.kv_get::<HostMarks>(marks_key(host)).await? else { return Ok(None) };
    if !bus.is_current(marks.value.stream.as_deref()) {
        return Ok(None);
    }
    let generation = [(host.to_owned(), marks.value.members)];
    let Some(groups) = members::of_hosts(bus, &generation).await?.remove(host) else { return Ok(None) };
    let (Some(group), Some(up_to)) = (group_of(&groups, agent.as_str()), marks.value.mark_of(&groups, agent.as_str()))
    else {
        return Ok(None);
    };
    let chunk = bus.kv_get::<BTreeMap<String, WakeStats>>(stats_key(host, group)).await?;
    let stats = chunk.and_then(|mut chunk| chunk.value.remove(agent.as_str())).unwrap_or_default();
    Ok(Some(WakeRecord { up_to, host: host.to_owned(), stats }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_counts_only_for_members_and_behind_overrides_the_group() {
        let groups: Groups = vec![vec!["a".into(), "c".into()], vec!["d".into()]];
        let marks =
            HostMarks { members: 1, up_to: vec![10, 20], behind: [("c".to_owned(), 4)].into(), ..Default::default() };
        assert_eq!(marks.mark_of(&groups, "a"), Some(10));
        assert_eq!(marks.mark_of(&groups, "c"), Some(4));
        assert_eq!(marks.mark_of(&groups, "d"), Some(20));
        assert_eq!(marks.mark_of(&groups, "b"), None, "not a member: not woken here");
    }

    #[test]
    fn groups_hold_at_most_group_size_agents_and_filters_within_the_limit() {
        let names: Vec<String> = (0..2500).map(|i| format!("agent-{i:04}")).collect();
        let groups = grouped(names.clone(), usize::MAX);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [1000, 1000, 500]);
        let groups = grouped(names.clone(), 3000);
        assert!(groups.iter().all(|g| g.iter().map(|n| n.len() + FILTER_OVERHEAD).sum::<usize>() <= 3000));
        assert_eq!(groups.concat(), names);
    }

    #[test]
    fn an_older_version_record_reads_as_mark_and_stats() {
        let (up_to, stats) = serde_json::from_str::<Legacy>("42").unwrap().into_parts();
        assert_eq!((up_to, stats.sent), (42, 0));
        let text = r#"{"up_to": 7, "host": "a", "failing": 2, "sent": 3, "failed": 2, "coalesced": 1, "last": null}"#;
        let (up_to, stats) = serde_json::from_str::<Legacy>(text).unwrap().into_parts();
        assert_eq!((up_to, stats.failing, stats.sent), (7, 2, 3));
    }
}
