//! JSON bodies of the POST endpoints.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::http::AppState;
use crate::http::error::ApiError;
use crate::wire;

/// Time a client has to send the body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for the JSON around the content (field names, escapes).
const JSON_OVERHEAD: usize = 64 * 1024;
/// Bytes of a too-large body read and dropped so its 413 can be heard.
const DRAIN_BYTES: usize = 1024 * 1024;
/// A JSON object sent with `Content-Type: application/json`, decoded as
/// a `T` of the wire types.
pub(crate) struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
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
            Ok(Value::Object(map)) => Ok(JsonBody(wire::decode(map)?)),
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
