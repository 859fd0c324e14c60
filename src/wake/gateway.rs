//! Calls to an OpenClaw gateway's hook endpoints, and what their answers mean.

use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};

use crate::config::Gateway;

/// Longest `Retry-After` honoured as given; beyond it the normal backoff
/// cap applies, so a bogus header cannot park an agent for a day.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// One call to a gateway, covering the agent's messages up to `up_to`.
#[derive(Debug, Clone)]
pub(super) struct Call {
    pub up_to: u64,
    pub hook: Hook,
}

#[derive(Debug, Clone)]
pub(super) enum Hook {
    /// `POST /hooks/wake` with a notice.
    Wake { text: String },
    /// `POST /hooks/agent` with the messages themselves. The key makes a
    /// repeat of the same call (whose first attempt landed after all) run
    /// the agent once; it names the agent, as one gateway serves several.
    Agent { message: String, idempotency_key: String },
}

/// Names the newest message id a call covers. Gateways ignore it; it lets
/// an operator (or a benchmark) tie a wake to the messages behind it.
pub(super) const UP_TO_HEADER: &str = "Clawbus-Up-To";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Delivered {
    Queued,
    /// The gateway folded it into an identical pending wake.
    Coalesced,
}

#[derive(Debug)]
pub(super) enum Failed {
    /// Connection errors, timeouts, 408, 429 and 5xx.
    Transient { retry_after: Option<Duration>, cause: Cause },
    /// Any other answer: the gateway refuses this call as configured, or
    /// what answers at the hook URL is not the gateway's hook endpoint.
    Refused { cause: Cause },
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Cause {
    #[error("no answer from the gateway")]
    Unreachable(#[source] reqwest::Error),
    #[error("the gateway answered {status}: {body}")]
    Answered { status: StatusCode, body: String },
    /// Hook calls follow no redirect: a login page fetched with GET says
    /// nothing about the wake.
    #[error("the hook URL answered {status}, a redirect to {location:?} (not followed)")]
    Redirected { status: StatusCode, location: String },
    /// A 2xx without `{"ok": true}`: an HTML page from a proxy or a web UI,
    /// or the gateway saying it did not take the call.
    #[error("the hook URL answered {status} but not a wake (no {{\"ok\": true}}): {body}")]
    NotAWake { status: StatusCode, body: String },
    #[error("the messages to hand over could not be read")]
    Backlog(#[source] crate::bus::Unavailable),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WakeBody<'a> {
    text: &'a str,
    mode: &'static str,
    agent_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentBody<'a> {
    message: &'a str,
    name: &'static str,
    agent_id: &'a str,
    deliver: bool,
}

/// The gateway's answer to either hook: `ok` must be true.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HookAnswer {
    ok: bool,
    event_outcome: Option<String>,
}

/// An agent's gateway as its calls need it: the hook URLs and the
/// `Authorization` value, made once rather than parsed and formatted on
/// every call.
pub(super) struct Hooks {
    /// The gateway's base URL, for logs.
    pub gateway: Url,
    wake: Url,
    agent: Url,
    authorization: HeaderValue,
    openclaw_agent: String,
}

impl Hooks {
    pub(super) fn new(gateway: &Gateway) -> Hooks {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", gateway.hook_token.expose()))
            .expect("the config check refuses tokens a header cannot carry");
        authorization.set_sensitive(true);
        Hooks {
            gateway: gateway.url.clone(),
            wake: gateway.hook("wake"),
            agent: gateway.hook("agent"),
            authorization,
            openclaw_agent: gateway.openclaw_agent.clone(),
        }
    }
}

/// Sends one call and classifies the answer.
pub(super) async fn call(http: &reqwest::Client, hooks: &Hooks, call: &Call) -> Result<Delivered, Failed> {
    let (url, body) = match &call.hook {
        Hook::Wake { text } => {
            let body = WakeBody { text, mode: "now", agent_id: &hooks.openclaw_agent };
            (&hooks.wake, serde_json::to_vec(&body))
        }
        Hook::Agent { message, .. } => {
            let body = AgentBody { message, name: "clawbus", agent_id: &hooks.openclaw_agent, deliver: false };
            (&hooks.agent, serde_json::to_vec(&body))
        }
    };
    let mut request = http
        .post(url.clone())
        .header(AUTHORIZATION, hooks.authorization.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(UP_TO_HEADER, call.up_to)
        .body(body.expect("serializes"));
    if let Hook::Agent { idempotency_key, .. } = &call.hook {
        request = request.header("Idempotency-Key", idempotency_key);
    }
    let response =
        request.send().await.map_err(|err| Failed::Transient { retry_after: None, cause: Cause::Unreachable(err) })?;
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
    let location = response.headers().get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = response.text().await.unwrap_or_default();
    let body = || text.chars().take(200).collect::<String>().trim().to_owned();
    if status.is_redirection() {
        return Err(Failed::Refused { cause: Cause::Redirected { status, location } });
    }
    if status.is_success() {
        return match serde_json::from_str::<HookAnswer>(&text) {
            Ok(HookAnswer { ok: true, event_outcome }) if status == StatusCode::OK => {
                Ok(if event_outcome.as_deref() == Some("coalesced") { Delivered::Coalesced } else { Delivered::Queued })
            }
            _ => Err(Failed::Refused { cause: Cause::NotAWake { status, body: body() } }),
        };
    }
    let cause = Cause::Answered { status, body: body() };
    if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(Failed::Transient { retry_after, cause })
    } else {
        Err(Failed::Refused { cause })
    }
}

impl Cause {
    /// What an operator should look at when the gateway refuses calls.
    pub(super) fn hint(&self) -> &'static str {
        match self {
            Cause::Redirected { .. } | Cause::NotAWake { .. } => {
                "check the gateway url: it must reach the gateway's hooks"
            }
            _ => "check hook_token and openclaw_agent",
        }
    }
}

/// `Retry-After` as delta-seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default(),
    };
    (wait <= MAX_RETRY_AFTER).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = parse_retry_after(&soon).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("86400"), None);
    }
}
