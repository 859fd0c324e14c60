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

use crate::bus::{Bus, Unavailable};
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
}

/// A mark with the KV revision it was read at (`None`: never written).
pub struct Versioned {
    pub mark: ReadMark,
    revision: Option<u64>,
}

fn key(agent: &AgentName) -> String {
    format!("read.{agent}")
}

pub async fn load(bus: &Bus, agent: &AgentName) -> Result<Versioned, Unavailable> {
    bus.ensure_connected()?;
    let entry = bus.kv().entry(key(agent)).await.map_err(Unavailable::from)?;
    Ok(match entry {
        Some(entry) if entry.operation == kv::Operation::Put => Versioned {
            mark: serde_json::from_slice(&entry.value).map_err(Unavailable::from)?,
            revision: Some(entry.revision),
        },
        Some(entry) => Versioned { mark: ReadMark::default(), revision: Some(entry.revision) },
        None => Versioned { mark: ReadMark::default(), revision: None },
    })
}

/// Every agent's mark, read in one pass.
pub async fn load_all(bus: &Bus) -> Result<std::collections::HashMap<String, ReadMark>, Unavailable> {
    Ok(bus.kv_values("read.").await?.into_iter().map(|(agent, mark)| (agent, mark.value)).collect())
}

/// Writes `mark` if nobody changed it since `previous` was read. False on
/// a conflict: the caller reloads and tries again.
pub async fn save(bus: &Bus, agent: &AgentName, previous: &Versioned, mark: &ReadMark) -> Result<bool, Unavailable> {
    bus.ensure_connected()?;
    let value = serde_json::to_vec(mark).expect("serializes").into();
    let result = match previous.revision {
        Some(revision) => bus
            .kv()
            .update(key(agent), value, revision)
            .await
            .map(drop)
            .map_err(|e| (e.kind() == kv::UpdateErrorKind::WrongLastRevision, e.to_string())),
        None => bus
            .kv()
            .create(key(agent), value)
            .await
            .map(drop)
            .map_err(|e| (e.kind() == kv::CreateErrorKind::AlreadyExists, e.to_string())),
    };
    match result {
        Ok(()) => Ok(true),
        Err((true, _)) => Ok(false),
        Err((false, why)) => Err(Unavailable(why)),
    }
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
    fn compact_form_on_the_wire() {
        assert_eq!(serde_json::to_string(&ReadMark { floor: 7, acked: BTreeSet::new() }).unwrap(), r#"{"floor":7}"#);
    }
}
