//! Agent names.
//!
//! Names become NATS subject tokens and KV keys, so validation is the one
//! thing standing between a request parameter and a wildcard subscription.
//! An [`AgentName`] can only be built through [`AgentName::parse`], which makes
//! "validated" a property of the type rather than of every call site.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// Longest accepted agent name, in bytes (all accepted characters are ASCII).
pub(crate) const MAX_AGENT_NAME: usize = 64;

/// A name matching `^[A-Za-z0-9_-]{1,64}$`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AgentName(String);

/// Why a string is not an agent name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("agent name is empty")]
    Empty,
    #[error("agent name is longer than {MAX_AGENT_NAME} characters")]
    TooLong,
    #[error("agent name {0:?} may contain only letters, digits, '_' and '-'")]
    BadCharacter(String),
}

impl AgentName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.len() > MAX_AGENT_NAME {
            return Err(NameError::TooLong);
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(NameError::BadCharacter(name.to_owned()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AgentName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AgentName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AgentName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        for ok in ["bob", "A-b_9", &"x".repeat(64)] {
            assert_eq!(AgentName::parse(ok).unwrap().as_str(), ok);
        }
    }

    proptest::proptest! {
        /// Whatever the input, an accepted name is a single, literal subject token.
        #[test]
        fn accepted_names_are_plain_subject_tokens(raw in "\\PC{0,70}") {
            if let Ok(name) = AgentName::parse(&raw) {
                proptest::prop_assert!(!name.as_str().is_empty() && name.as_str().len() <= MAX_AGENT_NAME);
                proptest::prop_assert!(!name.as_str().contains(['.', '*', '>', ' ', ':', '#']));
            }
        }
    }

    #[test]
    fn rejects_subject_syntax_and_bad_lengths() {
        assert_eq!(AgentName::parse(""), Err(NameError::Empty));
        assert_eq!(AgentName::parse(&"x".repeat(65)), Err(NameError::TooLong));
        for bad in ["a.b", "*", ">", "a b", "bob\n", "é", "a/b"] {
            assert!(matches!(AgentName::parse(bad), Err(NameError::BadCharacter(_))), "{bad}");
        }
    }
}
