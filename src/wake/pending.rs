//! What an agent has not yet been woken for.
//!
//! A wake covers every message up to an id, so the pending state of an agent
//! is a summary, not a queue: the newest id, who sent, whether anything is
//! urgent. Its size depends on the number of distinct senders, never on the
//! number of messages, which keeps memory flat through a long gateway outage.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use crate::message::Priority;

#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Pending {
    /// Oldest and newest message id covered.
    pub first: u64,
    pub up_to: u64,
    pub senders: BTreeSet<String>,
    pub urgent: bool,
    /// Messages covered, for the coalescing counter.
    pub messages: u64,
    /// Store time of the oldest message covered, for wake latency.
    pub oldest: Option<OffsetDateTime>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0
    }

    pub(super) fn add(&mut self, seq: u64, from: &str, priority: Priority, stored: OffsetDateTime) {
        self.first = if self.is_empty() { seq } else { self.first.min(seq) };
        self.up_to = self.up_to.max(seq);
        if !self.senders.contains(from) {
            self.senders.insert(from.to_owned());
        }
        self.urgent |= priority == Priority::Urgent;
        self.messages += 1;
        self.oldest = Some(self.oldest.map_or(stored, |oldest| oldest.min(stored)));
    }

    /// Folds `other` in: the result covers both.
    pub(super) fn merge(&mut self, other: Pending) {
        self.first = match (self.is_empty(), other.is_empty()) {
            (true, _) => other.first,
            (false, true) => self.first,
            (false, false) => self.first.min(other.first),
        };
        self.up_to = self.up_to.max(other.up_to);
        self.senders.extend(other.senders);
        self.urgent |= other.urgent;
        self.messages += other.messages;
        self.oldest = match (self.oldest, other.oldest) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_covers_both_and_stays_small() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let mut a = Pending::default();
        for seq in 1..=1000 {
            a.add(seq, "alice", Priority::Normal, t0 + time::Duration::seconds(seq as i64));
        }
        let mut b = Pending::default();
        b.add(1001, "carol", Priority::Urgent, t0);
        a.merge(b);
        assert_eq!((a.first, a.up_to), (1, 1001));
        assert_eq!(a.senders.len(), 2);
        assert!(a.urgent);
        assert_eq!(a.messages, 1001);
        assert_eq!(a.oldest, Some(t0));
    }
}
