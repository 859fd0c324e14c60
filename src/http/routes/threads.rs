//! `POST /api/threads/{id}/release` (operator): a stopped thread may go on
//! for another `max_hops` replies.

use axum::Json;
use axum::extract::{Path, State};

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::wire::Released;

pub(crate) async fn release(
    State(state): State<AppState>,
    identity: Identity,
    Path(id): Path<String>,
) -> Result<Json<Released>, ApiError> {
    identity.may_see_fleet().map_err(|_| ApiError::forbidden("only the operator token may release a thread"))?;
    let thread: u64 = id.parse().ok().filter(|id| *id > 0).ok_or_else(|| {
        ApiError::invalid_request(format!("a thread id is a message id, a whole number from 1 to {}", u64::MAX))
    })?;
    let record = state.mailbox()?.release_thread(thread).await?;
    Ok(Json(Released { ok: true, thread, releases: record.releases }))
}
