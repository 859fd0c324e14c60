//! The subject layout of the stream: where each message is stored, and
//! which subjects make up one agent's inbox.

use super::Start;
use crate::names::AgentName;

/// Where a stored message went, read back from its subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    Direct { to: &'a str, from: &'a str },
    Broadcast { from: &'a str },
}

impl<'a> Route<'a> {
    pub(crate) fn from(&self) -> &'a str {
        match *self {
            Route::Direct { from, .. } | Route::Broadcast { from } => from,
        }
    }
}

/// The subject layout under one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    pub(crate) fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// Subjects the stream captures. `void` holds the markers that settle
    /// sends whose outcome was unknown (see `bus::publish`).
    pub(crate) fn stream_subjects(&self) -> Vec<String> {
        let p = &self.prefix;
        vec![format!("{p}.msg.*.*"), format!("{p}.all.*"), self.void()]
    }

    pub(crate) fn direct(&self, to: &AgentName, from: &AgentName) -> String {
        format!("{}.msg.{to}.{from}", self.prefix)
    }

    pub(crate) fn broadcast(&self, from: &AgentName) -> String {
        format!("{}.all.{from}", self.prefix)
    }

    pub(crate) fn void(&self) -> String {
        format!("{}.void", self.prefix)
    }

    /// Direct messages to `agent`, from anyone.
    pub(crate) fn to(&self, agent: &AgentName) -> String {
        format!("{}.msg.{agent}.*", self.prefix)
    }

    /// Direct messages from `agent`, to anyone.
    pub(crate) fn sent_by(&self, agent: &AgentName) -> String {
        format!("{}.msg.*.{agent}", self.prefix)
    }

    /// Every broadcast.
    pub(crate) fn broadcasts(&self) -> String {
        format!("{}.all.*", self.prefix)
    }

    /// Every message, direct or broadcast (and no markers).
    pub(crate) fn every_message(&self) -> String {
        format!("{}.*.>", self.prefix)
    }

    pub(crate) fn route<'s>(&self, subject: &'s str) -> Option<Route<'s>> {
        let rest = subject.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        let mut parts = rest.split('.');
        let route = match (parts.next()?, parts.next(), parts.next()) {
            ("msg", Some(to), Some(from)) => Route::Direct { to, from },
            ("all", Some(from), None) => Route::Broadcast { from },
            _ => return None,
        };
        parts.next().is_none().then_some(route)
    }
}

/// Which stored messages belong to one agent's inbox: direct messages to it,
/// and broadcasts by others sent after it registered (`since` is the last
/// stream sequence at registration).
#[derive(Clone, Debug)]
pub(crate) struct Inbox {
    pub agent: AgentName,
    pub since: u64,
}

impl Inbox {
    pub(crate) fn contains(&self, seq: u64, route: Route<'_>) -> bool {
        match route {
            Route::Direct { to, .. } => to == self.agent.as_str(),
            Route::Broadcast { from } => from != self.agent.as_str() && seq > self.since,
        }
    }

    /// Whether the message stored as `seq` under `subject` is in the inbox.
    pub(crate) fn holds(&self, subjects: &Subjects, subject: &str, seq: u64) -> bool {
        subjects.route(subject).is_some_and(|route| self.contains(seq, route))
    }

    /// The subject filters whose union is a superset of the inbox, each
    /// with the first id to read it from to find the inbox's messages after
    /// `after`: broadcasts before registration are skipped by the server,
    /// not read and dropped.
    pub(crate) fn starts(&self, subjects: &Subjects, after: u64) -> Vec<(String, u64)> {
        vec![
            (subjects.to(&self.agent), after.saturating_add(1)),
            (subjects.broadcasts(), after.max(self.since).saturating_add(1)),
        ]
    }

    /// [`Inbox::starts`] as the starts of a scan.
    pub(crate) fn cursors(&self, subjects: &Subjects, after: u64) -> Vec<(String, Start)> {
        self.starts(subjects, after).into_iter().map(|(filter, from)| (filter, Start::Seq(from))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> AgentName {
        AgentName::parse(s).unwrap()
    }

    #[test]
    fn subjects_round_trip_through_routes() {
        let s = Subjects::new("clawbus");
        let direct = s.direct(&name("bob"), &name("alice"));
        assert_eq!(direct, "clawbus.msg.bob.alice");
        assert_eq!(s.route(&direct), Some(Route::Direct { to: "bob", from: "alice" }));
        assert_eq!(s.route(&s.broadcast(&name("alice"))), Some(Route::Broadcast { from: "alice" }));
        for other in ["clawbus.void", "other.msg.a.b", "clawbus.msg.a", "clawbus.msg.a.b.c", "clawbusx.all.a"] {
            assert_eq!(s.route(other), None, "{other}");
        }
    }

    #[test]
    fn inbox_membership_excludes_own_and_older_broadcasts() {
        let inbox = Inbox { agent: name("bob"), since: 10 };
        assert!(inbox.contains(5, Route::Direct { to: "bob", from: "alice" }));
        assert!(!inbox.contains(50, Route::Direct { to: "carol", from: "bob" }));
        assert!(inbox.contains(11, Route::Broadcast { from: "alice" }));
        assert!(!inbox.contains(10, Route::Broadcast { from: "alice" }));
        assert!(!inbox.contains(50, Route::Broadcast { from: "bob" }));
    }
}
