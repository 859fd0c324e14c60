//! Routes stored messages to the wakers of this host's agents.
//!
//! One ordered consumer per adapter, filtered to its agents' direct subjects
//! plus broadcasts, follows the stream from the oldest message any local
//! agent has not been woken for. Ordered consumers keep no state on the
//! server; what is durable is each agent's wake mark (see `marks`), so a
//! restarted adapter picks up exactly where its wakes left off.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::message::{Priority, Route};

use super::waker::Slot;

/// The part of a payload a wake needs.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    priority: Priority,
}

/// Past this many agents the consumer follows every direct message and the
/// adapter keeps its own: the server checks a consumer's filter subjects
/// against each other, at a cost that grows with their square (measured:
/// creating the consumer takes about 50 ms for 1,000 filters, 1.8 s for
/// 5,000, and it is created again after every reconnect).
const MAX_FILTERS: usize = 1000;

pub async fn run(bus: Bus, slots: Vec<Arc<Slot>>, from: u64, shutdown: CancellationToken) {
    let subjects = bus.subjects().clone();
    let mut filters: Vec<String> = if slots.len() <= MAX_FILTERS {
        slots.iter().map(|slot| subjects.to(&slot.inbox.agent)).collect()
    } else {
        vec![subjects.every_direct()]
    };
    filters.push(subjects.broadcasts());
    let by_name: HashMap<String, Arc<Slot>> =
        slots.iter().map(|slot| (slot.inbox.agent.to_string(), slot.clone())).collect();
    let mut follower = bus.follow(filters, from);
    loop {
        let message = tokio::select! {
            message = follower.next() => message,
            _ = shutdown.cancelled() => return,
        };
        let Some(route) = subjects.route(&message.subject) else { continue };
        let recipients: Vec<&Arc<Slot>> = match route {
            Route::Direct { to, .. } => by_name.get(to).into_iter().collect(),
            Route::Broadcast { .. } => slots.iter().filter(|slot| slot.inbox.contains(message.seq, route)).collect(),
        };
        if recipients.is_empty() {
            continue;
        }
        let priority = serde_json::from_slice::<Header>(&message.payload).map(|h| h.priority).unwrap_or_default();
        for slot in recipients {
            slot.offer(message.seq, route.from(), priority, message.stored);
        }
    }
}
