//! `GET /api/agents`, `GET /api/stats` and `GET /api/messages/{id}`: the
//! fleet as JetStream knows it, the same through every adapter.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Identity;
use super::error::ApiError;
use crate::fleet::MessagePath;
use crate::wake::WakeRecord;

pub async fn agents(State(state): State<AppState>, _: Identity) -> Result<Json<Value>, ApiError> {
    let fleet = state.fleet()?.fleet().await?;
    let agents: Vec<Value> = fleet
        .agents
        .iter()
        .map(|row| {
            json!({
                "name": row.status.inbox.agent,
                "host": row.status.host,
                "online": row.status.online,
                "last_seen": row.status.last_seen,
                "unread": row.unread,
                "wake_mode": row.status.wake_mode,
                "wakes": row.wakes.as_ref().map(wakes),
            })
        })
        .collect();
    Ok(Json(json!({"agents": agents, "age_ms": fleet.age().as_millis() as u64})))
}

/// An agent's wakes, as the API shows them.
fn wakes(record: &WakeRecord) -> Value {
    json!({
        "host": record.host,
        "woken_up_to": record.up_to,
        "last": record.stats.last,
        "failing": record.stats.failing,
        "sent": record.stats.sent,
        "failed": record.stats.failed,
    })
}

pub async fn stats(State(state): State<AppState>, _: Identity) -> Result<Json<Value>, ApiError> {
    let (mailbox, view) = (state.mailbox()?, state.fleet()?);
    // Where the stream lives cannot be learnt while JetStream does not
    // answer through this adapter's server; the rest of the page can.
    let placement = async { Ok::<_, ApiError>(mailbox.bus().placement().await.ok()) };
    let (fleet, placement, stopped) =
        tokio::try_join!(async { view.fleet().await.map_err(ApiError::from) }, placement, async {
            mailbox.stopped_threads().await.map_err(ApiError::from)
        })?;
    let stopped: Vec<Value> = stopped
        .into_iter()
        .map(|(thread, record)| json!({"thread": thread, "hops": record.hops, "between": record.between, "stopped_at": record.stopped_at, "releases": record.releases}))
        .collect();
    let refusals: BTreeMap<&str, u64> = state.metrics().refusal_counts().into_iter().collect();
    let rows = &fleet.agents;
    let online = rows.iter().filter(|row| row.status.online).count();
    let unread: BTreeMap<&str, u64> = rows.iter().map(|row| (row.status.inbox.agent.as_str(), row.unread)).collect();
    let mut hosts: BTreeMap<&str, (usize, bool, Option<&str>)> = BTreeMap::new();
    for row in rows {
        let host = hosts.entry(&row.status.host).or_insert((0, row.status.online, row.status.last_seen.as_deref()));
        host.0 += 1;
    }
    let hosts: Vec<Value> = hosts
        .into_iter()
        .map(|(host, (agents, online, last_seen))| json!({"host": host, "agents": agents, "online": online, "last_seen": last_seen}))
        .collect();
    let records: Vec<(&str, &WakeRecord)> =
        rows.iter().filter_map(|row| Some((row.status.inbox.agent.as_str(), row.wakes.as_ref()?))).collect();
    let failing: Vec<Value> = records
        .iter()
        .filter(|(_, record)| record.stats.failing > 0)
        .map(|(agent, record)| json!({"agent": agent, "host": record.host, "failing": record.stats.failing, "last": record.stats.last}))
        .collect();
    let mut latencies: Vec<f64> =
        records.iter().filter_map(|(_, r)| r.stats.last.as_ref()?.latency_ms).filter(|ms| ms.is_finite()).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(Json(json!({
        "messages": fleet.messages,
        "agents": rows.len(),
        "online": online,
        "unread": unread,
        "hosts": hosts,
        "wakes": {
            "sent": records.iter().map(|(_, r)| r.stats.sent).sum::<u64>(),
            "failed": records.iter().map(|(_, r)| r.stats.failed).sum::<u64>(),
            "coalesced": records.iter().map(|(_, r)| r.stats.coalesced).sum::<u64>(),
            "failing": failing,
            "latency_ms": (!latencies.is_empty()).then(|| json!({"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0)})),
        },
        "threads": {"stopped": stopped},
        "refusals": refusals,
        "age_ms": fleet.age().as_millis() as u64,
        "host": state.host(),
        "nats": {"connected": mailbox.bus().is_connected(), "health": mailbox.bus().health(), "stream": placement},
    })))
}

/// One message and its path: stored, woken, acknowledged (for its
/// recipient; for a broadcast, stored only).
pub async fn message(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: u64 =
        id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::invalid_request(format!("a message id is a whole number from 1 to {}", u64::MAX))
        })?;
    let MessagePath { message, woken, acknowledged } = state.fleet()?.path(id).await?;
    let party = |name: &str| crate::names::AgentName::parse(name).ok();
    let allowed = [&message.envelope.from, &message.envelope.to]
        .into_iter()
        .filter_map(|name| party(name))
        .any(|agent| identity.may_act_as(&agent).is_ok());
    if !allowed {
        identity.may_see_fleet()?;
    }
    Ok(Json(json!({
        "message": message,
        "path": {"stored": message.envelope.timestamp, "woken": woken, "acknowledged": acknowledged},
    })))
}
