//! The endpoints of API.md.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Identity;
use super::error::ApiError;
use super::input::{self, JsonBody, Params};
use crate::mailbox::MailError;
use crate::metrics::SendOutcome;

/// Comment lines on an idle event stream keep proxies from closing it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Every outcome is counted, so the extractors' rejections (401, 413, 415,
/// malformed JSON) are taken as values rather than left to axum.
pub async fn send(
    State(state): State<AppState>,
    identity: Result<Identity, ApiError>,
    headers: HeaderMap,
    body: Result<JsonBody, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let result = async {
        let (identity, JsonBody(body)) = (identity?, body?);
        let key = headers.get("idempotency-key").map(|v| v.as_bytes());
        let message = input::new_message(&body, key, state.max_message_bytes())?;
        identity.may_act_as(&message.from)?;
        let from = message.from.clone();
        let sent = state.mailbox()?.send(message).await;
        if let Err(MailError::Refused(refusal)) = &sent {
            state.metrics().refused(refusal.reason(), from.as_str());
        }
        Ok::<_, ApiError>(sent?)
    }
    .await;
    let outcome = match &result {
        Ok(sent) if sent.duplicate => SendOutcome::Duplicate,
        Ok(_) => SendOutcome::Stored,
        Err(err) if err.status() == StatusCode::SERVICE_UNAVAILABLE => SendOutcome::Unavailable,
        Err(err) if err.status() == StatusCode::INSUFFICIENT_STORAGE => SendOutcome::StoreFull,
        Err(_) => SendOutcome::Rejected,
    };
    state.metrics().send(outcome, started.elapsed());
    let sent = result?;
    let mut answer = json!({"ok": true, "id": sent.id, "timestamp": sent.timestamp});
    if sent.duplicate {
        answer["duplicate"] = Value::Bool(true);
    }
    Ok(Json(answer))
}

pub async fn inbox(State(state): State<AppState>, identity: Identity, params: Params) -> Result<Json<Value>, ApiError> {
    let agent = params.agent()?;
    identity.may_act_as(&agent)?;
    let page = state.mailbox()?.inbox(&agent, &params.inbox_query()?).await?;
    Ok(Json(json!({"agent": agent, "messages": page.messages, "unread": page.unread})))
}

pub async fn ack(
    State(state): State<AppState>,
    identity: Identity,
    JsonBody(body): JsonBody,
) -> Result<Json<Value>, ApiError> {
    let (agent, ack) = input::ack(&body)?;
    identity.may_act_as(&agent)?;
    let acked = state.mailbox()?.ack(&agent, ack).await?;
    Ok(Json(json!({"ok": true, "acked": acked.acked, "ignored": acked.ignored})))
}

pub async fn history(
    State(state): State<AppState>,
    identity: Identity,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let agent = params.agent()?;
    identity.may_act_as(&agent)?;
    let query = params.history_query()?;
    let messages = state.mailbox()?.history(&agent, &query).await?;
    Ok(Json(json!({"agent": agent, "with": query.with, "messages": messages})))
}

/// `GET /api/stream`: Server-Sent Events, replaying from `Last-Event-ID`
/// (or `?after=`) before going live.
pub async fn stream(
    State(state): State<AppState>,
    identity: Identity,
    params: Params,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (agent, after) = params.stream_query()?;
    match &agent {
        Some(agent) => identity.may_act_as(agent)?,
        None => identity.may_see_fleet()?,
    }
    let after = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse().ok()).ok_or_else(|| {
            ApiError::invalid_request(format!("Last-Event-ID must be a message id, a whole number up to {}", u64::MAX))
        })?),
        None => after,
    };
    let slot = state.streams().open(agent.as_ref())?;
    let live = state.mailbox()?.live(agent.as_ref(), after).await?;
    // The slot lives as long as the stream: the client's going frees it.
    let events = stream::unfold((live, slot), |(mut live, slot)| async move {
        let message = live.next().await?;
        let data = serde_json::to_string(&message).expect("serializes");
        let event = Event::default().event("message").id(message.id.to_string()).data(data);
        Some((Ok(event), (live, slot)))
    });
    let shutdown = state.shutdown().clone();
    Ok(Sse::new(events.take_until(async move { shutdown.cancelled().await }))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// `POST /api/threads/{id}/release` (operator): a stopped thread may go on
/// for another `max_hops` replies.
pub async fn release_thread(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    identity.may_see_fleet().map_err(|_| ApiError::forbidden("only the operator token may release a thread"))?;
    let thread: u64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::invalid_request(format!("a thread id is a message id, a whole number from 1 to {}", u64::MAX))
    })?;
    let record = state.mailbox()?.release_thread(thread).await?;
    Ok(Json(json!({"ok": true, "thread": thread, "releases": record.releases})))
}

pub async fn healthz() -> Json<Value> {
    Json(json!({"ok": true}))
}

/// Ready: connected to a server through which JetStream answers (else the
/// adapter is moving to another), and the stream and the state bucket exist
/// (the adapter re-creates them if they vanish; until then, sends would fail).
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let bus = state.mailbox()?.bus().clone();
    bus.ensure_healthy()?;
    match bus.missing().await? {
        None => Ok(Json(json!({"ok": true, "server": bus.health().server}))),
        Some(missing) => Err(ApiError::unavailable(format!("the {missing} is missing; the adapter re-creates it"))),
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
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

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
