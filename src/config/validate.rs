//! Checks of a loaded config, each naming its key, and the agents it hosts
//! with every default resolved.

use std::time::Duration;

use reqwest::Url;

use super::{AgentConfig, Config, ConfigError, Gateway, LocalAgent, Secret, WakeMode, invalid};
use crate::names::AgentName;

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        AgentName::parse(&self.host).map_err(|e| invalid("host", e.to_string()))?;
        AgentName::parse(&self.nats.stream)
            .map_err(|_| invalid("nats.stream", "may contain only letters, digits, '_' and '-'"))?;
        if self.nats.urls().is_empty() {
            return Err(invalid("nats.url", "no server URL given"));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(invalid("nats.replicas", "must be between 1 and 5"));
        }
        if self.nats.duplicate_window.is_zero() || self.nats.duplicate_window > self.nats.max_age {
            return Err(invalid("nats.duplicate_window", "must be positive and at most nats.max_age"));
        }
        if self.nats.send_timeout.is_zero() {
            return Err(invalid("nats.send_timeout", "must be positive"));
        }
        if self.nats.settle_timeout.is_zero() {
            return Err(invalid("nats.settle_timeout", "must be positive"));
        }
        if self.nats.max_sends_in_flight == 0 {
            return Err(invalid("nats.max_sends_in_flight", "must be at least 1"));
        }
        if self.http.max_message_bytes == 0 || self.http.max_message_bytes > 8 * 1024 * 1024 {
            return Err(invalid("http.max_message_bytes", "must be between 1 and 8388608"));
        }
        for (agent, token) in &self.http.tokens {
            let key = format!("http.tokens.{agent}");
            AgentName::parse(agent).map_err(|e| invalid(&key, e.to_string()))?;
            if token.is_empty() {
                return Err(invalid(key, "token is empty"));
            }
        }
        if self.http.operator_token.as_ref().is_some_and(Secret::is_empty) {
            return Err(invalid("http.operator_token", "token is empty"));
        }
        if self.http.is_open() && !self.http.listen.ip().is_loopback() && !self.http.allow_open {
            return Err(invalid(
                "http.listen",
                format!(
                    "{} is reachable from the network and no tokens are configured: anyone could read and send \
                     any agent's mail. Set http.tokens and http.operator_token, or http.allow_open = true",
                    self.http.listen
                ),
            ));
        }
        for (key, value) in [
            ("http.max_streams", self.http.max_streams),
            ("http.max_streams_per_agent", self.http.max_streams_per_agent),
            ("http.max_connections", self.http.max_connections),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.wake.max_backoff < Duration::from_millis(100) {
            return Err(invalid("wake.max_backoff", "must be at least 100ms"));
        }
        if self.wake.timeout.is_zero() {
            return Err(invalid("wake.timeout", "must be positive"));
        }
        self.local_agents().map(drop)
    }

    /// The agents this adapter hosts, with gateway defaults applied.
    pub fn local_agents(&self) -> Result<Vec<LocalAgent>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        self.agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let key = |field: &str| format!("agents[{i}].{field}");
                if !seen.insert(agent.name.clone()) {
                    return Err(invalid(key("name"), format!("agent {} is listed twice", agent.name)));
                }
                let mode = agent.wake.unwrap_or(self.wake.mode);
                let gateway = match mode {
                    WakeMode::None => None,
                    WakeMode::Wake | WakeMode::Agent => Some(self.gateway_for(agent, &key)?),
                };
                Ok(LocalAgent { name: agent.name.clone(), mode, gateway })
            })
            .collect()
    }

    fn gateway_for(&self, agent: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<Gateway, ConfigError> {
        let raw = agent
            .gateway
            .as_ref()
            .or(self.wake.gateway.as_ref())
            .ok_or_else(|| invalid(key("gateway"), "required (here or as wake.gateway) unless wake = \"none\""))?;
        let url = Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| invalid(key("gateway"), format!("{raw:?} is not an http(s) URL")))?;
        let hook_token = agent
            .hook_token
            .as_ref()
            .or(self.wake.hook_token.as_ref())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(key("hook_token"), "required (here or as wake.hook_token) unless wake = \"none\""))?
            .clone();
        let openclaw_agent = agent.openclaw_agent.clone().unwrap_or_else(|| agent.name.as_str().to_owned());
        if openclaw_agent.is_empty() {
            return Err(invalid(key("openclaw_agent"), "is empty"));
        }
        Ok(Gateway { url, hook_token, openclaw_agent })
    }
}
