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

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use super::Bus;

/// The stream's creation time, as written in records (RFC 3339).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Incarnation(Arc<str>);

impl Incarnation {
    pub(super) fn of(created: OffsetDateTime) -> Self {
        let created = created.to_offset(time::UtcOffset::UTC);
        let text = created.format(&Rfc3339).unwrap_or_else(|_| created.unix_timestamp_nanos().to_string());
        Incarnation(text.into())
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The newest incarnation this adapter has seen (`None`: none yet);
/// followers watch it.
pub(super) struct Current(watch::Sender<Option<Incarnation>>);

impl Default for Current {
    fn default() -> Self {
        Current(watch::Sender::new(None))
    }
}

impl Bus {
    /// The incarnation of the stream as last seen.
    pub(crate) fn incarnation(&self) -> Option<Incarnation> {
        self.incarnation.0.borrow().clone()
    }

    /// Changes of [`Bus::incarnation`].
    pub(super) fn incarnations(&self) -> watch::Receiver<Option<Incarnation>> {
        self.incarnation.0.subscribe()
    }

    /// Whether a record written for `tag` speaks of the current stream: one
    /// without a tag is an older version's, and taken as current.
    pub(crate) fn is_current(&self, tag: Option<&str>) -> bool {
        match (tag, &*self.incarnation.0.borrow()) {
            (Some(tag), Some(current)) => tag == current.as_str(),
            // Compatibility: see docs/architecture.md#compatibility
            _ => true,
        }
    }

    /// Notes the stream's creation time from a stream info (see
    /// [`Current::saw`]).
    pub(super) fn saw_created(&self, created: OffsetDateTime) -> Incarnation {
        self.incarnation.saw(created)
    }
}

impl Current {
    /// Notes the stream's creation time from a stream info; logs when it
    /// changed, which means the stream was re-created.
    pub(super) fn saw(&self, created: OffsetDateTime) -> Incarnation {
        let seen = Incarnation::of(created);
        self.0.send_if_modified(|current| {
            if current.as_ref() == Some(&seen) {
                return false;
            }
            if let Some(before) = current.as_ref() {
                tracing::warn!(
                    before = %before,
                    now = %seen,
                    "the stream was re-created: records of the one before are not trusted"
                );
            }
            *current = Some(seen.clone());
            true
        });
        seen
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
        assert_ne!(Incarnation::of(created), Incarnation::of(created + time::Duration::nanoseconds(1)));
    }
}
