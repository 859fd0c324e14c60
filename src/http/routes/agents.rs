//! `GET /api/agents` and `GET /api/stats`: the fleet as JetStream knows
//! it, the same through every adapter.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::wake::WakeRecord;
use crate::wire::{
    AgentEntry, Agents, HostRow, Latencies, NatsStats, Stats, StoppedThread, ThreadStats, WakeFailing, WakeStats,
};

pub(crate) async fn agents(State(state): State<AppState>, _: Identity) -> Result<Json<Agents>, ApiError> {
    let fleet = state.fleet()?.fleet().await?;
    let agents = fleet.agents.iter().map(AgentEntry::from).collect();
    Ok(Json(Agents { agents, age_ms: fleet.age().as_millis() as u64 }))
}

pub(crate) async fn stats(State(state): State<AppState>, _: Identity) -> Result<Response, ApiError> {
    let (mailbox, view) = (state.mailbox()?, state.fleet()?);
    // Where the stream lives cannot be learnt while JetStream does not
    // answer through this adapter's server; the rest of the page can.
    let placement = async { Ok::<_, ApiError>(mailbox.bus().placement().await.ok()) };
    let (fleet, placement, stopped) =
        tokio::try_join!(async { view.fleet().await.map_err(ApiError::from) }, placement, async {
            mailbox.stopped_threads().await.map_err(ApiError::from)
        })?;
    let stopped = stopped
        .into_iter()
        .map(|(thread, record)| StoppedThread {
            thread,
            hops: record.hops,
            between: record.between,
            stopped_at: record.stopped_at,
            releases: record.releases,
        })
        .collect();
    let refusals: BTreeMap<&str, u64> = state.metrics().refusal_counts().into_iter().collect();
    let rows = &fleet.agents;
    let mut hosts: BTreeMap<&str, HostRow> = BTreeMap::new();
    for row in rows {
        let status = &row.status;
        let host = hosts.entry(&status.host).or_insert(HostRow {
            host: &status.host,
            agents: 0,
            online: status.online,
            last_seen: status.last_seen.as_deref(),
        });
        host.agents += 1;
    }
    let records: Vec<(&str, &WakeRecord)> =
        rows.iter().filter_map(|row| Some((row.status.inbox.agent.as_str(), row.wakes.as_ref()?))).collect();
    let failing = records
        .iter()
        .filter(|(_, record)| record.stats.failing > 0)
        .map(|&(agent, record)| WakeFailing {
            agent,
            host: &record.host,
            failing: record.stats.failing,
            last: record.stats.last.as_ref(),
        })
        .collect();
    let stats = Stats {
        messages: fleet.messages,
        agents: rows.len(),
        online: rows.iter().filter(|row| row.status.online).count(),
        unread: rows.iter().map(|row| (row.status.inbox.agent.as_str(), row.unread)).collect(),
        hosts: hosts.into_values().collect(),
        wakes: WakeStats {
            sent: records.iter().map(|(_, r)| r.stats.sent).sum(),
            failed: records.iter().map(|(_, r)| r.stats.failed).sum(),
            coalesced: records.iter().map(|(_, r)| r.stats.coalesced).sum(),
            failing,
            latency_ms: latencies(&records),
        },
        threads: ThreadStats { stopped },
        refusals,
        age_ms: fleet.age().as_millis() as u64,
        host: state.host(),
        nats: NatsStats { connected: mailbox.bus().is_connected(), health: mailbox.bus().health(), stream: placement },
    };
    // The answer borrows from the listing, so it is written here.
    Ok(Json(stats).into_response())
}

/// The spread of the last wake's latency over the agents; none before any.
fn latencies(records: &[(&str, &WakeRecord)]) -> Option<Latencies> {
    let mut latencies: Vec<f64> =
        records.iter().filter_map(|(_, r)| r.stats.last.as_ref()?.latency_ms).filter(|ms| ms.is_finite()).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (!latencies.is_empty()).then(|| Latencies { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1.0) })
}
