//! The API's error answer: a status and
//! `{"ok": false, "error": "<code>", "message": "<text for humans>"}`.

use crate::bus::Unavailable;
use crate::mailbox::{MailError, Refusal};
use crate::wire::{ErrorAnswer, Invalid};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client is asked to wait after a 503.
const RETRY_AFTER_SECS: u64 = 1;
/// Seconds a client is asked to wait after a 507: space comes back when an
/// operator frees it or raises the limit, not within a second.
const STORE_FULL_RETRY_AFTER_SECS: u64 = 10;

#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After`, when the refusal says how long to wait.
    retry_after: Option<std::time::Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None }
    }

    pub(super) fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub(super) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub(super) fn invalid_agent(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_agent", message)
    }

    pub(super) fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub(super) fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    }

    pub(super) fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing or unknown bearer token")
    }

    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub(super) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    pub(super) fn method_not_allowed() -> Self {
        Self::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method")
    }

    pub(super) fn request_timeout() -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request body did not arrive in time")
    }

    /// 429: the caller has too much open or sent; `Retry-After` says when
    /// to try again.
    pub(super) fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
    }

    pub(super) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 507: JetStream's store is at a storage limit; nothing was stored.
    fn insufficient_storage(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", message);
        error.retry_after = Some(std::time::Duration::from_secs(STORE_FULL_RETRY_AFTER_SECS));
        error
    }

    /// A handler panicked: a bug, answered rather than cutting the connection.
    pub(super) fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the adapter failed on this request; it is logged")
    }

    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    #[cfg(test)]
    pub(super) fn code(&self) -> &'static str {
        self.code
    }

    #[cfg(test)]
    pub(super) fn message(&self) -> &str {
        &self.message
    }
}

impl From<Unavailable> for ApiError {
    fn from(err: Unavailable) -> Self {
        if let Some(refusal) = err.store_full() {
            tracing::warn!(%refusal, "JetStream's store is full: answered 507");
            return ApiError::insufficient_storage(format!(
                "JetStream's store is full, nothing was stored: {refusal}. \
                 Writes are refused until space is freed or the limit raised; try again later"
            ));
        }
        tracing::debug!(error = &err as &dyn std::error::Error, "answered 503");
        // The first cause says what NATS answered; deeper ones are for the log.
        let message = match std::error::Error::source(&err) {
            Some(cause) => format!("{err}: {cause}"),
            None => err.to_string(),
        };
        ApiError::unavailable(message)
    }
}

impl From<Invalid> for ApiError {
    fn from(err: Invalid) -> Self {
        match err {
            Invalid::Request(message) => ApiError::invalid_request(message),
            Invalid::Agent { .. } => ApiError::invalid_agent(err.to_string()),
        }
    }
}

impl From<MailError> for ApiError {
    fn from(err: MailError) -> Self {
        match err {
            MailError::UnknownAgent(_) | MailError::UnknownSender(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_agent", err.to_string())
            }
            MailError::Elsewhere { .. } => ApiError::forbidden(err.to_string()),
            MailError::NoMessage(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", err.to_string()),
            MailError::Refused(refusal) => {
                let (status, code) = match refusal {
                    Refusal::Hops { .. } | Refusal::Pair { .. } => (StatusCode::CONFLICT, "loop_detected"),
                    Refusal::Budget { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
                    Refusal::Contact { .. } => (StatusCode::FORBIDDEN, "not_allowed"),
                };
                let mut error = ApiError::new(status, code, refusal.to_string());
                error.retry_after = refusal.retry_after();
                error
            }
            MailError::TooLarge => ApiError::too_large(err.to_string()),
            MailError::Contended(_) | MailError::KeyExhausted => ApiError::unavailable(err.to_string()),
            MailError::Unavailable(err) => err.into(),
            MailError::Unknown => ApiError::new(StatusCode::GATEWAY_TIMEOUT, "unavailable", err.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorAnswer { ok: false, error: self.code.into(), message: self.message };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self.status {
            _ if self.retry_after.is_some() => {
                let seconds = self.retry_after.unwrap_or_default().as_secs_f64().ceil() as u64;
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            StatusCode::UNAUTHORIZED => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
