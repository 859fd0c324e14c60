//! Turning requests into validated values, with the documented error for
//! every way a request can be wrong. Nothing reaches the mailbox unchecked:
//! unknown fields and parameters are refused (a typo must never turn a
//! direct message into a broadcast), and every number and time is checked
//! at its extremes.

mod body;
mod query;

pub(super) use body::JsonBody;
pub(super) use query::Params;
