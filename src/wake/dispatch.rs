//! Routes stored messages to the wakers of this host's agents.
//!
//! The agents are split into groups of at most [`GROUP_SIZE`] (fewer where
//! their filters would pass the server's payload limit); one ordered
//! consumer per group, filtered to its agents' direct subjects plus
//! broadcasts, follows the stream from the oldest message any member has
//! not been woken for. So a host receives only its own agents' mail,
//! however many it has, and no consumer has more filters than the server
//! handles cheaply. Ordered consumers keep no state on the server; what is
//! durable is the wake marks (see `marks`), so a restarted adapter picks up
//! exactly where its wakes left off.
//!
//! [`GROUP_SIZE`]: super::record::GROUP_SIZE

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::bus::{Bus, Incarnation, Route};
use crate::message::Priority;

use super::waker::Slot;

/// The part of a payload a wake needs.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    priority: Priority,
}

/// Agents followed by one consumer.
pub(super) struct Group {
    pub slots: Vec<Arc<Slot>>,
    /// Every message up to this id for the group's agents has been handed
    /// to their slots.
    routed: AtomicU64,
}

impl Group {
    /// A group whose consumer starts at `from`.
    pub(super) fn new(slots: Vec<Arc<Slot>>, from: u64) -> Self {
        Self { slots, routed: AtomicU64::new(from.saturating_sub(1)) }
    }

    pub(super) fn routed(&self) -> u64 {
        self.routed.load(Ordering::Acquire)
    }

    /// A stream created again: what the members were woken for, and what
    /// the consumer routed, are ids of the stream before.
    fn restart_if_re_created(&self, followed: &mut Option<Incarnation>, now: Option<&Incarnation>) {
        let Some(now) = now else { return };
        if followed.as_ref().is_some_and(|before| before != now) {
            tracing::warn!(agents = self.slots.len(), "the stream was re-created; waking its agents from its start");
            for slot in &self.slots {
                slot.restart();
            }
            self.routed.store(0, Ordering::Release);
        }
        *followed = Some(now.clone());
    }

    /// Follows the group's mail until `shutdown`.
    pub(super) async fn run(self: Arc<Self>, bus: Bus, shutdown: CancellationToken) {
        let subjects = bus.subjects().clone();
        let mut filters: Vec<String> = self.slots.iter().map(|slot| subjects.to(&slot.inbox.agent)).collect();
        filters.push(subjects.broadcasts());
        let by_name: HashMap<&str, &Arc<Slot>> =
            self.slots.iter().map(|slot| (slot.inbox.agent.as_str(), slot)).collect();
        let mut follower = bus.follow(filters, self.routed() + 1);
        let mut incarnations = bus.incarnations();
        let mut followed = incarnations.borrow_and_update().clone();
        loop {
            let message = tokio::select! {
                message = follower.next() => message,
                // Forgotten at once, not at the next message: a mark written
                // meanwhile would carry the new stream's name.
                _ = incarnations.changed() => {
                    let now = incarnations.borrow_and_update().clone();
                    self.restart_if_re_created(&mut followed, now.as_ref());
                    continue;
                }
                _ = shutdown.cancelled() => return,
            };
            // The follower may have seen the new stream first.
            self.restart_if_re_created(&mut followed, follower.incarnation());
            if let Some(route) = subjects.route(&message.subject) {
                let recipients: Vec<&Arc<Slot>> = match route {
                    Route::Direct { to, .. } => by_name.get(to).copied().into_iter().collect(),
                    Route::Broadcast { .. } => {
                        self.slots.iter().filter(|slot| slot.inbox.contains(message.seq, route)).collect()
                    }
                };
                if !recipients.is_empty() {
                    let priority =
                        serde_json::from_slice::<Header>(&message.payload).map(|h| h.priority).unwrap_or_default();
                    for slot in recipients {
                        slot.offer(message.seq, route.from(), priority, message.stored);
                    }
                }
            }
            // After the offers: a mark written from `routed` never covers a
            // message its slot has not seen.
            self.routed.store(message.seq, Ordering::Release);
        }
    }
}
