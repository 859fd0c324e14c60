//! `GET /api/inbox`.

use axum::Json;
use axum::extract::State;

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::http::input::Params;
use crate::wire::Inbox;

pub(crate) async fn inbox(
    State(state): State<AppState>,
    identity: Identity,
    params: Params,
) -> Result<Json<Inbox>, ApiError> {
    let agent = params.agent()?;
    identity.may_act_as(&agent)?;
    let page = state.mailbox()?.inbox(&agent, &params.inbox_query()?).await?;
    Ok(Json(Inbox { agent, messages: page.messages, unread: page.unread }))
}
