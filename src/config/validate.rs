//! Checks of a loaded config, each naming its key, and the agents it hosts
//! with every default resolved.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Url;

use super::{AgentConfig, Config, ConfigError, Gateway, LocalAgent, Secret, invalid};
use crate::names::AgentName;
use crate::policy::WakeMode;

/// More threads than any host has cores for is a typo.
const MAX_THREADS: usize = 64;

/// One thing wrong with a config, naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "config key `{}`: {}", self.key, self.message)
    }
}

impl Config {
    /// Every problem at once, so one run of `check-config` shows them all.
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut found = Vec::new();
        let mut check = |ok: bool, key: &str, message: &dyn Fn() -> String| {
            if !ok {
                found.push(Problem { key: key.to_owned(), message: message() });
            }
        };
        let name_error = |raw: &str| AgentName::parse(raw).err().map(|e| e.to_string());
        check(name_error(&self.host).is_none(), "host", &|| name_error(&self.host).unwrap_or_default());
        check(AgentName::parse(&self.nats.stream).is_ok(), "nats.stream", &|| {
            "may contain only letters, digits, '_' and '-'".into()
        });
        let urls = self.nats.urls();
        check(!urls.is_empty(), "nats.url", &|| "no server URL given".into());
        for url in &urls {
            check(nats_url_is_valid(url), "nats.url", &|| {
                format!("{url:?} is not a NATS URL (e.g. nats://127.0.0.1:4222)")
            });
        }
        check((1..=5).contains(&self.nats.replicas), "nats.replicas", &|| "must be between 1 and 5".into());
        check(!self.nats.embedded || self.nats.embedded_listen().is_some(), "nats.url", &|| {
            "with nats.embedded, the first URL must be nats://<address of this machine>:<port>".into()
        });
        check(!self.nats.embedded || self.nats.replicas == 1, "nats.replicas", &|| {
            "an embedded nats-server is a single node: replicas must be 1".into()
        });
        let window = self.nats.duplicate_window;
        check(!window.is_zero() && window <= self.nats.max_age, "nats.duplicate_window", &|| {
            "must be positive and at most nats.max_age".into()
        });
        check(!self.nats.send_timeout.is_zero(), "nats.send_timeout", &|| "must be positive".into());
        check(!self.nats.settle_timeout.is_zero(), "nats.settle_timeout", &|| "must be positive".into());
        check(self.nats.max_sends_in_flight > 0, "nats.max_sends_in_flight", &|| "must be at least 1".into());
        check(self.nats.reply_buffer > 0, "nats.reply_buffer", &|| "must be at least 1".into());
        let bytes = self.http.max_message_bytes;
        check((1..=8 * 1024 * 1024).contains(&bytes), "http.max_message_bytes", &|| {
            "must be between 1 and 8388608".into()
        });
        for (agent, token) in &self.http.tokens {
            let key = format!("http.tokens.{agent}");
            check(name_error(agent).is_none(), &key, &|| name_error(agent).unwrap_or_default());
            check(!token.is_empty(), &key, &|| "token is empty".into());
        }
        check(!self.http.operator_token.as_ref().is_some_and(Secret::is_empty), "http.operator_token", &|| {
            "token is empty".into()
        });
        check(
            !self.http.is_open() || self.http.listen.ip().is_loopback() || self.http.allow_open,
            "http.listen",
            &|| {
                format!(
                    "{} is reachable from the network and no tokens are configured: anyone could read and send \
                 any agent's mail. Set http.tokens and http.operator_token, or http.allow_open = true",
                    self.http.listen
                )
            },
        );
        for (key, value) in [
            ("http.max_streams", self.http.max_streams),
            ("http.max_streams_per_agent", self.http.max_streams_per_agent),
            ("http.max_connections", self.http.max_connections),
        ] {
            check(value > 0, key, &|| "must be at least 1".into());
        }
        check(self.wake.max_backoff >= Duration::from_millis(100), "wake.max_backoff", &|| {
            "must be at least 100ms".into()
        });
        check(!self.wake.timeout.is_zero(), "wake.timeout", &|| "must be positive".into());
        check((1..=MAX_THREADS).contains(&self.threads), "threads", &|| format!("must be 1 to {MAX_THREADS}"));
        check(self.limits.max_hops > 0, "limits.max_hops", &|| "must be at least 1".into());
        let mut seen = HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let key = |field: &str| format!("agents[{i}].{field}");
            for pattern in agent.accept_from.iter().flatten() {
                check(crate::policy::valid_pattern(pattern), &key("accept_from"), &|| {
                    format!("{pattern:?} is neither an agent name nor a prefix ending in *")
                });
            }
            check(agent.max_hops != Some(0), &key("max_hops"), &|| "must be at least 1".into());
            check(seen.insert(agent.name.clone()), &key("name"), &|| format!("agent {} is listed twice", agent.name));
            if let Err(ConfigError::Invalid { key, message }) = self.local_agent(agent, &key) {
                check(false, &key, &|| message.clone());
            }
        }
        found
    }

    /// Combinations that work but are rarely what an operator wants.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.agents.is_empty() {
            warnings.push("no [[agents]]: this adapter serves the API but hosts and wakes nobody".to_owned());
        }
        if self.http.is_open() && !self.http.listen.ip().is_loopback() {
            warnings.push(format!(
                "http.listen {} is reachable from the network without tokens (http.allow_open = true): \
                 anyone who reaches it can read and send any agent's mail",
                self.http.listen
            ));
        }
        if ![1, 3, 5].contains(&self.nats.replicas) {
            warnings.push(format!(
                "nats.replicas = {}: an even number of replicas survives no more node losses than one fewer \
                 (use 1, 3 or 5)",
                self.nats.replicas
            ));
        }
        if self.nats.least_privilege && self.nats.user.is_none() && self.nats.credentials.is_none() {
            warnings.push("nats.least_privilege without nats.user or nats.credentials: which host is this?".into());
        }
        warnings
    }

    /// The agents this adapter hosts, with gateway defaults applied (the
    /// config was checked when loaded).
    pub fn local_agents(&self) -> Result<Vec<LocalAgent>, ConfigError> {
        self.agents
            .iter()
            .enumerate()
            .map(|(i, agent)| self.local_agent(agent, &|field: &str| format!("agents[{i}].{field}")))
            .collect()
    }

    fn local_agent(&self, agent: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<LocalAgent, ConfigError> {
        let mode = agent.wake.unwrap_or(self.wake.mode);
        let gateway = match mode {
            WakeMode::None | WakeMode::Channel => None,
            WakeMode::Wake | WakeMode::Agent => Some(self.gateway_for(agent, key)?),
        };
        Ok(LocalAgent { name: agent.name.clone(), mode, gateway })
    }

    fn gateway_for(&self, agent: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<Gateway, ConfigError> {
        let raw = agent.gateway.as_ref().or(self.wake.gateway.as_ref()).ok_or_else(|| {
            invalid(key("gateway"), "required (here or as wake.gateway) unless wake = \"none\" or \"channel\"")
        })?;
        let url = Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| invalid(key("gateway"), format!("{raw:?} is not an http(s) URL")))?;
        let hook_token = agent
            .hook_token
            .as_ref()
            .or(self.wake.hook_token.as_ref())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                invalid(
                    key("hook_token"),
                    "required (here or as wake.hook_token) unless wake = \"none\" or \"channel\"",
                )
            })?
            .clone();
        if reqwest::header::HeaderValue::from_str(hook_token.expose()).is_err() {
            return Err(invalid(key("hook_token"), "has characters an HTTP header cannot carry"));
        }
        let openclaw_agent = agent.openclaw_agent.clone().unwrap_or_else(|| agent.name.as_str().to_owned());
        if openclaw_agent.is_empty() {
            return Err(invalid(key("openclaw_agent"), "is empty"));
        }
        Ok(Gateway { url, hook_token, openclaw_agent })
    }
}

/// `nats://host:port` (or `tls://`, `ws://`, `wss://`, or a bare `host:port`).
fn nats_url_is_valid(raw: &str) -> bool {
    let with_scheme = if raw.contains("://") { raw.to_owned() } else { format!("nats://{raw}") };
    Url::parse(&with_scheme)
        .is_ok_and(|url| matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") && url.host().is_some())
}
