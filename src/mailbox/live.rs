//! `GET /api/stream`: messages as they are stored, replayed from an id first.

use super::{MailError, Mailbox, view};
use crate::bus::Follower;
use crate::message::{Inbox, MessageView, Subjects};
use crate::names::AgentName;
use crate::readstate::ReadMark;

/// Messages as they are stored, for one agent or the whole fleet.
pub struct Live {
    follower: Follower,
    inbox: Option<Inbox>,
    mark: ReadMark,
    subjects: Subjects,
}

impl Live {
    /// The next message; waits for it.
    pub async fn next(&mut self) -> MessageView {
        loop {
            let raw = self.follower.next().await;
            let Some(route) = self.subjects.route(&raw.subject) else {
                continue;
            };
            let read = match &self.inbox {
                Some(inbox) if !inbox.contains(raw.seq, route) => continue,
                Some(_) => self.mark.is_read(raw.seq),
                None => false,
            };
            if let Some(view) = view(&raw, read) {
                return view;
            }
        }
    }
}

impl Mailbox {
    /// Follows `agent`'s inbox (or, for `None`, every message) from just
    /// after `after`, or from now on. An `after` beyond the newest message
    /// (say, from before the stream was re-created) starts at the newest.
    pub async fn live(&self, agent: Option<&AgentName>, after: Option<u64>) -> Result<Live, MailError> {
        let subjects = self.bus.subjects().clone();
        let (filters, inbox, mark) = match agent {
            Some(agent) => {
                let inbox = self.inbox_of(agent).await?;
                let mark = self.read_mark(agent).await?.mark;
                (inbox.filters(&subjects), Some(inbox), mark)
            }
            None => (vec![subjects.every_message()], None, ReadMark::default()),
        };
        let from = match after {
            Some(id) if id <= self.bus.seen() => id + 1,
            Some(id) => id.min(self.bus.last_sequence().await?) + 1,
            None => self.bus.last_sequence().await? + 1,
        };
        Ok(Live { follower: self.bus.follow(filters, from), inbox, mark, subjects })
    }
}
