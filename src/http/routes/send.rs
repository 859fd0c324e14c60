//! `POST /api/send`.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use crate::http::AppState;
use crate::http::auth::Identity;
use crate::http::error::ApiError;
use crate::http::input::JsonBody;
use crate::mailbox::{MailError, NewMessage};
use crate::metrics::SendOutcome;
use crate::wire::{SendBody, Sent};

/// Longest `Idempotency-Key`.
const MAX_KEY: usize = 128;

/// Every outcome is counted, so the extractors' rejections (401, 413, 415,
/// malformed JSON, a body that is no send) are taken as values rather than
/// left to axum.
pub async fn send(
    State(state): State<AppState>,
    identity: Result<Identity, ApiError>,
    headers: HeaderMap,
    body: Result<JsonBody<SendBody>, ApiError>,
) -> Result<Json<Sent>, ApiError> {
    let started = Instant::now();
    let result = async {
        let (identity, JsonBody(body)) = (identity?, body?);
        let mut message = NewMessage::try_from(body)?;
        let max_bytes = state.max_message_bytes();
        if message.content.len() > max_bytes {
            let length = message.content.len();
            return Err(ApiError::too_large(format!("content is {length} bytes; the limit is {max_bytes}")));
        }
        message.idempotency_key = idempotency_key(&headers)?;
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
    Ok(Json(Sent { ok: true, id: sent.id, timestamp: sent.timestamp, duplicate: sent.duplicate }))
}

/// The `Idempotency-Key` header: 1 to [`MAX_KEY`] printable ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else { return Ok(None) };
    match key.to_str() {
        Ok(key) if key.bytes().all(|b| (0x20..0x7f).contains(&b)) && !key.is_empty() && key.len() <= MAX_KEY => {
            Ok(Some(key.to_owned()))
        }
        _ => {
            Err(ApiError::invalid_request(format!("Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters")))
        }
    }
}
