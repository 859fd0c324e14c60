//! Query string parameters of the GET endpoints.

use std::collections::HashMap;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::http::error::ApiError;
use crate::mailbox::{HistoryQuery, InboxQuery};
use crate::message::Priority;
use crate::names::AgentName;
use crate::wire::{HistoryParams, InboxParams, StreamParams, agent_name, bad_priority, decode_params};

/// `limit` when none is given, and the most a page may hold.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Query string parameters; later repeats of a name win.
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|err| ApiError::invalid_request(format!("malformed query string: {err}")))?;
        Ok(Params(pairs.into_iter().collect()))
    }
}

impl Params {
    /// The required `agent`, checked before anything else is.
    pub(crate) fn agent(&self) -> Result<AgentName, ApiError> {
        let raw = self.0.get("agent").ok_or_else(|| ApiError::invalid_request("the agent parameter is required"))?;
        Ok(agent_name("agent", raw)?)
    }

    pub(crate) fn inbox_query(&self) -> Result<InboxQuery, ApiError> {
        let params: InboxParams = decode_params(&self.0)?;
        let unread_only = match params.unread.as_deref() {
            None | Some("true" | "1") => true,
            Some("false" | "0") => false,
            Some(_) => return Err(ApiError::invalid_request("unread must be true or false")),
        };
        let priority = params.priority.map(|raw| Priority::parse(&raw).ok_or_else(bad_priority)).transpose()?;
        Ok(InboxQuery { unread_only, limit: limit(params.limit)?, after: after(params.after)?, priority })
    }

    pub(crate) fn history_query(&self) -> Result<HistoryQuery, ApiError> {
        let params: HistoryParams = decode_params(&self.0)?;
        let thread = params
            .thread
            .map(|raw| {
                raw.parse::<u64>().ok().filter(|t| *t > 0).ok_or_else(|| {
                    ApiError::invalid_request(format!("thread must be a message id, from 1 to {}", u64::MAX))
                })
            })
            .transpose()?;
        Ok(HistoryQuery {
            thread,
            with: optional_agent("with", params.with)?,
            since: time("since", params.since)?,
            until: time("until", params.until)?,
            limit: limit(params.limit)?,
            after: after(params.after)?,
        })
    }

    /// The stream's `agent` (none: the whole fleet) and `after`.
    pub(crate) fn stream_query(&self) -> Result<(Option<AgentName>, Option<u64>), ApiError> {
        let params: StreamParams = decode_params(&self.0)?;
        let after = after(params.after)?;
        Ok((optional_agent("agent", params.agent)?, (after > 0).then_some(after)))
    }
}

fn optional_agent(name: &'static str, raw: Option<String>) -> Result<Option<AgentName>, ApiError> {
    Ok(raw.map(|raw| agent_name(name, &raw)).transpose()?)
}

/// Any message id (0 = from the start); ids beyond the newest message
/// give an empty page.
fn after(raw: Option<String>) -> Result<u64, ApiError> {
    raw.map_or(Ok(0), |raw| {
        raw.parse().map_err(|_| {
            ApiError::invalid_request(format!("after must be a message id, a whole number from 0 to {}", u64::MAX))
        })
    })
}

/// Positive; more than the most a page holds is capped, not refused.
fn limit(raw: Option<String>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(DEFAULT_LIMIT) };
    match raw.parse::<u64>() {
        Ok(limit) if limit > 0 => Ok(usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT)),
        _ => Err(ApiError::invalid_request(format!(
            "limit must be a whole number from 1 to {}; pages hold at most {MAX_LIMIT}",
            u64::MAX
        ))),
    }
}

fn time(name: &str, raw: Option<String>) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|raw| {
        parse_time(&raw).ok_or_else(|| {
            ApiError::invalid_request(format!(
                "{name} must be an RFC 3339 time (years 0000 to 9999) or unix seconds in that range"
            ))
        })
    })
    .transpose()
}

/// RFC 3339, or unix seconds (fractions and negative values allowed), within
/// the years 0000 to 9999.
fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    let at = match OffsetDateTime::parse(raw, &Rfc3339) {
        Ok(at) => at,
        Err(_) => {
            let seconds: f64 = raw.parse().ok().filter(|s: &f64| s.is_finite() && s.abs() < 1e12)?;
            OffsetDateTime::from_unix_timestamp_nanos((seconds * 1e9) as i128).ok()?
        }
    };
    (0..=9999).contains(&at.year()).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn times_accept_rfc3339_and_unix_seconds_within_years_0_to_9999() {
        assert_eq!(parse_time("1764064800").unwrap().unix_timestamp(), 1_764_064_800);
        assert_eq!(parse_time("2025-11-25T10:00:00Z").unwrap().unix_timestamp(), 1_764_064_800);
        assert_eq!(parse_time("-86400").unwrap().year(), 1969);
        assert_eq!(parse_time("0000-01-01T00:00:00Z").unwrap().year(), 0);
        assert_eq!(parse_time("9999-12-31T23:59:59Z").unwrap().year(), 9999);
        for bad in ["yesterday", "1e300", "-1e300", "NaN", "inf", "-62167219201", "253402300800", ""] {
            assert!(parse_time(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn extremes_of_after_and_limit() {
        let given = |raw: &str| Some(raw.to_owned());
        let max = u64::MAX.to_string();
        assert_eq!(after(given(&max)).unwrap(), u64::MAX);
        assert_eq!(limit(given(&max)).unwrap(), MAX_LIMIT);
        assert!(after(given("18446744073709551616")).is_err());
        assert!(after(given("-1")).is_err());
        assert!(limit(given("0")).is_err());
    }

    #[test]
    fn unknown_parameters_are_named() {
        let err = params(&[("agent", "bob"), ("unred", "false")]).inbox_query().unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        assert!(err.message().contains("\"unred\"") && err.message().contains("unread"), "{}", err.message());
        assert!(params(&[("agent", "bob"), ("whit", "alice")]).history_query().is_err());
        assert!(params(&[("agent", "bob"), ("since", "x")]).stream_query().is_err());
    }

    proptest! {
        /// Any query string parses to a query or a 4xx, never a panic.
        #[test]
        fn any_query_is_answered(pairs in proptest::collection::vec(("[a-z]{1,8}", "\\PC{0,24}"), 0..6)) {
            let params = Params(pairs.into_iter().collect());
            for result in [params.inbox_query().map(drop), params.history_query().map(drop), params.stream_query().map(drop)] {
                if let Err(err) = result {
                    prop_assert!(err.status().is_client_error());
                }
            }
            prop_assert!(params.agent().is_ok() || params.agent().unwrap_err().status().is_client_error());
        }

        #[test]
        fn any_time_text_is_parsed_or_refused(raw in "\\PC{0,40}") {
            if let Some(at) = parse_time(&raw) {
                prop_assert!((0..=9999).contains(&at.year()));
            }
        }
    }
}
