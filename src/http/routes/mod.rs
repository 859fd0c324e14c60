//! The endpoints of API.md, one file each; `http/mod.rs` routes them.

pub mod ack;
pub mod agents;
pub mod health;
pub mod history;
pub mod inbox;
pub mod messages;
pub mod send;
pub mod stream;
pub mod threads;

use super::error::ApiError;

pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
