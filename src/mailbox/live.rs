//! `GET /api/stream`: messages as they are stored, replayed from an id first.
//!
//! Every stream of the adapter takes live messages from one [`Hub`]. A
//! client subscribes first, then reads back from the stream (batched direct
//! gets, no consumer) what it missed up to the hub's last message, then
//! takes the hub's. Ids increase, so anything at or below the last id shown
//! is a message it already has and is passed over: nothing is skipped or
//! repeated. A client that falls too far behind the hub subscribes again and
//! reads back from its next id. A stream created again ends the live stream
//! (see `bus::Incarnation`): its ids start afresh, and the client reconnects.

mod hub;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;

use super::{MailError, Mailbox};
use crate::bus::{Bus, Inbox, Incarnation, RawMessage, Start, Unavailable};
use crate::message::MessageView;
use crate::names::AgentName;
use crate::readstate::ReadMark;

pub(super) use hub::Hub;

/// Messages read back from the stream at a time.
const READ_BACK: usize = 256;
/// Wait before reading back again after a failure (NATS unreachable).
const RETRY: Duration = Duration::from_secs(1);

/// Messages as they are stored, for one agent or the whole fleet.
pub(crate) struct Live {
    bus: Bus,
    hub: Arc<Hub>,
    inbox: Option<Inbox>,
    mark: ReadMark,
    /// The first id not yet shown (or passed over).
    next: u64,
    /// `None` after lagging: subscribe again.
    receiver: Option<broadcast::Receiver<Arc<RawMessage>>>,
    /// While behind the subscription: the id up to which messages are read
    /// back from the stream (the receiver has every later one).
    read_up_to: Option<u64>,
    /// Read back, to be shown before anything the receiver has.
    backlog: VecDeque<Arc<RawMessage>>,
    /// The stream incarnation whose messages this shows.
    incarnation: Option<Incarnation>,
}

impl Live {
    /// The next message; waits for it. `None`: the stream was created
    /// again, and this live stream ends.
    pub(crate) async fn next(&mut self) -> Option<MessageView> {
        loop {
            let raw = self.next_stored().await?;
            if raw.seq < self.next {
                continue;
            }
            self.next = raw.seq + 1;
            let Some(route) = self.bus.subjects().route(&raw.subject) else {
                continue;
            };
            let read = match &self.inbox {
                Some(inbox) if !inbox.contains(raw.seq, route) => continue,
                Some(_) => self.mark.is_read(raw.seq),
                None => false,
            };
            if let Some(view) = raw.view(read) {
                return Some(view);
            }
        }
    }

    /// The next stored message for this stream's filters (or, from the hub,
    /// any message), in id order; possibly one already shown. Retries
    /// through outages.
    async fn next_stored(&mut self) -> Option<Arc<RawMessage>> {
        let mut failures = 0u32;
        loop {
            // Re-created: whatever this stream was to show next is of the
            // stream before.
            if self.bus.incarnation() != self.incarnation {
                return None;
            }
            if let Some(raw) = self.backlog.pop_front() {
                return Some(raw);
            }
            let result = match (&mut self.receiver, self.read_up_to) {
                (None, _) => self.hub.subscribe().await.map(|subscription| self.subscribed(subscription)),
                (Some(_), Some(up_to)) => self.read_back(up_to).await,
                (Some(receiver), None) => match receiver.recv().await {
                    Ok(raw) => return Some(raw),
                    // Lagged: the channel dropped messages this client had
                    // not taken; closed: the hub stopped following, for a
                    // stream created again (checked above).
                    Err(_) => {
                        tracing::info!(from = self.next, "a live stream fell behind; reading back from the stream");
                        self.receiver = None;
                        Ok(())
                    }
                },
            };
            match result {
                Ok(()) => failures = 0,
                Err(err) => {
                    // Once per outage: the connection's own lines say the rest.
                    if failures == 0 {
                        tracing::warn!(from = self.next, error = &err as &dyn std::error::Error, "live stream waiting");
                    }
                    failures += 1;
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    fn subscribed(&mut self, subscription: hub::Subscription) {
        self.receiver = Some(subscription.receiver);
        self.read_up_to = (subscription.after >= self.next).then_some(subscription.after);
    }

    /// Reads the next messages up to `up_to` back into the backlog, or finds
    /// that there are none left to read.
    async fn read_back(&mut self, up_to: u64) -> Result<(), Unavailable> {
        let starts = self.starts();
        let cursors = starts.iter().map(|(filter, from)| (filter.clone(), Start::Seq(*from))).collect();
        let mut scan = self.bus.scan(cursors, READ_BACK);
        while self.backlog.len() < READ_BACK {
            match scan.next().await? {
                Some(raw) if raw.seq <= up_to => self.backlog.push_back(Arc::new(raw)),
                _ => break,
            }
        }
        if self.backlog.is_empty() {
            // The hub follows the leader, and a replica may answer direct
            // gets a moment behind it: only the leader says nothing is left.
            match self.bus.first_on_leader_of(&starts).await?.filter(|raw| raw.seq <= up_to) {
                Some(raw) => self.backlog.push_back(Arc::new(raw)),
                None => self.read_up_to = None,
            }
        }
        Ok(())
    }

    /// This stream's subject filters, each with the first id to read it from.
    fn starts(&self) -> Vec<(String, u64)> {
        let subjects = self.bus.subjects();
        match &self.inbox {
            Some(inbox) => inbox.starts(subjects, self.next - 1),
            None => vec![(subjects.every_message(), self.next)],
        }
    }
}

impl Mailbox {
    /// Follows `agent`'s inbox (or, for `None`, every message) from just
    /// after `after`, or from now on. An `after` beyond the newest message
    /// (say, from before the stream was re-created) starts at the newest.
    pub(crate) async fn live(&self, agent: Option<&AgentName>, after: Option<u64>) -> Result<Live, MailError> {
        let (inbox, mark) = match agent {
            Some(agent) => (Some(self.inbox_of(agent).await?), self.read_mark(agent).await?.mark),
            None => (None, ReadMark::default()),
        };
        let subscription = self.hub.subscribe().await?;
        let next = match after {
            Some(id) if id <= self.bus.seen() => id + 1,
            Some(id) => id.min(self.bus.last_sequence().await?) + 1,
            None => self.bus.last_sequence().await? + 1,
        };
        let mut live = Live {
            bus: self.bus.clone(),
            hub: self.hub.clone(),
            inbox,
            mark,
            next,
            receiver: None,
            read_up_to: None,
            backlog: VecDeque::new(),
            incarnation: self.bus.incarnation(),
        };
        live.subscribed(subscription);
        Ok(live)
    }
}
