//! `GET /healthz`, `GET /readyz` and `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::wire::{Health, Ready};

pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { ok: true })
}

/// Ready: connected to a server through which JetStream answers (else the
/// adapter is moving to another), and the stream and the state bucket exist
/// (the adapter re-creates them if they vanish; until then, sends would fail).
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let bus = state.mailbox()?.bus().clone();
    bus.ensure_healthy()?;
    match bus.missing().await? {
        None => Ok(Json(Ready { ok: true, server: bus.health().server })),
        Some(missing) => Err(ApiError::unavailable(format!("the {missing} is missing; the adapter re-creates it"))),
    }
}

pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.metrics();
    let started = state.started().ok();
    metrics.nats_connected.set(started.is_some_and(|(m, _)| m.bus().is_connected()).into());
    if let Some((mailbox, view)) = started {
        let health = mailbox.bus().health();
        metrics.nats_health(health.ready && mailbox.bus().is_connected(), health.server.as_deref(), health.moves);
        let reconnects = mailbox.bus().reconnects();
        metrics.nats_reconnects.inc_by(reconnects.saturating_sub(metrics.nats_reconnects.get()));
        // The unread backlog per agent, as of the last listing (kept fresh
        // by scrapes themselves: a listing is cached, and made in the background).
        if let Ok(fleet) = view.fleet().await {
            for row in &fleet.agents {
                metrics.unread(row.status.inbox.agent.as_str(), row.unread);
            }
        }
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.encode()).into_response()
}
