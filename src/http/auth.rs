//! Optional bearer-token authentication.
//!
//! Each API token belongs to one agent and lets it act only as itself; the
//! operator token may do everything. Without any token configured the API is
//! open, which is why it listens on loopback by default.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::ApiError;
use crate::config::{HttpConfig, Secret};
use crate::names::AgentName;

/// Who is calling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Identity {
    /// No tokens are configured.
    Open,
    Operator,
    Agent(AgentName),
}

impl Identity {
    /// Acting as `agent`: sending as it, or reading or acknowledging its mail.
    pub(super) fn may_act_as(&self, agent: &AgentName) -> Result<(), ApiError> {
        match self {
            Identity::Agent(own) if own != agent => {
                Err(ApiError::forbidden(format!("this token belongs to {own}, not {agent}")))
            }
            _ => Ok(()),
        }
    }

    /// Reading every agent's mail at once.
    pub(super) fn may_see_fleet(&self) -> Result<(), ApiError> {
        match self {
            Identity::Agent(_) => Err(ApiError::forbidden("only the operator token may follow the whole fleet")),
            _ => Ok(()),
        }
    }
}

/// The configured tokens.
pub(super) struct Tokens {
    operator: Option<Secret>,
    agents: Vec<(AgentName, Secret)>,
}

impl Tokens {
    pub(super) fn new(http: &HttpConfig) -> Self {
        let agents = http
            .tokens
            .iter()
            .filter_map(|(agent, token)| Some((AgentName::parse(agent).ok()?, token.clone())))
            .collect();
        Self { operator: http.operator_token.clone(), agents }
    }

    fn enabled(&self) -> bool {
        self.operator.is_some() || !self.agents.is_empty()
    }

    /// Compares against every token in constant time, so response timing
    /// says nothing about how close a guess was.
    fn identify(&self, presented: &str) -> Option<Identity> {
        let matches = |token: &str| bool::from(token.as_bytes().ct_eq(presented.as_bytes()));
        let mut found = None;
        if self.operator.as_ref().is_some_and(|token| matches(token.expose())) {
            found = Some(Identity::Operator);
        }
        for (agent, token) in &self.agents {
            if matches(token.expose()) && found.is_none() {
                found = Some(Identity::Agent(agent.clone()));
            }
        }
        found
    }
}

impl FromRequestParts<AppState> for Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let tokens = state.tokens();
        if !tokens.enabled() {
            return Ok(Identity::Open);
        }
        parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|token| tokens.identify(token.trim()))
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let mut http = HttpConfig { operator_token: Some("op".into()), ..HttpConfig::default() };
        http.tokens.insert("alice".into(), "a-token".into());
        Tokens::new(&http)
    }

    #[test]
    fn tokens_map_to_identities() {
        let tokens = tokens();
        assert_eq!(tokens.identify("op"), Some(Identity::Operator));
        assert_eq!(tokens.identify("a-token"), Some(Identity::Agent(AgentName::parse("alice").unwrap())));
        assert_eq!(tokens.identify("a-toke"), None);
        assert_eq!(tokens.identify(""), None);
    }

    #[test]
    fn agents_act_only_as_themselves() {
        let alice = AgentName::parse("alice").unwrap();
        let bob = AgentName::parse("bob").unwrap();
        let as_alice = Identity::Agent(alice.clone());
        assert!(as_alice.may_act_as(&alice).is_ok());
        assert_eq!(as_alice.may_act_as(&bob).unwrap_err().code(), "forbidden");
        assert!(as_alice.may_see_fleet().is_err());
        assert!(Identity::Operator.may_act_as(&bob).is_ok() && Identity::Open.may_see_fleet().is_ok());
    }
}
