//! Rows as messages: the pure conversion of an old row to what a send would
//! have stored, and the message ids that name an imported row.

use rusqlite::types::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::source::Row;
use crate::message::{BROADCAST, Priority};
use crate::names::AgentName;

/// Why a row is not imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Skip {
    OddId,
    Sender,
    Recipient,
    Content,
    TooLarge,
}

impl Skip {
    pub(super) fn reason(self) -> &'static str {
        match self {
            Skip::OddId => "id is not an integer",
            Skip::Sender => "sender is not a valid agent name",
            Skip::Recipient => "recipient is not a valid agent name",
            Skip::Content => "empty content",
            Skip::TooLarge => "larger than NATS's max_payload",
        }
    }
}

/// What a row's `reply_to` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    None,
    To(i64),
    Unreadable,
}

/// A row that can be stored.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) id: i64,
    pub(super) from: AgentName,
    /// `None`: a broadcast.
    pub(super) to: Option<AgentName>,
    pub(super) content: String,
    pub(super) priority: Priority,
    /// The old priority, when it was not one of ours.
    pub(super) odd_priority: Option<String>,
    pub(super) reply: Reply,
    /// `None`: missing or unreadable (stored with the import's time).
    pub(super) at: Option<OffsetDateTime>,
    pub(super) read: bool,
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Integer(n) => Some(n.to_string()),
        Value::Real(f) => Some(f.to_string()),
        Value::Text(text) => Some(text.clone()),
        Value::Blob(blob) => String::from_utf8(blob.clone()).ok(),
    }
}

/// The row as a send would have made it, or why it cannot be one.
pub(super) fn prepare(row: Row) -> Result<Entry, Skip> {
    let from = text(&row.sender).and_then(|name| AgentName::parse(&name).ok()).ok_or(Skip::Sender)?;
    let to = match text(&row.recipient) {
        None => None,
        Some(name) if name.is_empty() || name == BROADCAST => None,
        Some(name) => Some(AgentName::parse(&name).map_err(|_| Skip::Recipient)?),
    };
    let content = text(&row.content).filter(|c| !c.trim().is_empty()).ok_or(Skip::Content)?;
    let (priority, odd_priority) = match text(&row.priority) {
        None => (Priority::Normal, None),
        Some(raw) if raw.trim().is_empty() => (Priority::Normal, None),
        Some(raw) => match Priority::parse(&raw.trim().to_ascii_lowercase()) {
            Some(priority) => (priority, None),
            None => (Priority::Normal, Some(raw)),
        },
    };
    let reply = match &row.reply_to {
        Value::Null => Reply::None,
        Value::Integer(0) => Reply::None,
        Value::Integer(n) => Reply::To(*n),
        Value::Real(f) if f.fract() == 0.0 && *f != 0.0 => Reply::To(*f as i64),
        Value::Text(t) if t.trim().is_empty() || t.trim() == "0" => Reply::None,
        Value::Text(t) => t.trim().parse().map_or(Reply::Unreadable, Reply::To),
        _ => Reply::Unreadable,
    };
    Ok(Entry {
        id: row.id,
        from,
        to,
        content,
        priority,
        odd_priority,
        reply,
        at: parse_time(&row.created_at),
        read: is_read(&row.read),
    })
}

fn is_read(value: &Value) -> bool {
    match value {
        Value::Integer(n) => *n != 0,
        Value::Real(f) => *f != 0.0,
        Value::Text(t) => matches!(t.trim().to_ascii_lowercase().as_str(), "1" | "true" | "t" | "yes" | "y"),
        Value::Null | Value::Blob(_) => false,
    }
}

/// `created_at` as unix seconds (integer or real; a value beyond the year
/// 5000 is taken as milliseconds), RFC 3339, or an ISO 8601 date and time
/// without offset ("YYYY-MM-DD HH:MM:SS[.f]", as SQLite's CURRENT_TIMESTAMP
/// and Python write), taken as UTC. Years 0000 to 9999.
fn parse_time(value: &Value) -> Option<OffsetDateTime> {
    let at = match value {
        Value::Integer(n) if (*n as f64).abs() >= MILLIS_FROM => {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(*n) * 1_000_000).ok()
        }
        Value::Integer(n) => OffsetDateTime::from_unix_timestamp(*n).ok(),
        Value::Real(f) => unix_seconds(*f),
        Value::Text(text) => parse_time_text(text.trim()),
        Value::Null | Value::Blob(_) => None,
    }?;
    (0..=9999).contains(&at.year()).then_some(at)
}

/// Seconds beyond this are taken as milliseconds (the year 5138 in seconds).
const MILLIS_FROM: f64 = 1e11;

fn unix_seconds(seconds: f64) -> Option<OffsetDateTime> {
    if !seconds.is_finite() {
        return None;
    }
    // Microseconds, rounded: a timestamp is shown to the millisecond, and
    // 0.25 s must not become 0.249999.
    let micros = if seconds.abs() >= MILLIS_FROM { seconds * 1e3 } else { seconds * 1e6 };
    // A value far out of range saturates the cast, and then the product
    // would overflow: out of range either way.
    let nanos = (micros.round() as i128).checked_mul(1000)?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

fn parse_time_text(text: &str) -> Option<OffsetDateTime> {
    if let Ok(seconds) = text.parse::<f64>() {
        return unix_seconds(seconds);
    }
    // "2025-03-01 10:00:00" → "2025-03-01T10:00:00"
    let mut iso = text.to_owned();
    if iso.len() > 10 && iso.as_bytes()[10] == b' ' {
        iso.replace_range(10..11, "T");
    }
    if let Ok(at) = OffsetDateTime::parse(&iso, &Rfc3339) {
        return Some(at);
    }
    let naive = time::macros::format_description!(
        version = 2,
        "[year]-[month]-[day]T[hour]:[minute][optional [:[second][optional [.[subsecond]]]]]"
    );
    time::PrimitiveDateTime::parse(&iso, naive).ok().map(|at| at.assume_utc())
}

/// `Nats-Msg-Id` of row `old` of `source`; `reuse` > 0 when the id was taken
/// by a marker (see `bus::publish`).
pub(super) fn message_id(source: &str, old: i64, reuse: usize) -> String {
    match reuse {
        0 => format!("import/{source}/{old}"),
        n => format!("import/{source}/{old}/{n}"),
    }
}

/// The old id in a `Nats-Msg-Id` of `source`'s import.
pub(super) fn old_id(msg_id: &str, source: &str) -> Option<i64> {
    let rest = msg_id.strip_prefix("import/")?.strip_prefix(source)?.strip_prefix('/')?;
    let (old, reuse) = rest.split_once('/').map_or((rest, None), |(old, reuse)| (old, Some(reuse)));
    if reuse.is_some_and(|reuse| reuse.parse::<usize>().is_err()) {
        return None;
    }
    old.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::format_time;

    fn at(text: &str) -> Option<String> {
        parse_time(&Value::Text(text.into())).map(format_time)
    }

    #[test]
    fn times_in_the_forms_old_buses_wrote() {
        assert_eq!(at("2025-03-01 10:00:00").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        assert_eq!(at("2025-03-01T10:00:00.123456").as_deref(), Some("2025-03-01T10:00:00.123Z"));
        assert_eq!(at("2025-03-01T12:00:00+02:00").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        assert_eq!(at("2025-03-01 10:00:00+00:00").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        assert_eq!(at("2025-03-01T10:00:00Z").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        assert_eq!(at("2025-03-01 10:00").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        assert_eq!(at("1740823200").as_deref(), Some("2025-03-01T10:00:00.000Z"));
        let unix = parse_time(&Value::Integer(1_740_823_200)).map(format_time);
        assert_eq!(unix.as_deref(), Some("2025-03-01T10:00:00.000Z"));
        let real = parse_time(&Value::Real(1_740_823_200.25)).map(format_time);
        assert_eq!(real.as_deref(), Some("2025-03-01T10:00:00.250Z"));
        let millis = parse_time(&Value::Integer(1_740_823_200_250)).map(format_time);
        assert_eq!(millis.as_deref(), Some("2025-03-01T10:00:00.250Z"));
        for bad in ["yesterday", "", "2025-13-01 10:00:00"] {
            assert_eq!(at(bad), None, "{bad}");
        }
        assert_eq!(parse_time(&Value::Null), None);
        assert_eq!(parse_time(&Value::Integer(-100_000_000_000_000)), None, "before the year 0");
    }

    #[test]
    fn message_ids_round_trip_and_cannot_be_a_send() {
        assert_eq!(message_id("ab12", 42, 0), "import/ab12/42");
        assert_eq!(old_id(&message_id("ab12", 42, 0), "ab12"), Some(42));
        assert_eq!(old_id(&message_id("ab12", -7, 3), "ab12"), Some(-7));
        assert_eq!(old_id("import/ab12/42", "ab1"), None);
        assert_eq!(old_id("import/ab12/42/x", "ab12"), None);
        assert_eq!(old_id("import:ab12:42", "ab12"), None, "a send by an agent named import");
        // A send's id is a name (no '/') followed by ':' or '#'.
        assert!(AgentName::parse("import/ab12").is_err());
    }

    fn row(sender: Value, recipient: Value, content: Value) -> Row {
        Row {
            id: 1,
            sender,
            recipient,
            content,
            priority: Value::Text("HIGH".into()),
            reply_to: Value::Integer(0),
            created_at: Value::Null,
            read: Value::Text("true".into()),
        }
    }

    #[test]
    fn rows_are_checked_like_sends() {
        let t = |s: &str| Value::Text(s.into());
        let entry = prepare(row(t("alice"), t("*"), t("hi"))).unwrap();
        assert_eq!((entry.to, entry.priority, entry.reply, entry.read), (None, Priority::High, Reply::None, true));
        assert!(prepare(row(t("alice"), Value::Null, t("hi"))).unwrap().to.is_none());
        assert!(prepare(row(t("alice"), t(""), t("hi"))).unwrap().to.is_none());
        assert_eq!(prepare(row(t("bad name"), t("bob"), t("hi"))).unwrap_err(), Skip::Sender);
        assert_eq!(prepare(row(Value::Null, t("bob"), t("hi"))).unwrap_err(), Skip::Sender);
        assert_eq!(prepare(row(t("alice"), t("bob.x"), t("hi"))).unwrap_err(), Skip::Recipient);
        assert_eq!(prepare(row(t("alice"), t("bob"), t("  "))).unwrap_err(), Skip::Content);
        assert_eq!(prepare(row(t("alice"), t("bob"), Value::Null)).unwrap_err(), Skip::Content);
        let mut odd = row(t("alice"), t("bob"), t("hi"));
        odd.priority = t("low");
        odd.reply_to = t("x");
        let entry = prepare(odd).unwrap();
        assert_eq!(
            (entry.priority, entry.odd_priority.as_deref(), entry.reply),
            (Priority::Normal, Some("low"), Reply::Unreadable)
        );
    }

    /// Any SQLite value, as an old table may hold in any column.
    fn value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::Integer),
            any::<f64>().prop_map(Value::Real),
            ".{0,40}".prop_map(Value::Text),
            "[a-z0-9 :.T+Z-]{0,30}".prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(Value::Blob),
        ]
    }

    proptest::proptest! {
        /// No row panics the conversion, and a row it accepts is one a
        /// send could have made: valid names, content, a time in range.
        #[test]
        fn any_row_converts_or_is_skipped_with_a_reason(
            id in proptest::prelude::any::<i64>(),
            fields in proptest::collection::vec(value(), 7),
        ) {
            let mut fields = fields.into_iter();
            let mut next = || fields.next().expect("seven fields");
            let row = Row {
                id,
                sender: next(),
                recipient: next(),
                content: next(),
                priority: next(),
                reply_to: next(),
                created_at: next(),
                read: next(),
            };
            if let Ok(entry) = prepare(row) {
                proptest::prop_assert_eq!(entry.id, id);
                proptest::prop_assert!(AgentName::parse(entry.from.as_str()).is_ok());
                proptest::prop_assert!(!entry.content.trim().is_empty());
                proptest::prop_assert!(entry.at.is_none_or(|at| (0..=9999).contains(&at.year())));
                proptest::prop_assert!(entry.reply != Reply::To(0), "0 means no reply");
            }
        }

        /// Every row's message id names its row, and no other source's.
        #[test]
        fn message_ids_name_their_row(old in proptest::prelude::any::<i64>(), reuse in 0usize..8) {
            let id = message_id("ab12", old, reuse);
            proptest::prop_assert_eq!(old_id(&id, "ab12"), Some(old));
            proptest::prop_assert_eq!(old_id(&id, "ab1"), None);
            proptest::prop_assert_eq!(old_id(&id, "ab123"), None);
        }
    }
}
