//! `GET /api/stream`: Server-Sent Events, replaying from `Last-Event-ID`
//! (or `?after=`) before going live.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt, stream};

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::http::input::Params;

/// Comment lines on an idle event stream keep proxies from closing it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(crate) async fn stream(
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
