//! `GET /api/history`.

use axum::Json;
use axum::extract::State;

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::http::input::Params;
use crate::wire::History;

pub(crate) async fn history(
    State(state): State<AppState>,
    identity: Identity,
    params: Params,
) -> Result<Json<History>, ApiError> {
    let agent = params.agent()?;
    identity.may_act_as(&agent)?;
    let query = params.history_query()?;
    let messages = state.mailbox()?.history(&agent, &query).await?;
    Ok(Json(History { agent, with: query.with, messages }))
}
