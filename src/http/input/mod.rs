//! Turning requests into validated values, with the documented error for
//! every way a request can be wrong. Nothing reaches the mailbox unchecked:
//! unknown fields and parameters are refused (a typo must never turn a
//! direct message into a broadcast), and every number and time is checked
//! at its extremes.

mod body;
mod query;

pub use body::{JsonBody, ack, new_message};
pub use query::Params;

use super::error::ApiError;
use crate::names::AgentName;

fn agent_name(field: &str, raw: &str) -> Result<AgentName, ApiError> {
    AgentName::parse(raw).map_err(|err| ApiError::invalid_agent(format!("{field}: {err}")))
}

fn bad_priority() -> ApiError {
    ApiError::invalid_request("priority must be normal, high or urgent")
}

/// Refuses names not in `accepted`, naming the first unknown one.
fn only_known<'a>(names: impl IntoIterator<Item = &'a str>, accepted: &[&str], what: &str) -> Result<(), ApiError> {
    match names.into_iter().find(|name| !accepted.contains(name)) {
        None => Ok(()),
        Some(unknown) => {
            Err(ApiError::invalid_request(format!("unknown {what} {unknown:?}; accepted: {}", accepted.join(", "))))
        }
    }
}
