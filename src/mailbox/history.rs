//! `GET /api/history`: what an agent sent and received, read or not.

use time::{Duration, OffsetDateTime};

use super::{MailError, Mailbox};
use crate::bus::{Inbox, Route, Start};
use crate::message::MessageView;
use crate::names::AgentName;

#[derive(Debug, Clone)]
pub(crate) struct HistoryQuery {
    /// Only this thread (the id of its first message).
    pub thread: Option<u64>,
    pub with: Option<AgentName>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub limit: usize,
    pub after: u64,
}

/// Timestamps are written by the sending adapter and seeks use the server's
/// clock: seek this much earlier so that modest clock skew loses nothing.
const CLOCK_SKEW: Duration = Duration::minutes(1);

impl Mailbox {
    pub(crate) async fn history(&self, agent: &AgentName, query: &HistoryQuery) -> Result<Vec<MessageView>, MailError> {
        let inbox = self.inbox_of(agent).await?;
        if query.since.zip(query.until).is_some_and(|(since, until)| since > until) {
            return Ok(Vec::new());
        }
        let mark = self.read_mark(agent).await?.mark;
        let subjects = self.bus.subjects();
        let mut filters = match &query.with {
            None => vec![subjects.to(agent), subjects.sent_by(agent), subjects.broadcasts()],
            Some(other) => vec![
                subjects.direct(agent, other),
                subjects.direct(other, agent),
                subjects.broadcast(agent),
                subjects.broadcast(other),
            ],
        };
        filters.dedup();
        // A thread starts with its first message: nothing before it is in it.
        let after = query.after.max(query.thread.map_or(0, |thread| thread - 1));
        let start = match query.since.and_then(|since| since.checked_sub(CLOCK_SKEW)) {
            // Messages carry no time before the stream existed: an early
            // `since` reads from the start.
            Some(seek) if after == 0 && seek > OffsetDateTime::UNIX_EPOCH => Start::Time(seek),
            _ => Start::Seq(after.saturating_add(1)),
        };
        // Past the last representable time nothing is stored, so no stop.
        let stop = query.until.and_then(|until| until.checked_add(CLOCK_SKEW));
        let mut scan = self.bus.scan(filters.into_iter().map(|filter| (filter, start)).collect(), query.limit + 1);
        let mut messages = Vec::new();
        while messages.len() < query.limit {
            let Some(raw) = scan.next().await? else { break };
            if stop.is_some_and(|stop| raw.stored > stop) {
                break;
            }
            let Some(route) = subjects.route(&raw.subject) else {
                continue;
            };
            if raw.seq <= query.after || !in_history(&inbox, query.with.as_ref(), raw.seq, route) {
                continue;
            }
            // The reader's own sends are not waiting for the reader.
            let read = !inbox.contains(raw.seq, route) || mark.is_read(raw.seq);
            let Some(view) = raw.view(read) else {
                continue;
            };
            let at = view.envelope.time();
            let in_window = query.since.is_none_or(|since| at.is_some_and(|t| t >= since))
                && query.until.is_none_or(|until| at.is_some_and(|t| t <= until))
                && query.thread.is_none_or(|thread| view.thread() == thread);
            if in_window {
                messages.push(view);
            }
        }
        Ok(messages)
    }
}

/// Whether a message belongs to `inbox.agent`'s history, narrowed to the
/// conversation with `with` when given.
fn in_history(inbox: &Inbox, with: Option<&AgentName>, seq: u64, route: Route<'_>) -> bool {
    let me = inbox.agent.as_str();
    match (route, with.map(AgentName::as_str)) {
        (Route::Direct { to, from }, None) => to == me || from == me,
        (Route::Direct { to, from }, Some(other)) => (to == me && from == other) || (to == other && from == me),
        (Route::Broadcast { from }, other) => {
            (from == me || inbox.contains(seq, route)) && other.is_none_or(|other| from == me || from == other)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_membership() {
        let bob = Inbox { agent: AgentName::parse("bob").unwrap(), since: 10 };
        let alice = AgentName::parse("alice").unwrap();
        let direct = |to, from| Route::Direct { to, from };
        assert!(in_history(&bob, None, 1, direct("bob", "alice")));
        assert!(in_history(&bob, None, 1, direct("carol", "bob")));
        assert!(!in_history(&bob, None, 1, direct("carol", "alice")));
        assert!(in_history(&bob, Some(&alice), 1, direct("alice", "bob")));
        assert!(!in_history(&bob, Some(&alice), 1, direct("carol", "bob")));
        // Broadcasts: own always; others' only after registration.
        assert!(in_history(&bob, None, 5, Route::Broadcast { from: "bob" }));
        assert!(!in_history(&bob, None, 5, Route::Broadcast { from: "alice" }));
        assert!(in_history(&bob, Some(&alice), 11, Route::Broadcast { from: "alice" }));
        assert!(!in_history(&bob, Some(&alice), 11, Route::Broadcast { from: "carol" }));
    }
}
