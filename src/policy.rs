//! Conversation safety settings: the fleet's (`[limits]`) and each agent's
//! own (`[[agents]]`), which its adapter publishes in the agent's registry
//! record so that every adapter enforces the same ones.

use serde::{Deserialize, Serialize};

use crate::names::AgentName;

/// How an agent is told that messages are waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeMode {
    /// `POST /hooks/wake` with a short notice that carries no content.
    Wake,
    /// `POST /hooks/agent` with the messages themselves.
    Agent,
    /// No wake-ups: the clawbus channel plugin of the agent's OpenClaw
    /// gateway follows its live stream and hands each message over itself.
    Channel,
    /// No wake-ups: the agent polls or streams.
    None,
}

impl WakeMode {
    /// Whether the adapter calls a gateway hook for the agent.
    pub fn wakes(self) -> bool {
        matches!(self, WakeMode::Wake | WakeMode::Agent)
    }
}

/// The fleet's limits, from `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Replies deep a thread may go before it is stopped as a loop.
    pub max_hops: u32,
    /// Messages two agents may exchange (both ways) per minute; 0: no limit.
    pub pair_per_minute: u32,
    /// Messages one agent may send per minute (a broadcast counts once per
    /// recipient); 0: no limit.
    pub sends_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_hops: 20, pair_per_minute: 30, sends_per_minute: 0 }
    }
}

/// One agent's own settings, where it has any.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    // Compatibility: see docs/architecture.md#compatibility
    /// How the agent is reached: its adapter's wake mode (absent in records
    /// written by older adapters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake: Option<WakeMode>,
    /// Who may send to it (names, or prefixes ending in `*`); `None`: anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_from: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sends_per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hops: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair_per_minute: Option<u32>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Whether `sender` may send to the agent.
    pub fn accepts(&self, sender: &AgentName) -> bool {
        self.accept_from.as_ref().is_none_or(|patterns| patterns.iter().any(|p| matches(p, sender.as_str())))
    }
}

/// `pattern` is a name, or a prefix followed by `*`.
fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// Whether `pattern` is one `accept_from` takes.
pub(crate) fn valid_pattern(pattern: &str) -> bool {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    (name.is_empty() && pattern == "*") || AgentName::parse(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_from_takes_names_and_prefixes() {
        let policy = Policy { accept_from: Some(vec!["alice".into(), "ops-*".into()]), ..Policy::default() };
        let name = |n: &str| AgentName::parse(n).unwrap();
        assert!(policy.accepts(&name("alice")) && policy.accepts(&name("ops-1")) && policy.accepts(&name("ops-")));
        assert!(!policy.accepts(&name("alicex")) && !policy.accepts(&name("mallory")) && !policy.accepts(&name("ops")));
        assert!(Policy::default().accepts(&name("anyone")));
        assert!(valid_pattern("ops-*") && valid_pattern("*") && valid_pattern("bob"));
        assert!(!valid_pattern("a.b") && !valid_pattern("**") && !valid_pattern(""));
    }
}
