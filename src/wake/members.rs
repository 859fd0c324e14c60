//! The records that list a host's groups, `members.<host>.<generation>`.
//!
//! A list that fits the server's payload limit is one record, as older
//! versions wrote it. A longer one (some 15,000 agents with long names pass
//! NATS's default 1 MiB) is split into parts,
//! `members.<host>.<generation>.<part>`, each naming how many parts there
//! are: a generation whose parts are not all there (a start that ended
//! while writing them) is read as missing, like one never written.

use std::collections::{BTreeMap, HashMap};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use super::record::Groups;
use crate::bus::{Bus, Unavailable};

/// What one members key holds.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum Stored {
    Whole(Groups),
    Part(Part),
}

/// A part of a split generation: runs of members, each of the group given,
/// in order; a group may go on in the next part.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
struct Part {
    parts: usize,
    runs: Vec<(usize, Vec<String>)>,
}

/// Bytes a part takes besides its names (`{"parts":n,"runs":[...]}`), and
/// each run besides its names (`[group,[...]],`), at most.
const PART_OVERHEAD: usize = 40;
const RUN_OVERHEAD: usize = 30;

pub(super) fn key(host: &str, generation: u64) -> String {
    format!("{}{generation}", prefix(host))
}

/// The prefix of every generation of `host`'s members.
fn prefix(host: &str) -> String {
    format!("members.{host}.")
}

fn part_key(host: &str, generation: u64, part: usize) -> String {
    format!("{}.{part}", key(host, generation))
}

/// Every generation of `host`'s members stored: its keys, and its groups
/// (`None`: some of its parts are missing).
pub(super) struct Generation {
    pub keys: Vec<String>,
    pub groups: Option<Groups>,
}

/// What the keys of one generation hold: the keys, a whole list, parts.
type Found = (Vec<String>, Option<Groups>, HashMap<usize, Part>);

pub(super) async fn generations(bus: &Bus, host: &str) -> Result<BTreeMap<u64, Generation>, Unavailable> {
    let prefix = prefix(host);
    let mut by_generation: BTreeMap<u64, Found> = BTreeMap::new();
    for (rest, stored) in bus.kv_values::<Stored>(&prefix).await? {
        let (generation, part) = match rest.split_once('.') {
            Some((generation, part)) => (generation.parse::<u64>(), part.parse::<usize>().ok()),
            None => (rest.parse::<u64>(), None),
        };
        let Ok(generation) = generation else { continue };
        let entry = by_generation.entry(generation).or_default();
        entry.0.push(format!("{prefix}{rest}"));
        match (stored.value, part) {
            (Stored::Whole(groups), None) => entry.1 = Some(groups),
            (Stored::Part(value), Some(part)) => {
                entry.2.insert(part, value);
            }
            _ => {}
        }
    }
    Ok(by_generation
        .into_iter()
        .map(|(generation, (keys, whole, parts))| {
            let groups = whole.or_else(|| assemble(parts));
            (generation, Generation { keys, groups })
        })
        .collect())
}

/// The groups of generation `generation` of each host's members, by host;
/// hosts whose generation is missing are left out.
pub(super) async fn of_hosts(bus: &Bus, hosts: &[(String, u64)]) -> Result<HashMap<String, Groups>, Unavailable> {
    let keys: Vec<String> = hosts.iter().map(|(host, generation)| key(host, *generation)).collect();
    let mut whole = bus.kv_get_many::<Groups>(keys).await?;
    let mut found = HashMap::new();
    for (host, generation) in hosts {
        let groups = match whole.remove(&key(host, *generation)) {
            Some(groups) => Some(groups.value),
            None => {
                let parts = bus.kv_values::<Part>(&format!("{}.", key(host, *generation))).await?;
                assemble(
                    parts.into_iter().filter_map(|(part, value)| Some((part.parse().ok()?, value.value))).collect(),
                )
            }
        };
        if let Some(groups) = groups {
            found.insert(host.clone(), groups);
        }
    }
    Ok(found)
}

/// The groups split into `parts`, if every part is there.
fn assemble(mut parts: HashMap<usize, Part>) -> Option<Groups> {
    let count = parts.values().next()?.parts;
    let mut groups: Groups = Vec::new();
    for part in 0..count {
        for (group, names) in parts.remove(&part)?.runs {
            if groups.len() <= group {
                groups.resize(group + 1, Vec::new());
            }
            groups[group].extend(names);
        }
    }
    Some(groups)
}

/// `groups` in parts of at most `limit` bytes each (a part holds at least
/// one name, whatever its length).
fn split(groups: &Groups, limit: usize) -> Vec<Part> {
    let mut parts: Vec<Part> = Vec::new();
    let mut size = usize::MAX;
    for (group, names) in groups.iter().enumerate() {
        let mut run_open = false;
        for name in names {
            let cost = name.len() + 3;
            if size.saturating_add(cost + RUN_OVERHEAD) > limit {
                parts.push(Part { parts: 0, runs: Vec::new() });
                size = PART_OVERHEAD;
                run_open = false;
            }
            let part = parts.last_mut().expect("a part is open");
            if !run_open {
                part.runs.push((group, Vec::new()));
                size += RUN_OVERHEAD;
                run_open = true;
            }
            part.runs.last_mut().expect("a run is open").1.push(name.clone());
            size += cost;
        }
    }
    let count = parts.len();
    for part in &mut parts {
        part.parts = count;
    }
    parts
}

/// Creates generation `generation` of `host`'s members, in parts if one
/// record of it would pass the server's payload limit: a generation is
/// written once, so an existing one means another adapter writes this
/// host's records.
pub(super) async fn save(bus: &Bus, host: &str, generation: u64, groups: &Groups) -> Result<(), Unavailable> {
    let limit = crate::bus::record_limit(bus.max_payload());
    let whole = serde_json::to_vec(groups).expect("groups serialize");
    if whole.len() <= limit {
        return create(bus, host, generation, key(host, generation), whole).await;
    }
    let parts = split(groups, limit);
    tracing::info!(%host, generation, parts = parts.len(), "members of host {host} written in {} parts", parts.len());
    for (i, part) in parts.iter().enumerate() {
        let value = serde_json::to_vec(part).expect("members serialize");
        create(bus, host, generation, part_key(host, generation, i), value).await?;
    }
    Ok(())
}

async fn create(bus: &Bus, host: &str, generation: u64, key: String, value: Vec<u8>) -> Result<(), Unavailable> {
    match bus.kv().create(key, value.into()).await {
        Ok(_) => Ok(()),
        Err(err) => {
            if err.kind() == kv::CreateErrorKind::AlreadyExists {
                tracing::error!(
                    %host, generation,
                    "members record {generation} of host {host} was created by another adapter meanwhile: \
                     is a second adapter running as this host?"
                );
            } else {
                tracing::error!(%host, generation, "cannot save members record {generation} of host {host}: {err}");
            }
            Err(Unavailable::caused("cannot save members", err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> impl proptest::strategy::Strategy<Value = Groups> {
        proptest::collection::vec(proptest::collection::vec("[a-z]{1,64}", 0..40), 1..5)
    }

    proptest::proptest! {
        #[test]
        fn split_members_read_back_whole_and_each_part_fits(groups in groups(), limit in 200usize..2000) {
            let parts = split(&groups, limit);
            for part in &parts {
                let size = serde_json::to_vec(part).unwrap().len();
                proptest::prop_assert!(size <= limit, "{size} > {limit}");
            }
            let back = assemble(parts.into_iter().enumerate().collect()).unwrap_or_default();
            // Empty groups at the end leave no trace in the parts.
            let mut expected = groups.clone();
            expected.truncate(back.len());
            proptest::prop_assert_eq!(&back, &expected);
            proptest::prop_assert!(groups[back.len()..].iter().all(Vec::is_empty));
        }
    }

    #[test]
    fn a_generation_missing_a_part_reads_as_missing() {
        let groups: Groups = vec![(0..50).map(|i| format!("agent-{i}")).collect()];
        let mut parts: HashMap<usize, Part> = split(&groups, 200).into_iter().enumerate().collect();
        assert!(parts.len() > 2);
        parts.remove(&1);
        assert_eq!(assemble(parts), None);
    }
}
