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
pub(crate) async fn send(
    State(state): State<AppState>,
    identity: Result<Identity, ApiError>,
    headers: HeaderMap,
    body: Result<JsonBody<SendBody>, ApiError>,
) -> Result<Json<Sent>, ApiError> {
    let started = Instant::now();
    let result = async {
        let (identity, JsonBody(body)) = (identity?, body?);
        let key = headers.get("idempotency-key").map(|v| v.as_bytes());
        let message = new_message(body, key, state.max_message_bytes())?;
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

/// The message `body` and the `Idempotency-Key` header `key` ask for, with
/// content of at most `max_bytes`.
fn new_message(body: SendBody, key: Option<&[u8]>, max_bytes: usize) -> Result<NewMessage, ApiError> {
    let mut message = NewMessage::try_from(body)?;
    if message.content.len() > max_bytes {
        let length = message.content.len();
        return Err(ApiError::too_large(format!("content is {length} bytes; the limit is {max_bytes}")));
    }
    message.idempotency_key = key.map(idempotency_key).transpose()?;
    Ok(message)
}

/// An `Idempotency-Key`: 1 to [`MAX_KEY`] printable ASCII characters.
fn idempotency_key(key: &[u8]) -> Result<String, ApiError> {
    let printable = key.iter().all(|b| (0x20..0x7f).contains(b));
    match std::str::from_utf8(key) {
        Ok(key) if printable && !key.is_empty() && key.len() <= MAX_KEY => Ok(key.to_owned()),
        _ => {
            Err(ApiError::invalid_request(format!("Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Priority;
    use crate::wire;
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn send(value: Value) -> Result<NewMessage, ApiError> {
        new_message(wire::decode(body(value))?, None, 10)
    }

    #[test]
    fn send_aliases_and_defaults() {
        let message = send(json!({"from": "a", "text": "hi"})).unwrap();
        assert_eq!((message.to, message.content.as_str(), message.priority), (None, "hi", Priority::Normal));
        let message = send(json!({"from": "a", "to": "*", "content": "c", "body": "b"})).unwrap();
        assert_eq!(message.content, "c");
        let message =
            send(json!({"from": "a", "to": "b", "message": "m", "reply_to": 4, "priority": "urgent"})).unwrap();
        assert_eq!((message.to.unwrap().as_str(), message.reply_to), ("b", Some(4)));
        // The first alias given a value wins, even after a null one.
        let message = send(json!({"from": "a", "content": null, "text": "t", "body": "b"})).unwrap();
        assert_eq!(message.content, "t");
    }

    #[test]
    fn send_rejections_carry_the_documented_code() {
        let code = |value| send(value).unwrap_err().code();
        assert_eq!(code(json!({"content": "x"})), "invalid_request");
        assert_eq!(code(json!({"from": 5, "content": "x"})), "invalid_request");
        assert_eq!(code(json!({"from": "a.b", "content": "x"})), "invalid_agent");
        assert_eq!(code(json!({"from": "a", "to": "b c", "content": "x"})), "invalid_agent");
        assert_eq!(code(json!({"from": "a", "to": 3, "content": "x"})), "invalid_request");
        assert_eq!(code(json!({"from": "a", "content": ""})), "invalid_request");
        assert_eq!(code(json!({"from": "a", "content": ["x"]})), "invalid_request");
        assert_eq!(code(json!({"from": "a", "content": "x", "priority": "HIGH"})), "invalid_request");
        assert_eq!(code(json!({"from": "a", "content": "x", "reply_to": -1})), "invalid_request");
        assert_eq!(code(json!({"from": "a", "content": "x".repeat(11)})), "too_large");
        let long_key = "k".repeat(129);
        let valid = wire::decode(body(json!({"from": "a", "content": "x"}))).unwrap();
        assert!(new_message(valid, Some(long_key.as_bytes()), 10).is_err());
    }

    #[test]
    fn rejections_keep_their_texts() {
        let text = |value| send(value).unwrap_err().message().to_owned();
        assert_eq!(text(json!({"content": "x"})), "from is required");
        assert_eq!(text(json!({"from": 5, "content": "x"})), "from must be a string");
        assert_eq!(text(json!({"from": "a"})), "content is required");
        assert_eq!(text(json!({"from": "a", "text": " "})), "text is empty");
        assert_eq!(text(json!({"from": "a", "body": 1})), "body must be a string");
        assert_eq!(text(json!({"from": "a", "to": 3, "content": "x"})), "to must be an agent name, \"*\" or null");
        assert_eq!(
            text(json!({"from": "a", "content": "x", "priority": 1})),
            "priority must be normal, high or urgent"
        );
        assert_eq!(
            text(json!({"from": "a", "content": "x", "reply_to": 0})),
            "reply_to must be a message id (a positive whole number)"
        );
        assert_eq!(text(json!({"from": "a", "content": "x".repeat(11)})), "content is 11 bytes; the limit is 10");
        assert_eq!(
            text(json!({"from": "a", "content": "x", "priority": "high", "cc": "b"})),
            "unknown field \"cc\"; accepted: from, to, content, message, text, body, priority, reply_to"
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let typo = send(json!({"from": "alice", "too": "bob", "content": "hi"})).unwrap_err();
        assert_eq!(typo.code(), "invalid_request");
        assert!(typo.message().contains("\"too\"") && typo.message().contains("reply_to"), "{}", typo.message());
        assert!(send(json!({"from": "a", "to": "b", "content": "x", "priorty": "urgent"})).is_err());
    }

    proptest! {
        /// Any JSON object gives a send or a 4xx with a message, never a
        /// panic; and a send only ever comes from a body with known fields.
        #[test]
        fn any_body_is_answered(fields in proptest::collection::vec((prop_oneof![
            Just("from".to_string()), Just("to".to_string()), Just("content".to_string()),
            Just("text".to_string()), Just("priority".to_string()), Just("reply_to".to_string()), "[a-z_]{1,8}"
        ], wire::tests::json_value()), 0..6)) {
            let body: Map<String, Value> = fields.into_iter().collect();
            const SEND: &[&str] = &["from", "to", "content", "message", "text", "body", "priority", "reply_to"];
            let known = body.keys().all(|k| SEND.contains(&k.as_str()));
            match wire::decode::<SendBody>(body).map_err(ApiError::from).and_then(|b| new_message(b, None, 64)) {
                Ok(message) => prop_assert!(known && !message.content.trim().is_empty()),
                Err(err) => prop_assert!(err.status().is_client_error() && !err.message().is_empty()),
            }
        }
    }
}
