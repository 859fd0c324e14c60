//! Which incarnation of the stream the adapter looks at.
//!
//! Message ids are stream sequences, so a stream deleted and created again
//! may hand out ids that the fleet's records already speak of. clawbus
//! re-creates a stream above every id its records mention (see
//! `app::high_water`), but an operator may re-create it by hand, or delete
//! the state bucket with it. So every record holding ids (read marks, wake
//! marks, registrations) is written with the incarnation it speaks of: the
//! stream's creation time, which the server keeps with the stream and
//! reports in every stream info. A record of another incarnation is not
//! trusted: it reads as never written, which shows messages unread and wakes
//! again rather than hiding anything. A record without one (written by an
//! older version) is taken as of the current incarnation.
//!
//! The adapter learns the incarnation from each stream info it reads: the
//! health probe's, twice a second (see `health`), at start-up, every
//! heartbeat, and each time a follower opens a consumer.
//! Followers watch it: the client library would recreate a consumer of the
//! new stream after the last id delivered, and skip what is below it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::Bus;

/// The stream's creation time, as written in records (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Incarnation {
    created: OffsetDateTime,
    text: Arc<str>,
}

impl Incarnation {
    pub(super) fn of(created: OffsetDateTime) -> Self {
        let created = created.to_offset(time::UtcOffset::UTC);
        let text = created.format(&Rfc3339).unwrap_or_else(|_| created.unix_timestamp_nanos().to_string());
        Incarnation { created, text: text.into() }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether a record's tag names this incarnation: the same instant,
    /// however the time was written.
    fn is_named_by(&self, tag: &str) -> bool {
        match OffsetDateTime::parse(tag, &Rfc3339) {
            Ok(at) => at == self.created,
            Err(_) => tag == self.as_str(),
        }
    }
}

impl std::fmt::Display for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The newest incarnation this adapter has seen (`None`: none yet), which
/// followers watch, and the highest message id known to exist in it.
pub(super) struct Current {
    incarnation: watch::Sender<Option<Incarnation>>,
    seen: AtomicU64,
}

impl Default for Current {
    fn default() -> Self {
        Current { incarnation: watch::Sender::new(None), seen: AtomicU64::new(0) }
    }
}

impl Bus {
    /// The incarnation of the stream as last seen.
    pub(crate) fn incarnation(&self) -> Option<Incarnation> {
        self.incarnation.incarnation.borrow().clone()
    }

    /// Changes of [`Bus::incarnation`].
    pub(crate) fn incarnations(&self) -> watch::Receiver<Option<Incarnation>> {
        self.incarnation.incarnation.subscribe()
    }

    /// Whether a record written for `tag` speaks of the current stream: one
    /// without a tag is an older version's, and taken as current.
    pub(crate) fn is_current(&self, tag: Option<&str>) -> bool {
        match (tag, &*self.incarnation.incarnation.borrow()) {
            (Some(tag), Some(current)) => current.is_named_by(tag),
            // Compatibility: see docs/architecture.md#compatibility
            _ => true,
        }
    }

    /// Notes the stream's creation time from a stream info (see
    /// [`Current::saw`]).
    pub(super) fn saw_created(&self, created: OffsetDateTime) -> Incarnation {
        self.incarnation.saw(created)
    }

    /// The highest message id known to exist in the current incarnation.
    pub(crate) fn seen(&self) -> u64 {
        self.incarnation.seen.load(Ordering::Relaxed)
    }

    pub(super) fn saw(&self, seq: u64) {
        self.incarnation.seen.fetch_max(seq, Ordering::Relaxed);
    }
}

impl Current {
    /// Notes the stream's creation time from a stream info; logs when it
    /// changed, which means the stream was re-created, and forgets the ids
    /// known in the one before. Only a later creation time replaces the
    /// current one: stream infos asked for before the re-creation may be
    /// answered after it.
    pub(super) fn saw(&self, created: OffsetDateTime) -> Incarnation {
        let seen = Incarnation::of(created);
        let mut newest = seen.clone();
        self.incarnation.send_if_modified(|current| {
            match current.as_ref() {
                Some(now) if now.created >= seen.created => {
                    newest = now.clone();
                    return false;
                }
                Some(before) => tracing::warn!(
                    before = %before,
                    now = %seen,
                    "the stream was re-created: records of the one before are not trusted"
                ),
                None => {}
            }
            self.seen.store(0, Ordering::Relaxed);
            *current = Some(seen.clone());
            true
        });
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_incarnation_is_the_creation_time_to_the_nanosecond_in_utc() {
        let created = OffsetDateTime::parse("2026-11-29T23:33:20.123456789Z", &Rfc3339).unwrap();
        assert_eq!(Incarnation::of(created).as_str(), "2026-11-29T23:33:20.123456789Z");
        let elsewhere = OffsetDateTime::parse("2026-11-30T00:33:20.123456789+01:00", &Rfc3339).unwrap();
        assert_eq!(Incarnation::of(elsewhere), Incarnation::of(created), "the same instant");
        assert!(Incarnation::of(created).is_named_by("2026-11-30T00:33:20.123456789+01:00"));
        assert!(!Incarnation::of(created).is_named_by("2026-11-29T23:33:20.12345679Z"));
        assert_ne!(Incarnation::of(created), Incarnation::of(created + time::Duration::nanoseconds(1)));
    }

    #[test]
    fn only_a_later_stream_replaces_the_current_one_and_its_ids_start_afresh() {
        let current = Current::default();
        let first = OffsetDateTime::parse("2026-11-29T23:33:20Z", &Rfc3339).unwrap();
        let later = first + time::Duration::seconds(30);
        assert_eq!(current.saw(first), Incarnation::of(first));
        current.seen.store(40, Ordering::Relaxed);
        assert_eq!(current.saw(later), Incarnation::of(later), "re-created");
        assert_eq!(current.seen.load(Ordering::Relaxed), 0, "the ids of the stream before are not known to exist");
        current.seen.store(3, Ordering::Relaxed);
        assert_eq!(current.saw(first), Incarnation::of(later), "a late answer about the stream before changes nothing");
        assert_eq!(current.seen.load(Ordering::Relaxed), 3);
    }
}
