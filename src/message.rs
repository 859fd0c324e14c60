//! Messages as stored in JetStream and as shown to agents, and the subject
//! layout that addresses them.
//!
//! Subjects carry both ends of a message, `<p>.msg.<to>.<from>` for direct
//! messages and `<p>.all.<from>` for broadcasts, so that every question the
//! API asks ("bob's inbox", "what alice sent", "the conversation between the
//! two") is a subject filter the server answers from its index, never a scan.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Priority {
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub(crate) fn parse(raw: &str) -> Option<Self> {
        [Self::Normal, Self::High, Self::Urgent].into_iter().find(|p| p.as_str() == raw)
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }
}

/// `to` of a broadcast.
pub(crate) const BROADCAST: &str = "*";

/// The JetStream payload of a message. The id is the stream sequence and the
/// read flag is per reader, so neither is stored here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub from: String,
    pub to: String,
    pub content: String,
    pub priority: Priority,
    pub reply_to: Option<u64>,
    /// The first message of the `reply_to` chain; `None` for a first
    /// message, whose thread is its own id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<u64>,
    /// Replies deep: 0 for a first message. Written even when 0, since
    /// the message object shows it (payloads stored without it read as 0).
    #[serde(default)]
    pub hops: u32,
    pub timestamp: String,
}

impl Envelope {
    /// The envelope a stored message's payload holds, if it holds one.
    pub(crate) fn decode(payload: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(payload).ok()
    }

    pub(crate) fn time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.timestamp, &Rfc3339).ok()
    }
}

/// The message object of the HTTP API: its id, every field of its envelope
/// and the reader's read flag. The envelope is flattened, so a field added
/// to [`Envelope`] is shown by the API without further code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MessageView {
    pub id: u64,
    /// Names its thread even for a first message (its own id): the API
    /// always shows `thread`, the stored form only for replies.
    #[serde(flatten)]
    pub envelope: Envelope,
    pub read: bool,
}

impl MessageView {
    /// The message stored as `id` with `payload`, as a reader with `read`
    /// sees it; `None` if the payload is not a message.
    pub(crate) fn decode(id: u64, payload: &[u8], read: bool) -> Option<MessageView> {
        let mut envelope = Envelope::decode(payload)?;
        envelope.thread.get_or_insert(id);
        Some(MessageView { id, envelope, read })
    }

    /// The thread: the first message of its reply chain.
    pub(crate) fn thread(&self) -> u64 {
        self.envelope.thread.unwrap_or(self.id)
    }
}

/// `2026-11-25T10:00:00.123Z`: UTC with milliseconds, as the old bus wrote.
/// Every send and every wake writes one, so the digits are written
/// directly rather than through `format!`'s padding machinery.
pub(crate) fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut out = String::with_capacity(24);
    let year = at.year();
    // As `{:04}` writes it: the sign counts towards the width.
    if year < 0 {
        out.push('-');
    }
    push_digits(&mut out, year.unsigned_abs(), if year < 0 { 3 } else { 4 });
    let fields = [
        ('-', u32::from(u8::from(at.month())), 2),
        ('-', u32::from(at.day()), 2),
        ('T', u32::from(at.hour()), 2),
        (':', u32::from(at.minute()), 2),
        (':', u32::from(at.second()), 2),
        ('.', u32::from(at.millisecond()), 3),
    ];
    for (separator, value, width) in fields {
        out.push(separator);
        push_digits(&mut out, value, width);
    }
    out.push('Z');
    out
}

/// `value` in at least `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    let digits = value.checked_ilog10().map_or(1, |log| log + 1).max(width);
    for place in (0..digits).rev() {
        out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The digits written directly are those `format!` pads, at every
        /// instant the time crate can hold.
        #[test]
        fn timestamps_are_written_as_format_pads_them(
            nanos in OffsetDateTime::new_utc(time::Date::MIN, time::Time::MIDNIGHT).unix_timestamp_nanos()
                ..=OffsetDateTime::new_utc(time::Date::MAX, time::Time::MAX).unix_timestamp_nanos()
        ) {
            let at = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let padded = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                at.year(), u8::from(at.month()), at.day(), at.hour(), at.minute(), at.second(), at.millisecond()
            );
            proptest::prop_assert_eq!(format_time(at), padded);
        }
    }

    proptest::proptest! {
        /// The message object holds every field of the stored envelope
        /// with its value, and `id`, `read`, `thread` and `hops` always.
        #[test]
        fn a_message_shows_every_envelope_field(
            id in 1..=u64::MAX,
            from in "\\PC{0,12}",
            content in "\\PC{0,40}",
            priority in proptest::sample::select(vec![Priority::Normal, Priority::High, Priority::Urgent]),
            reply_to in proptest::option::of(1..=u64::MAX),
            thread in proptest::option::of(1..=u64::MAX),
            hops in proptest::prelude::any::<u32>(),
            read in proptest::prelude::any::<bool>(),
        ) {
            let envelope = Envelope {
                from, to: BROADCAST.into(), content, priority, reply_to, thread, hops, timestamp: format_time(OffsetDateTime::UNIX_EPOCH),
            };
            let payload = serde_json::to_vec(&envelope).unwrap();
            let view = MessageView::decode(id, &payload, read).unwrap();
            let shown = serde_json::to_value(&view).unwrap();
            let stored = serde_json::to_value(&envelope).unwrap();
            for (field, value) in stored.as_object().unwrap() {
                proptest::prop_assert_eq!(&shown[field], value, "{}", field);
            }
            proptest::prop_assert_eq!(&shown["id"], &serde_json::json!(id));
            proptest::prop_assert_eq!(&shown["read"], &serde_json::json!(read));
            proptest::prop_assert_eq!(&shown["thread"], &serde_json::json!(thread.unwrap_or(id)));
            proptest::prop_assert_eq!(&shown["hops"], &serde_json::json!(hops));
            let again: MessageView = serde_json::from_value(shown.clone()).unwrap();
            proptest::prop_assert_eq!(serde_json::to_value(&again).unwrap(), shown);
        }
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_795_600_800_123_456_789).unwrap();
        let text = format_time(at);
        assert!(text.ends_with(".123Z"), "{text}");
        assert_eq!(OffsetDateTime::parse(&text, &Rfc3339).unwrap().unix_timestamp(), at.unix_timestamp());
        // Years with fewer digits than the width, on both sides of zero.
        for (year, written) in [(5, "0005"), (0, "0000"), (-5, "-005"), (-9999, "-9999")] {
            let at = OffsetDateTime::new_utc(
                time::Date::from_calendar_date(year, time::Month::March, 4).unwrap(),
                time::Time::MIDNIGHT,
            );
            assert_eq!(format_time(at), format!("{written}-03-04T00:00:00.000Z"));
        }
    }
}
