//! Caps on open `/api/stream` connections, so that no client can hold every
//! connection (streams share one server-side consumer, but each costs a
//! connection and its read-backs): in all per adapter, and per agent (the
//! fleet-wide stream counts as the operator's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::ApiError;
use crate::names::AgentName;

pub(super) struct StreamCaps {
    total: usize,
    per_agent: usize,
    open: Mutex<HashMap<Option<AgentName>, usize>>,
}

/// One open stream; dropping it (the client went away) frees its place.
pub(super) struct StreamSlot {
    caps: Arc<StreamCaps>,
    agent: Option<AgentName>,
}

impl StreamCaps {
    pub(super) fn new(total: usize, per_agent: usize) -> Arc<Self> {
        Arc::new(Self { total, per_agent, open: Mutex::default() })
    }

    /// A place for one more stream of `agent`, or 429.
    pub(super) fn open(self: &Arc<Self>, agent: Option<&AgentName>) -> Result<StreamSlot, ApiError> {
        let mut open = self.open.lock().expect("stream caps lock");
        let total: usize = open.values().sum();
        let mine = open.get(&agent.cloned()).copied().unwrap_or(0);
        if total >= self.total {
            return Err(ApiError::rate_limited(format!(
                "this adapter already serves {total} live streams, its most (http.max_streams); try again later"
            )));
        }
        if mine >= self.per_agent {
            let whose = agent.map_or_else(|| "the fleet".to_owned(), |agent| agent.to_string());
            return Err(ApiError::rate_limited(format!(
                "{whose} already has {mine} live streams open, the most per agent (http.max_streams_per_agent); \
                 close one first"
            )));
        }
        *open.entry(agent.cloned()).or_default() += 1;
        Ok(StreamSlot { caps: self.clone(), agent: agent.cloned() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().expect("stream caps lock");
        if let Some(count) = open.get_mut(&self.agent) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.agent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_in_all_and_per_agent_and_freed_on_drop() {
        let caps = StreamCaps::new(3, 2);
        let bob = AgentName::parse("bob").unwrap();
        let first = caps.open(Some(&bob)).unwrap();
        let _second = caps.open(Some(&bob)).unwrap();
        assert_eq!(caps.open(Some(&bob)).err().map(|e| e.status().as_u16()), Some(429));
        let _fleet = caps.open(None).unwrap();
        assert!(caps.open(None).is_err(), "three in all");
        drop(first);
        assert!(caps.open(Some(&bob)).is_ok(), "a closed stream frees its place");
    }
}
