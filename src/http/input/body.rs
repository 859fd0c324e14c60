//! JSON bodies of the POST endpoints.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::{agent_name, bad_priority, only_known};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::mailbox::{Ack, NewMessage};
use crate::message::{BROADCAST, Priority};
use crate::names::AgentName;

/// Time a client has to send the body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for the JSON around the content (field names, escapes).
const JSON_OVERHEAD: usize = 64 * 1024;
/// Bytes of a too-large body read and dropped so its 413 can be heard.
const DRAIN_BYTES: usize = 1024 * 1024;
/// Longest `Idempotency-Key`.
const MAX_KEY: usize = 128;
/// Most ids one ack may name.
const MAX_ACK_IDS: usize = 10_000;

/// Fields of a send; the old bus's aliases of `content` included.
const SEND: &[&str] = &["from", "to", "content", "message", "text", "body", "priority", "reply_to"];
const ACK: &[&str] = &["agent", "ids", "all", "up_to"];

/// A JSON object sent with `Content-Type: application/json`.
pub struct JsonBody(pub Map<String, Value>);

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let is_json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        let limit = state.max_message_bytes() + JSON_OVERHEAD;
        let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|length| length > drain_limit(limit)) {
            return Err(too_large_body(limit));
        }
        let collected = tokio::time::timeout(BODY_TIMEOUT, read_limited(request.into_body(), limit))
            .await
            .map_err(|_| ApiError::request_timeout())??;
        match serde_json::from_slice(&collected) {
            Ok(Value::Object(map)) => Ok(JsonBody(map)),
            Ok(_) => Err(ApiError::invalid_request("the body must be a JSON object")),
            Err(err) => Err(ApiError::invalid_json(format!("the body is not valid JSON: {err}"))),
        }
    }
}

/// The body when it is at most `limit` bytes. A longer one is still read
/// and dropped, up to [`drain_limit`], before the 413: a client that is
/// still sending would otherwise see its connection reset instead of the
/// answer.
async fn read_limited(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| ApiError::invalid_request(format!("could not read the body: {err}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > drain_limit(limit) {
            break;
        }
        if seen <= limit {
            kept.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(too_large_body(limit));
    }
    Ok(kept)
}

/// Most bytes of a refused body read before answering; beyond it the
/// connection is cut.
fn drain_limit(limit: usize) -> usize {
    limit.saturating_add(DRAIN_BYTES)
}

fn too_large_body(limit: usize) -> ApiError {
    ApiError::too_large(format!("the body exceeds {limit} bytes"))
}

/// A required agent-name field of a JSON body.
fn agent_field(body: &Map<String, Value>, field: &str) -> Result<AgentName, ApiError> {
    match body.get(field) {
        Some(Value::String(raw)) => agent_name(field, raw),
        None | Some(Value::Null) => Err(ApiError::invalid_request(format!("{field} is required"))),
        Some(_) => Err(ApiError::invalid_request(format!("{field} must be a string"))),
    }
}

/// A message id field: a whole number from 1 to 2^64-1.
fn id_value(field: &str, value: &Value) -> Result<u64, ApiError> {
    value
        .as_u64()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid_request(format!("{field} must be a message id (a positive whole number)")))
}

/// `POST /api/send`: the body and the optional `Idempotency-Key`.
pub fn new_message(body: &Map<String, Value>, key: Option<&[u8]>, max_bytes: usize) -> Result<NewMessage, ApiError> {
    only_known(body.keys().map(String::as_str), SEND, "field")?;
    let from = agent_field(body, "from")?;
    let to = match body.get("to") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) if raw == BROADCAST => None,
        Some(Value::String(raw)) => Some(agent_name("to", raw)?),
        Some(_) => {
            return Err(ApiError::invalid_request("to must be an agent name, \"*\" or null"));
        }
    };
    // Compatibility: see docs/architecture.md#compatibility
    let (field, value) = ["content", "message", "text", "body"]
        .into_iter()
        .find_map(|field| body.get(field).filter(|v| !v.is_null()).map(|v| (field, v)))
        .ok_or_else(|| ApiError::invalid_request("content is required"))?;
    let content = match value {
        Value::String(text) if !text.trim().is_empty() => text.clone(),
        Value::String(_) => return Err(ApiError::invalid_request(format!("{field} is empty"))),
        _ => {
            return Err(ApiError::invalid_request(format!("{field} must be a string")));
        }
    };
    if content.len() > max_bytes {
        return Err(ApiError::too_large(format!("content is {} bytes; the limit is {max_bytes}", content.len())));
    }
    let priority = match body.get("priority") {
        None | Some(Value::Null) => Priority::Normal,
        Some(Value::String(raw)) => Priority::parse(raw).ok_or_else(bad_priority)?,
        Some(_) => return Err(bad_priority()),
    };
    let reply_to = match body.get("reply_to") {
        None | Some(Value::Null) => None,
        Some(value) => Some(id_value("reply_to", value)?),
    };
    let idempotency_key = key
        .map(|key| {
            let printable = key.iter().all(|b| (0x20..0x7f).contains(b));
            match std::str::from_utf8(key) {
                Ok(key) if printable && !key.is_empty() && key.len() <= MAX_KEY => Ok(key.to_owned()),
                _ => Err(ApiError::invalid_request(format!(
                    "Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters"
                ))),
            }
        })
        .transpose()?;
    Ok(NewMessage { from, to, content, priority, reply_to, idempotency_key })
}

/// `POST /api/ack`: the agent and exactly one of `ids`, `all`, `up_to`.
pub fn ack(body: &Map<String, Value>) -> Result<(AgentName, Ack), ApiError> {
    only_known(body.keys().map(String::as_str), ACK, "field")?;
    let agent = agent_field(body, "agent")?;
    let given = |field| body.get(field).is_some_and(|v: &Value| !v.is_null());
    let one_of = || ApiError::invalid_request("give exactly one of ids, all (true) or up_to");
    let ack = match (given("ids"), given("all"), given("up_to")) {
        (true, false, false) => {
            let Some(Value::Array(ids)) = body.get("ids") else {
                return Err(ApiError::invalid_request("ids must be an array of message ids"));
            };
            if ids.len() > MAX_ACK_IDS {
                return Err(ApiError::invalid_request(format!("at most {MAX_ACK_IDS} ids per ack")));
            }
            Ack::Ids(ids.iter().map(|id| id_value("ids", id)).collect::<Result<_, _>>()?)
        }
        (false, true, false) => match body.get("all") {
            Some(Value::Bool(true)) => Ack::All,
            _ => return Err(ApiError::invalid_request("all must be true")),
        },
        (false, false, true) => Ack::UpTo(id_value("up_to", &body["up_to"])?),
        _ => return Err(one_of()),
    };
    Ok((agent, ack))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn send(value: Value) -> Result<NewMessage, ApiError> {
        new_message(&body(value), None, 10)
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
        assert!(new_message(&body(json!({"from": "a", "content": "x"})), Some(long_key.as_bytes()), 10).is_err());
    }

    #[test]
    fn ack_takes_exactly_one_form() {
        let (agent, form) = ack(&body(json!({"agent": "bob", "ids": [1, 2]}))).unwrap();
        assert_eq!(agent.as_str(), "bob");
        assert!(matches!(form, Ack::Ids(ids) if ids == [1, 2]));
        assert!(matches!(ack(&body(json!({"agent": "bob", "all": true}))).unwrap().1, Ack::All));
        assert!(matches!(ack(&body(json!({"agent": "bob", "up_to": 9}))).unwrap().1, Ack::UpTo(9)));
        for bad in [
            json!({"agent": "bob"}),
            json!({"agent": "bob", "all": false}),
            json!({"agent": "bob", "ids": [1], "all": true}),
            json!({"agent": "bob", "ids": ["1"]}),
            json!({"agent": "bob", "ids": 1}),
            json!({"agent": "bob", "up_to": 0}),
        ] {
            assert_eq!(ack(&body(bad.clone())).unwrap_err().code(), "invalid_request", "{bad}");
        }
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let typo = send(json!({"from": "alice", "too": "bob", "content": "hi"})).unwrap_err();
        assert_eq!(typo.code(), "invalid_request");
        assert!(typo.message().contains("\"too\"") && typo.message().contains("reply_to"), "{}", typo.message());
        assert!(send(json!({"from": "a", "to": "b", "content": "x", "priorty": "urgent"})).is_err());
        assert!(ack(&body(json!({"agent": "bob", "all": true, "upto": 3}))).is_err());
    }

    #[test]
    fn ids_cover_the_whole_u64_range_but_zero() {
        let max = json!({"agent": "bob", "up_to": u64::MAX});
        assert!(matches!(ack(&body(max)).unwrap().1, Ack::UpTo(u64::MAX)));
        for bad in [json!(0), json!(-1), json!(1.5), json!(18446744073709551616.0_f64), json!("7")] {
            assert!(ack(&body(json!({"agent": "bob", "up_to": bad}))).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Any JSON object gives a send or a 4xx, never a panic; and a send
        /// only ever comes from a body with known fields.
        #[test]
        fn any_body_is_answered(fields in proptest::collection::vec((prop_oneof![
            Just("from".to_string()), Just("to".to_string()), Just("content".to_string()),
            Just("priority".to_string()), Just("reply_to".to_string()), "[a-z_]{1,8}"
        ], json_value()), 0..6)) {
            let body: Map<String, Value> = fields.into_iter().collect();
            match new_message(&body, None, 64) {
                Ok(message) => prop_assert!(body.keys().all(|k| SEND.contains(&k.as_str())) && !message.content.trim().is_empty()),
                Err(err) => prop_assert!(err.status().is_client_error()),
            }
            if let Err(err) = ack(&body) {
                prop_assert!(err.status().is_client_error());
            }
        }
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,80}".prop_map(Value::from),
            prop_oneof![Just("bob"), Just("*"), Just("urgent"), Just("a.b")].prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| proptest::collection::vec(inner, 0..4).prop_map(Value::from))
    }
}
