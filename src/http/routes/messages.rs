//! `GET /api/messages/{id}`: one message and its path: stored, woken,
//! acknowledged (for its recipient; for a broadcast, stored only).

use axum::Json;
use axum::extract::{Path, State};

use crate::fleet::MessagePath;
use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::names::AgentName;
use crate::wire::{MessagePage, PathSteps};

pub(crate) async fn message(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<MessagePage>, ApiError> {
    let id: u64 =
        id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
            ApiError::invalid_request(format!("a message id is a whole number from 1 to {}", u64::MAX))
        })?;
    let MessagePath { message, woken, acknowledged } = state.fleet()?.path(id).await?;
    let allowed = [&message.envelope.from, &message.envelope.to]
        .into_iter()
        .filter_map(|name| AgentName::parse(name).ok())
        .any(|agent| identity.may_act_as(&agent).is_ok());
    if !allowed {
        identity.may_see_fleet()?;
    }
    let stored = message.envelope.timestamp.clone();
    Ok(Json(MessagePage { message, path: PathSteps { stored, woken, acknowledged } }))
}
