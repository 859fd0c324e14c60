//! Per-agent read state, kept small and shared.
//!
//! A read mark is a floor (every inbox message up to it is read) plus the
//! ids above the floor acknowledged out of order. Acknowledging the oldest
//! unread message moves the floor up past every contiguous acknowledged id,
//! so in the usual pattern (read the page, acknowledge it) the set stays
//! empty and the mark is two numbers. The mark lives in the KV bucket under
//! `read.<agent>` and is updated with compare-and-set, so adapters on
//! different hosts can acknowledge for the same agent concurrently.

use std::collections::BTreeSet;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::bus::{Bus, KvValue, LeaderEntry, Unavailable};
use crate::names::AgentName;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadMark {
    pub floor: u64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub acked: BTreeSet<u64>,
}

impl ReadMark {
    pub fn is_read(&self, seq: u64) -> bool {
        seq <= self.floor || self.acked.contains(&seq)
    }

    /// The mark after acknowledging everything up to `seq`.
    pub fn raised_to(&self, seq: u64) -> ReadMark {
        let floor = self.floor.max(seq);
        ReadMark { floor, acked: self.acked.iter().copied().filter(|&id| id > floor).collect() }
    }

    /// The mark cut back to messages that exist, when the newest id is
    /// `last`: a mark ahead of the stream would make mail stored later
    /// "born read". `None` when nothing needed cutting.
    pub fn within(&self, last: u64) -> Option<ReadMark> {
        let ahead = self.floor > last || self.acked.last().is_some_and(|&id| id > last);
        ahead.then(|| ReadMark {
            floor: self.floor.min(last),
            acked: self.acked.iter().copied().filter(|&id| id <= last).collect(),
        })
    }

    /// The highest id the mark mentions.
    pub fn highest(&self) -> u64 {
        self.acked.last().copied().unwrap_or_default().max(self.floor)
    }
}

/// A mark with the KV revision it was read at (`None`: never written).
pub struct Versioned {
    pub mark: ReadMark,
    revision: Option<u64>,
    /// When the server stored this version.
    pub written: Option<time::OffsetDateTime>,
}

fn key(agent: &AgentName) -> String {
    format!("read.{agent}")
}

/// `agent`'s mark, from the bucket's leader (see [`Bus::kv_leader_entry`]):
/// a mark older than one already acknowledged against would show read
/// messages unread again.
pub async fn load(bus: &Bus, agent: &AgentName) -> Result<Versioned, Unavailable> {
    let entry = bus.kv_leader_entry(&key(agent)).await?;
    Ok(match entry {
        Some(LeaderEntry { value: Some(value), revision, stored }) => Versioned {
            // A mark that does not parse is as if never written (all unread):
            // better shown twice than hidden.
            mark: serde_json::from_slice(&value).unwrap_or_else(|err| {
                tracing::error!(%agent, "read mark does not parse, taken as empty: {err}");
                ReadMark::default()
            }),
            revision: Some(revision),
            written: Some(stored),
        },
        Some(LeaderEntry { value: None, revision, .. }) => {
            Versioned { mark: ReadMark::default(), revision: Some(revision), written: None }
        }
        None => Versioned { mark: ReadMark::default(), revision: None, written: None },
    })
}

/// Every agent's mark, read in one pass.
pub async fn load_all(bus: &Bus) -> Result<std::collections::HashMap<String, KvValue<ReadMark>>, Unavailable> {
    bus.kv_values("read.").await
}

/// Writes `mark` if nobody changed it since `previous` was read. False on
/// a conflict: the caller reloads and tries again.
pub async fn save(bus: &Bus, agent: &AgentName, previous: &Versioned, mark: &ReadMark) -> Result<bool, Unavailable> {
    bus.ensure_connected()?;
    let value: bytes::Bytes = serde_json::to_vec(mark).expect("serializes").into();
    let written = match previous.revision {
        Some(revision) => match bus.kv().update(key(agent), value.clone(), revision).await {
            Ok(revision) => revision,
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(false),
            Err(err) => return Err(Unavailable::caused("cannot write a read mark", err)),
        },
        None => match bus.kv().create(key(agent), value.clone()).await {
            Ok(revision) => revision,
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
            Err(err) => return Err(Unavailable::caused("cannot write a read mark", err)),
        },
    };
    bus.kv_wrote(&key(agent), value, written, bus.now());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_the_floor_drops_covered_acks() {
        let mark = ReadMark { floor: 3, acked: [5, 9].into() };
        assert!(mark.is_read(2) && mark.is_read(5) && !mark.is_read(4));
        assert_eq!(mark.raised_to(6), ReadMark { floor: 6, acked: [9].into() });
        assert_eq!(mark.raised_to(1), mark);
    }

    #[test]
    fn a_mark_ahead_of_the_stream_is_cut_back() {
        let mark = ReadMark { floor: 1000, acked: [1002].into() };
        assert_eq!(mark.within(5), Some(ReadMark { floor: 5, acked: BTreeSet::new() }));
        let behind = ReadMark { floor: 3, acked: [5, 9].into() };
        assert_eq!(behind.within(9), None);
        assert_eq!(behind.within(7), Some(ReadMark { floor: 3, acked: [5].into() }));
        assert_eq!(behind.highest(), 9);
    }

    #[test]
    fn compact_form_on_the_wire() {
        assert_eq!(serde_json::to_string(&ReadMark { floor: 7, acked: BTreeSet::new() }).unwrap(), r#"{"floor":7}"#);
    }
}
