//! `POST /api/ack`.

use axum::Json;
use axum::extract::State;

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::http::input::JsonBody;
use crate::mailbox::Ack;
use crate::names::AgentName;
use crate::wire::{AckBody, Acked};

pub(crate) async fn ack(
    State(state): State<AppState>,
    identity: Identity,
    JsonBody(body): JsonBody<AckBody>,
) -> Result<Json<Acked>, ApiError> {
    let (agent, ack) = <(AgentName, Ack)>::try_from(body)?;
    identity.may_act_as(&agent)?;
    let acked = state.mailbox()?.ack(&agent, ack).await?;
    Ok(Json(Acked { ok: true, acked: acked.acked, ignored: acked.ignored }))
}
