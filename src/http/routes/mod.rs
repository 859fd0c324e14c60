//! The endpoints of API.md, one file each; `http/mod.rs` routes them.

pub(super) mod ack;
pub(super) mod agents;
pub(super) mod health;
pub(super) mod history;
pub(super) mod inbox;
pub(super) mod messages;
pub(super) mod send;
pub(super) mod stream;
pub(super) mod threads;

use super::error::ApiError;

pub(super) async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
