//! `clawbus import`: brings the old Flask + SQLite bus's messages along, with
//! their read state, once.
//!
//! (One long file, on purpose for now: reading the old schema, the
//! idempotent, interruptible import and its summary are one pipeline whose
//! parts share the same row and progress types; splitting it into
//! `source`, `rows` and `importer` modules is the next step.)
//!
//! ```text
//! clawbus import --config provisioning.toml --sqlite bus.db [--table messages] [--id-column id] ...
//! ```
//!
//! The database is opened read-only and read in pages of 1,000 rows, in old
//! id order (short reads: an old bus still running keeps writing). Each row
//! becomes a message on the stream, exactly as a send would have stored it
//! (subject `msg.<to>.<from>` or `all.<from>`, the [`Envelope`] as payload,
//! through [`Bus::store`], so every publish is settled truthfully), with the
//! row's `created_at` as its timestamp. `reply_to` is mapped to the new id of
//! the replied-to row, with the thread and depth a send would have given it;
//! a reply to a row that was not imported (skipped, missing, later in the
//! table) gets `reply_to: null` and is counted. Unknown priorities are
//! stored as `normal` and counted. Rows are skipped, with a counted reason,
//! when the sender or recipient is not a valid agent name, the content is
//! empty, the id is not an integer, or NATS refuses the size. Recipients
//! need not be registered for their mail to be stored.
//!
//! # Idempotency across runs
//!
//! An import is named by its *source*: a stable hash (FNV-1a, 64 bits) of
//! the table name and the first row (lowest id: its id, sender, recipient,
//! content and time), or `--source NAME`. Not the file's path: a copy of the
//! database elsewhere is the same source, and a new database at the same
//! path is not. The first row is what stays while the old bus keeps adding
//! rows, so a later run over the grown database continues the import. (If
//! the old bus deletes its oldest rows, pass the source the earlier run
//! printed with `--source`.)
//!
//! 1. Every message gets `Nats-Msg-Id: import/<source>/<old id>`, which no
//!    send can produce (a send's id starts with an agent name and `:` or
//!    `#`; names have no `/`). Within the stream's duplicate window a repeat
//!    is answered "duplicate" and resolves to the stored copy.
//! 2. The state bucket keeps a progress record, `import.<source>`:
//!    `start` (the stream's next id when the first run began: all of the
//!    import's messages are at or after it), `through` (every row up to this
//!    old id is settled), `last` (the highest new id the import has used)
//!    and `open` (a run is going on, or stopped without finishing). Each run
//!    marks it open, and after each page writes `through` and `last`
//!    (compare-and-set: a second import of the same source running at the
//!    same time makes one of them stop).
//! 3. A run first rebuilds the old→new id map from the stream itself:
//!    messages from `start` up to `last` (to the stream's end when the
//!    record is open), whose `Nats-Msg-Id` names this source. A row found
//!    there is already imported; so is a row up to `through` whose message
//!    is gone because it expired (then nothing is stored for it again). A
//!    row up to `through` that is not there while nothing has expired was
//!    skipped before (and corrected in the database since): it is stored.
//!
//! Interruption: a row stored but not yet recorded (the process died
//! between a publish and the page's progress write) left the record open,
//! and its message sits after `last`, so the next run finds it in the scan
//! (and, within the duplicate window, the publish of the same id would find
//! it too). A row whose publish never landed is simply not found and is
//! stored. Either way no row is stored twice.
//!
//! # Read state
//!
//! Rows with `read = 1` are acknowledged after storing (ids batched per
//! recipient, 10,000 at most per ack), through [`Mailbox::ack`], as their
//! recipient would have, so read marks stay a floor plus exceptions. Only
//! registered agents have read marks: nothing is registered here, and the
//! read state of mail for an agent no adapter has registered yet is counted
//! as not applied. Start the adapters before importing; a later run applies
//! what was missed: every run looks at the read state of every imported
//! row, and acknowledges those read in the old database and not yet here
//! (so a row read in the old bus since the last run is marked read too;
//! nothing is ever marked unread). Marks already set cost no ack, so a
//! run over an imported database writes nothing.
//! A broadcast had one `read` flag in the old bus, so a read broadcast is
//! acknowledged for every registered agent whose inbox holds it (every agent
//! but its sender registered before it was stored): as far as the old bus
//! could tell, it had been dealt with, and leaving it unread would fill
//! every inbox with old announcements. An unread broadcast stays unread for
//! all of them.
//!
//! # Caveats
//!
//! - Messages are stored now: the stream's `max_age` counts from the import,
//!   and conversation safety limits that count "the last minute" count
//!   imported messages for a minute.
//! - Agents registered after the import do not find imported broadcasts in
//!   their inboxes (as for any broadcast sent before they registered).
//! - Wake-ups follow as for any stored message.
//! - Rows are published in old id order, up to 128 at a time; a publish
//!   repeated after a lost connection can land after its neighbours.
//!
//! Exit codes: 0 done; 1 a failure while importing (the summary says what got
//! in; running again continues); 2 bad arguments or config, or a database
//! that cannot be read; 5 NATS not reachable (nothing was done).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::{Instant, sleep};

use super::chain;
use super::client::Exit;
use crate::bus::{self, Bus, Outgoing, SendError, Start, Stored, Unreached};
use crate::config::Config;
use crate::mailbox::{Ack, MailError, Mailbox, Rules, Threading, envelope_of};
use crate::message::{BROADCAST, Envelope, Inbox, Priority, Route, format_time};
use crate::names::AgentName;
use crate::readstate;
use crate::registry::Registry;

/// Rows read, stored, acknowledged and recorded at a time; a progress line
/// follows each page.
const PAGE: usize = 1000;
/// Publishes waiting for JetStream at once.
const WINDOW: usize = 128;
/// Ids per acknowledgement (the API's limit).
const ACK_BATCH: usize = 10_000;
/// Acknowledgements (for different agents) at once.
const ACKS_AT_ONCE: usize = 8;
/// How long to wait for NATS at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one step (a row's publish, an ack, a progress write) is
/// retried while NATS says "not now".
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(30);
/// Pause between those retries.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// New ids tried when a row's message id is held by something else (a
/// marker that settled an earlier attempt as not stored).
const MAX_ID_REUSES: usize = 8;
/// Examples of skipped rows named in the summary, per reason.
const EXAMPLES: usize = 5;

#[derive(clap::Args)]
pub struct Args {
    /// The old bus's SQLite database (opened read-only).
    #[arg(long, value_name = "FILE")]
    sqlite: PathBuf,
    /// The table of messages.
    #[arg(long, default_value = "messages")]
    table: String,
    /// Message id (integers; the order of import).
    #[arg(long, default_value = "id")]
    id_column: String,
    #[arg(long, default_value = "sender")]
    sender_column: String,
    /// An agent name; `*`, empty or NULL for a broadcast.
    #[arg(long, default_value = "recipient")]
    recipient_column: String,
    #[arg(long, default_value = "content")]
    content_column: String,
    /// normal, high or urgent (anything else is stored as normal); '' if the table has none.
    #[arg(long, default_value = "priority")]
    priority_column: String,
    /// The old id of the message answered; '' if the table has none.
    #[arg(long, default_value = "reply_to")]
    reply_to_column: String,
    /// Unix seconds, RFC 3339, or "YYYY-MM-DD HH:MM:SS" (UTC); '' if the table has none.
    #[arg(long, default_value = "created_at")]
    created_at_column: String,
    /// 1 when the recipient had read it; '' if the table has none.
    #[arg(long, default_value = "read")]
    read_column: String,
    /// Name this import instead of fingerprinting the table's first row
    /// (to continue an earlier import, give the source it printed).
    #[arg(long, value_name = "NAME")]
    source: Option<String>,
}

pub fn run(config: Config, args: Args) -> ExitCode {
    if config.nats.least_privilege {
        eprintln!(
            "clawbus: import publishes as every sender of the old bus and writes every agent's read marks, which a \
             host's least-privilege NATS user may not: run it with the provisioning user's config (the one for \
             `clawbus setup`) and nats.least_privilege = false (or CLAWBUS_NATS__LEAST_PRIVILEGE=false)"
        );
        return Exit::Usage.into();
    }
    let source = match Source::open(&args) {
        Ok(source) => source,
        Err(why) => {
            eprintln!("clawbus: {why}");
            return Exit::Usage.into();
        }
    };
    let name = match &args.source {
        Some(name) if valid_source(name) => name.clone(),
        Some(name) => {
            eprintln!("clawbus: --source {name:?} may contain only letters, digits, '_' and '-' (1 to 64)");
            return Exit::Usage.into();
        }
        None => match source.fingerprint() {
            Ok(Some(fingerprint)) => fingerprint,
            Ok(None) => {
                println!("nothing to import: table {} of {} has no rows", args.table, args.sqlite.display());
                return Exit::Ok.into();
            }
            Err(err) => {
                eprintln!("clawbus: cannot read {}: {err}", args.sqlite.display());
                return Exit::Usage.into();
            }
        },
    };
    let started = std::time::Instant::now();
    let (tally, failure) = super::runtime().block_on(import(&config, &source, name));
    let Some(mut tally) = tally else {
        let failure = failure.expect("a failure when nothing was done");
        eprintln!("clawbus: {}", failure.message);
        return failure.exit.into();
    };
    tally.seconds = started.elapsed().as_secs_f64();
    print!("{}", tally.summary(&source, failure.as_ref()));
    match failure {
        None => Exit::Ok.into(),
        Some(failure) => {
            eprintln!("clawbus: import failed: {}", failure.message);
            failure.exit.into()
        }
    }
}

fn valid_source(name: &str) -> bool {
    AgentName::parse(name).is_ok()
}

// ---------------------------------------------------------------------------
// The old database.

/// Where each field of a message is, in the old table.
struct Columns {
    id: String,
    sender: String,
    recipient: String,
    content: String,
    priority: Option<String>,
    reply_to: Option<String>,
    created_at: Option<String>,
    read: Option<String>,
}

/// The old bus's table, open read-only.
struct Source {
    conn: Connection,
    path: PathBuf,
    table: String,
    /// The select list and table, for the page queries.
    select: String,
    id: String,
    /// Rows in the table, and those among them whose id is not an integer.
    total: u64,
    odd_ids: u64,
}

/// One row, as stored in the old table.
struct Row {
    id: i64,
    sender: Value,
    recipient: Value,
    content: Value,
    priority: Value,
    reply_to: Value,
    created_at: Value,
    read: Value,
}

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl Source {
    /// Opens the database and checks that the table and columns exist.
    fn open(args: &Args) -> Result<Source, String> {
        let path = &args.sqlite;
        let shown = path.display();
        if !path.is_file() {
            return Err(format!("{shown}: no such file (--sqlite)"));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|err| format!("cannot open {shown}: {err}"))?;
        // The old bus may be writing: wait for its locks rather than fail.
        let _ = conn.busy_timeout(Duration::from_secs(10));
        let unreadable = |err: rusqlite::Error| format!("cannot read {shown} as an SQLite database: {err}");
        let present: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .and_then(|mut stmt| stmt.query_map([&args.table], |row| row.get(0))?.collect())
            .map_err(unreadable)?;
        if present.is_empty() {
            let tables: Vec<String> = conn
                .prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")
                .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
                .map_err(unreadable)?;
            let tables = if tables.is_empty() { "none".into() } else { tables.join(", ") };
            return Err(format!("{shown} has no table {:?} (--table); its tables: {tables}", args.table));
        }
        let find = |name: &str, flag: &str, optional: bool| -> Result<Option<String>, String> {
            if optional && name.is_empty() {
                return Ok(None);
            }
            match present.iter().find(|column| column.eq_ignore_ascii_case(name)) {
                Some(column) => Ok(Some(column.clone())),
                None => Err(format!(
                    "table {:?} has no column {name:?} (--{flag}{}); its columns: {}",
                    args.table,
                    if optional { ", or '' if it has none" } else { "" },
                    present.join(", ")
                )),
            }
        };
        let required = |name: &str, flag: &str| find(name, flag, false).map(|c| c.expect("a required column"));
        let columns = Columns {
            id: required(&args.id_column, "id-column")?,
            sender: required(&args.sender_column, "sender-column")?,
            recipient: required(&args.recipient_column, "recipient-column")?,
            content: required(&args.content_column, "content-column")?,
            priority: find(&args.priority_column, "priority-column", true)?,
            reply_to: find(&args.reply_to_column, "reply-to-column", true)?,
            created_at: find(&args.created_at_column, "created-at-column", true)?,
            read: find(&args.read_column, "read-column", true)?,
        };
        let optional = |column: &Option<String>| column.as_deref().map_or("NULL".into(), quote);
        let id = quote(&columns.id);
        let select = format!(
            "SELECT {id}, {}, {}, {}, {}, {}, {}, {} FROM {}",
            quote(&columns.sender),
            quote(&columns.recipient),
            quote(&columns.content),
            optional(&columns.priority),
            optional(&columns.reply_to),
            optional(&columns.created_at),
            optional(&columns.read),
            quote(&args.table),
        );
        let table = quote(&args.table);
        let count = |filter: &str| -> Result<u64, String> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}{filter}"), [], |row| row.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(unreadable)
        };
        let total = count("")?;
        let odd_ids = count(&format!(" WHERE typeof({id}) != 'integer'"))?;
        let source = Source { conn, path: path.clone(), table: args.table.clone(), select, id, total, odd_ids };
        // Every column can be read (a view over a missing table fails here).
        source.page(None, 1).map_err(unreadable)?;
        Ok(source)
    }

    /// Up to `limit` rows with integer ids after `after`, in id order.
    fn page(&self, after: Option<i64>, limit: usize) -> rusqlite::Result<Vec<Row>> {
        let (select, id) = (&self.select, &self.id);
        let sql = match after {
            None => format!("{select} WHERE typeof({id}) = 'integer' ORDER BY {id} LIMIT ?1"),
            Some(_) => format!("{select} WHERE typeof({id}) = 'integer' AND {id} > ?2 ORDER BY {id} LIMIT ?1"),
        };
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let read = |row: &rusqlite::Row<'_>| {
            Ok(Row {
                id: row.get(0)?,
                sender: row.get(1)?,
                recipient: row.get(2)?,
                content: row.get(3)?,
                priority: row.get(4)?,
                reply_to: row.get(5)?,
                created_at: row.get(6)?,
                read: row.get(7)?,
            })
        };
        let limit = limit as i64;
        match after {
            None => stmt.query_map([limit], read)?.collect(),
            Some(after) => stmt.query_map([limit, after], read)?.collect(),
        }
    }

    /// The source's name: a hash of the table's name and its first row
    /// (`None` for an empty table).
    fn fingerprint(&self) -> rusqlite::Result<Option<String>> {
        let Some(first) = self.page(None, 1)?.into_iter().next() else { return Ok(None) };
        let mut hash = Fnv::default();
        hash.text(&self.table);
        hash.value(&Value::Integer(first.id));
        for value in [&first.sender, &first.recipient, &first.content, &first.created_at] {
            hash.value(value);
        }
        Ok(Some(format!("{:016x}", hash.0)))
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms (std's hasher is
/// not), which the source's name must be.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Length-prefixed, so that no two sequences of fields hash alike.
    fn text(&mut self, text: &str) {
        self.tagged(b't', text.as_bytes());
    }

    fn tagged(&mut self, tag: u8, bytes: &[u8]) {
        self.bytes(&[tag]);
        self.bytes(&(bytes.len() as u64).to_le_bytes());
        self.bytes(bytes);
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Null => self.bytes(b"n"),
            Value::Integer(n) => self.tagged(b'i', &n.to_le_bytes()),
            Value::Real(f) => self.tagged(b'r', &f.to_bits().to_le_bytes()),
            Value::Text(text) => self.text(text),
            Value::Blob(blob) => self.tagged(b'b', blob),
        }
    }
}

// ---------------------------------------------------------------------------
// Rows as messages.

/// Why a row is not imported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    OddId,
    Sender,
    Recipient,
    Content,
    TooLarge,
}

impl Skip {
    fn reason(self) -> &'static str {
        match self {
            Skip::OddId => "id is not an integer",
            Skip::Sender => "sender is not a valid agent name",
            Skip::Recipient => "recipient is not a valid agent name",
            Skip::Content => "empty content",
            Skip::TooLarge => "larger than NATS's max_payload",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    None,
    To(i64),
    Unreadable,
}

/// A row that can be stored.
#[derive(Debug)]
struct Entry {
    id: i64,
    from: AgentName,
    /// `None`: a broadcast.
    to: Option<AgentName>,
    content: String,
    priority: Priority,
    /// The old priority, when it was not one of ours.
    odd_priority: Option<String>,
    reply: Reply,
    /// `None`: missing or unreadable (stored with the import's time).
    at: Option<OffsetDateTime>,
    read: bool,
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

fn prepare(row: Row) -> Result<Entry, Skip> {
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
    OffsetDateTime::from_unix_timestamp_nanos(micros.round() as i128 * 1000).ok()
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
fn message_id(source: &str, old: i64, reuse: usize) -> String {
    match reuse {
        0 => format!("import/{source}/{old}"),
        n => format!("import/{source}/{old}/{n}"),
    }
}

/// The old id in a `Nats-Msg-Id` of `source`'s import.
fn old_id(msg_id: &str, source: &str) -> Option<i64> {
    let rest = msg_id.strip_prefix("import/")?.strip_prefix(source)?.strip_prefix('/')?;
    let (old, reuse) = rest.split_once('/').map_or((rest, None), |(old, reuse)| (old, Some(reuse)));
    if reuse.is_some_and(|reuse| reuse.parse::<usize>().is_err()) {
        return None;
    }
    old.parse().ok()
}

// ---------------------------------------------------------------------------
// The progress record.

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Progress {
    /// What is imported, for people reading the bucket.
    database: String,
    table: String,
    /// The stream's next id when the first run began.
    start: u64,
    /// Every row up to this old id is settled (stored or skipped).
    through: Option<i64>,
    /// The highest new id of the import's messages.
    last: u64,
    /// A run is going on, or stopped before finishing: messages of rows
    /// after `through` may exist after `last`.
    open: bool,
    updated_at: String,
}

/// A failed import: how to exit, and why.
#[derive(Debug)]
struct Failure {
    exit: Exit,
    message: String,
}

fn failed(message: impl Into<String>) -> Failure {
    Failure { exit: Exit::Refused, message: message.into() }
}

// ---------------------------------------------------------------------------
// The run.

/// What a run did, for the summary.
#[derive(Debug, Default)]
struct Tally {
    source: String,
    stream: String,
    rows: u64,
    stored: u64,
    first_new: Option<u64>,
    last_new: Option<u64>,
    already: u64,
    /// Of `already`: rows whose message has expired from the stream.
    gone: u64,
    skipped: BTreeMap<Skip, (u64, Vec<i64>)>,
    odd_priorities: BTreeMap<String, u64>,
    replies_unmapped: u64,
    times_unreadable: u64,
    read_rows: u64,
    marks_applied: u64,
    marks_already: u64,
    marks_unregistered: BTreeMap<String, u64>,
    marks_missing: u64,
    seconds: f64,
}

impl Tally {
    fn skip(&mut self, skip: Skip, id: Option<i64>, count: u64) {
        let (n, examples) = self.skipped.entry(skip).or_default();
        *n += count;
        if let Some(id) = id
            && examples.len() < EXAMPLES
        {
            examples.push(id);
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped.values().map(|(n, _)| n).sum()
    }

    fn stored(&mut self, seq: u64) {
        self.stored += 1;
        self.first_new = Some(self.first_new.map_or(seq, |first| first.min(seq)));
        self.last_new = Some(self.last_new.map_or(seq, |last| last.max(seq)));
    }

    fn summary(&self, source: &Source, failure: Option<&Failure>) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "import of {} (table {}, source {}) into stream {}: {}",
            source.path.display(),
            source.table,
            self.source,
            self.stream,
            if failure.is_some() { "FAILED, incomplete" } else { "done" }
        );
        let _ = writeln!(w, "rows read: {}", self.rows);
        let range = match (self.first_new, self.last_new) {
            (Some(first), Some(last)) => format!(" (ids {first} to {last})"),
            _ => String::new(),
        };
        let _ = writeln!(w, "stored: {}{range}", self.stored);
        let gone = if self.gone > 0 { format!(" ({} of them expired from the stream)", self.gone) } else { "".into() };
        let _ = writeln!(w, "already imported: {}{gone}", self.already);
        let _ = writeln!(w, "skipped: {}", self.skipped());
        for (skip, (n, examples)) in &self.skipped {
            let ids: Vec<String> = examples.iter().map(i64::to_string).collect();
            let ids = if ids.is_empty() { String::new() } else { format!(" (rows {})", ids.join(", ")) };
            let _ = writeln!(w, "  {}: {n}{ids}", skip.reason());
        }
        let odd: u64 = self.odd_priorities.values().sum();
        let values: Vec<String> = self.odd_priorities.keys().take(EXAMPLES).map(|p| format!("{p:?}")).collect();
        let values = if values.is_empty() { String::new() } else { format!(" ({})", values.join(", ")) };
        let _ = writeln!(w, "unknown priority, stored as normal: {odd}{values}");
        let _ = writeln!(w, "reply_to not imported, stored as null: {}", self.replies_unmapped);
        let _ = writeln!(w, "created_at missing or unreadable, stored with the import time: {}", self.times_unreadable);
        let _ = writeln!(w, "rows marked read in the old bus: {}", self.read_rows);
        let _ = writeln!(w, "read marks applied: {} (already read: {})", self.marks_applied, self.marks_already);
        let unregistered: u64 = self.marks_unregistered.values().sum();
        let missing = self.marks_missing;
        let _ = write!(w, "read marks not applied: {}", unregistered + missing);
        if unregistered > 0 {
            let mut names: Vec<String> =
                self.marks_unregistered.iter().take(EXAMPLES).map(|(a, n)| format!("{a} ×{n}")).collect();
            if self.marks_unregistered.len() > EXAMPLES {
                names.push(format!("{} more agents", self.marks_unregistered.len() - EXAMPLES));
            }
            let _ = write!(
                w,
                " ({unregistered} for unregistered agents: {}; start their adapters, then run the import again)",
                names.join(", ")
            );
        }
        if missing > 0 {
            let _ = write!(w, " ({missing} messages not found in the stream or the inbox)");
        }
        let _ = writeln!(w);
        let rate = if self.seconds > 0.0 { self.rows as f64 / self.seconds } else { 0.0 };
        let _ = writeln!(w, "time: {:.1} s ({rate:.0} rows/s)", self.seconds);
        out
    }
}

/// A stored message, and where it sits in its thread.
#[derive(Clone, Copy, Debug)]
struct Placed {
    id: u64,
    threading: Threading,
}

/// A read row to acknowledge.
struct ReadRow {
    seq: u64,
    from: AgentName,
    to: Option<AgentName>,
}

/// How one publish ended.
enum Outcome {
    New(u64),
    /// An earlier run's (or attempt's) copy holds the id.
    Found(Placed),
    TooLarge,
    Failed(String),
}

/// One row in flight.
struct Pending {
    entry: Entry,
    threading: Threading,
    outcome: Outcome,
}

struct Importer<'a> {
    source: &'a Source,
    bus: Bus,
    registry: Arc<Registry>,
    mailbox: Mailbox,
    name: String,
    key: String,
    progress: Progress,
    revision: u64,
    /// Old id → its message, for the rows of this import found or stored.
    placed: HashMap<i64, Placed>,
    /// Whether messages from `start` on may have expired.
    expired: bool,
    /// Registered agents, for the read state of broadcasts.
    inboxes: Vec<Inbox>,
    window: usize,
    tally: Tally,
}

/// Runs the import. `None` as tally: nothing was done.
async fn import(config: &Config, source: &Source, name: String) -> (Option<Tally>, Option<Failure>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,async_nats=error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut importer = match Importer::start(config, source, name).await {
        Ok(importer) => importer,
        Err(failure) => return (None, Some(failure)),
    };
    let result = importer.run().await;
    (Some(importer.tally), result.err())
}

impl<'a> Importer<'a> {
    /// Reaches NATS, reads the registry and the progress record, and
    /// rebuilds the map of what earlier runs imported.
    async fn start(config: &Config, source: &'a Source, name: String) -> Result<Importer<'a>, Failure> {
        let nats = bus::connect_within(config, CONNECT_TIMEOUT).await.map_err(|err| match err {
            Unreached::Setup(_) => Failure { exit: Exit::Usage, message: chain(&err) },
            Unreached::Timeout { .. } => {
                Failure { exit: Exit::Unavailable, message: format!("{err}; nothing was imported") }
            }
        })?;
        let unavailable = |what: &str, err: &dyn std::error::Error| Failure {
            exit: Exit::Unavailable,
            message: format!("{what}: {}; nothing was imported", chain(err)),
        };
        let bus = Bus::open(nats, config).await.map_err(|err| unavailable("cannot open the bus", &err))?;
        let registry = Arc::new(Registry::new(bus.clone(), config.host.clone()));
        let mailbox = Mailbox::new(bus.clone(), registry.clone(), Rules::default());
        let inboxes = registry
            .list()
            .await
            .map_err(|err| unavailable("cannot read the registry", &err))?
            .into_iter()
            .map(|status| status.inbox)
            .collect();
        let key = format!("import.{name}");
        let (progress, revision) =
            load_progress(&bus, &key, source).await.map_err(|err| Failure { exit: Exit::Refused, message: err })?;
        let tally = Tally { source: name.clone(), stream: config.nats.stream.clone(), ..Tally::default() };
        let mut importer = Importer {
            source,
            bus,
            registry,
            mailbox,
            name,
            key,
            progress,
            revision,
            placed: HashMap::new(),
            expired: false,
            inboxes,
            window: WINDOW.min(config.nats.max_sends_in_flight).max(1),
            tally,
        };
        let (started, open, last) = (importer.progress.start, importer.progress.open, importer.progress.last);
        eprintln!(
            "clawbus import: {} rows in table {} of {}, source {}{}",
            source.total,
            source.table,
            source.path.display(),
            importer.name,
            if importer.progress.through.is_some() || last > 0 { " (continuing an earlier import)" } else { "" }
        );
        // Marked open before anything is stored; a concurrent run of the
        // same source loses its next compare-and-set.
        importer.save(true).await?;
        let until = if open { u64::MAX } else { last };
        if until >= started {
            importer
                .rebuild(started, until)
                .await
                .map_err(|err| failed(format!("cannot read the stream: {}", chain(&err))))?;
        }
        let first = importer.bus.count(&importer.bus.subjects().every_message(), 1).await;
        let first = first.map_err(|err| failed(format!("cannot read the stream: {}", chain(&err))))?.first;
        // Nothing expires after `start` while an older message is still
        // there (messages expire oldest first).
        importer.expired = first.is_none_or(|first| first > started);
        Ok(importer)
    }

    /// Finds the messages of this source stored from `from` to `until`.
    async fn rebuild(&mut self, from: u64, until: u64) -> Result<(), bus::Unavailable> {
        let filter = self.bus.subjects().every_message();
        let mut scan = self.bus.scan(vec![(filter, Start::Seq(from))], 1024);
        while let Some(raw) = scan.next().await? {
            if raw.seq > until {
                break;
            }
            let msg_id = raw.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_owned());
            let Some(old) = msg_id.as_deref().and_then(|id| old_id(id, &self.name)) else { continue };
            let Some(envelope) = envelope_of(&raw) else { continue };
            let placed = Placed { id: raw.seq, threading: Threading::of(&envelope) };
            self.placed.entry(old).or_insert(placed);
            self.progress.last = self.progress.last.max(raw.seq);
        }
        Ok(())
    }

    /// Writes the progress record (compare-and-set).
    async fn save(&mut self, open: bool) -> Result<(), Failure> {
        self.progress.open = open;
        self.progress.updated_at = format_time(self.bus.now());
        let value: Bytes = serde_json::to_vec(&self.progress).expect("a record serializes").into();
        let patience = Instant::now() + UNAVAILABLE_PATIENCE;
        let mut in_doubt = false;
        loop {
            match self.bus.kv().update(&self.key, value.clone(), self.revision).await {
                Ok(revision) => {
                    self.revision = revision;
                    return Ok(());
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // An attempt whose answer was lost may have landed.
                    if in_doubt
                        && let Ok(Some(entry)) = self.bus.kv().entry(&self.key).await
                        && entry.value == value
                    {
                        self.revision = entry.revision;
                        return Ok(());
                    }
                    return Err(failed(format!(
                        "the progress record {} changed meanwhile: another import of the same source is running",
                        self.key
                    )));
                }
                Err(_) if Instant::now() < patience => {
                    in_doubt = true;
                    sleep(RETRY_PAUSE).await;
                }
                Err(err) => return Err(failed(format!("cannot record the progress: {}", chain(&err)))),
            }
        }
    }

    async fn run(&mut self) -> Result<(), Failure> {
        if self.source.odd_ids > 0 {
            self.tally.rows += self.source.odd_ids;
            self.tally.skip(Skip::OddId, None, self.source.odd_ids);
        }
        let mut after = None;
        loop {
            let rows = self
                .source
                .page(after, PAGE)
                .map_err(|err| failed(format!("cannot read {}: {err}", self.source.path.display())))?;
            let Some(last) = rows.last() else { break };
            after = Some(last.id);
            self.page(rows).await?;
            let t = &self.tally;
            eprintln!(
                "clawbus import: {}/{} rows ({} stored, {} already imported, {} skipped)",
                t.rows,
                self.source.total,
                t.stored,
                t.already,
                t.skipped()
            );
        }
        self.save(false).await
    }

    /// Stores one page of rows, applies their read state, and records it.
    async fn page(&mut self, rows: Vec<Row>) -> Result<(), Failure> {
        let mut window = FuturesOrdered::new();
        let mut in_flight: HashSet<i64> = HashSet::new();
        let mut reads = Vec::new();
        let mut through = self.progress.through;
        let mut failure = None;
        for row in rows {
            // Everything before this row has been settled.
            let previous = through;
            through = Some(row.id);
            self.tally.rows += 1;
            let entry = match prepare(row) {
                Ok(entry) => entry,
                Err(skip) => {
                    self.tally.skip(skip, Some(through.expect("this row")), 1);
                    continue;
                }
            };
            if entry.read {
                self.tally.read_rows += 1;
            }
            if let Some(placed) = self.placed.get(&entry.id) {
                self.tally.already += 1;
                if entry.read {
                    reads.push(ReadRow { seq: placed.id, from: entry.from, to: entry.to });
                }
                continue;
            }
            if self.expired && self.progress.through.is_some_and(|t| entry.id <= t) {
                self.tally.already += 1;
                self.tally.gone += 1;
                if entry.read {
                    self.tally.marks_missing += 1;
                }
                continue;
            }
            // A reply waits for the row it answers, if that is in flight.
            if let Reply::To(parent) = entry.reply {
                while in_flight.contains(&parent) {
                    let Some(done) = window.next().await else { break };
                    self.settle(done, &mut in_flight, &mut reads, &mut failure);
                }
            }
            while window.len() >= self.window {
                let Some(done) = window.next().await else { break };
                self.settle(done, &mut in_flight, &mut reads, &mut failure);
            }
            if failure.is_some() {
                // Rows from here on were not handled.
                self.tally.rows -= 1;
                if entry.read {
                    self.tally.read_rows -= 1;
                }
                through = previous;
                break;
            }
            in_flight.insert(entry.id);
            window.push_back(self.publish(entry));
        }
        while let Some(done) = window.next().await {
            self.settle(done, &mut in_flight, &mut reads, &mut failure);
        }
        // After a failure, rows after it may have landed too: they are
        // found by the next run, as the record stays open.
        if let Some((failed_row, _)) = &failure {
            through = through.min(Some(failed_row.saturating_sub(1))).max(self.progress.through);
        }
        let marks = self.apply_reads(reads).await;
        self.progress.through = through;
        if let Some(last) = self.tally.last_new {
            self.progress.last = self.progress.last.max(last);
        }
        match (failure, marks) {
            (Some((_, failure)), _) => {
                // Best effort: what got in is found again by the next run either way.
                let _ = self.save(true).await;
                Err(failure)
            }
            (None, Err(failure)) => Err(failure),
            (None, Ok(())) => self.save(true).await,
        }
    }

    /// The publish of one row, as a future that owns what it needs.
    fn publish(&self, entry: Entry) -> impl Future<Output = Pending> + use<> {
        let subjects = self.bus.subjects();
        let subject = match &entry.to {
            Some(to) => subjects.direct(to, &entry.from),
            None => subjects.broadcast(&entry.from),
        };
        let parent = match entry.reply {
            Reply::To(old) => self.placed.get(&old).copied(),
            Reply::None | Reply::Unreadable => None,
        };
        let threading = parent.map_or(Threading::FIRST, |p| p.threading.reply(p.id));
        let envelope = Envelope {
            from: entry.from.to_string(),
            to: entry.to.as_ref().map_or(BROADCAST.into(), ToString::to_string),
            content: entry.content.clone(),
            priority: entry.priority,
            reply_to: parent.map(|p| p.id),
            thread: threading.thread,
            hops: threading.hops,
            timestamp: format_time(entry.at.unwrap_or_else(|| self.bus.now())),
        };
        let payload = Bytes::from(serde_json::to_vec(&envelope).expect("an envelope serializes"));
        let (bus, name) = (self.bus.clone(), self.name.clone());
        async move {
            let outcome = store(&bus, &name, entry.id, subject, payload).await;
            Pending { entry, threading, outcome }
        }
    }

    /// Takes in the outcome of one publish.
    fn settle(
        &mut self,
        done: Pending,
        in_flight: &mut HashSet<i64>,
        reads: &mut Vec<ReadRow>,
        failure: &mut Option<(i64, Failure)>,
    ) {
        let Pending { entry, threading, outcome } = done;
        in_flight.remove(&entry.id);
        let placed = match outcome {
            Outcome::New(seq) => {
                self.tally.stored(seq);
                if let Some(odd) = &entry.odd_priority {
                    *self.tally.odd_priorities.entry(odd.clone()).or_default() += 1;
                }
                if entry.at.is_none() {
                    self.tally.times_unreadable += 1;
                }
                if entry.reply != Reply::None && threading.thread.is_none() {
                    self.tally.replies_unmapped += 1;
                }
                Placed { id: seq, threading }
            }
            Outcome::Found(placed) => {
                self.tally.already += 1;
                self.progress.last = self.progress.last.max(placed.id);
                placed
            }
            Outcome::TooLarge => {
                self.tally.skip(Skip::TooLarge, Some(entry.id), 1);
                return;
            }
            Outcome::Failed(why) => {
                // The first failure in row order decides how far the page got.
                if failure.as_ref().is_none_or(|(row, _)| entry.id < *row) {
                    *failure = Some((entry.id, failed(format!("row {}: {why}", entry.id))));
                }
                return;
            }
        };
        self.placed.insert(entry.id, placed);
        let seq = placed.id;
        if entry.read {
            reads.push(ReadRow { seq, from: entry.from, to: entry.to });
        }
    }

    /// Acknowledges read rows for their recipients.
    async fn apply_reads(&mut self, reads: Vec<ReadRow>) -> Result<(), Failure> {
        let mut per_agent: BTreeMap<AgentName, Vec<u64>> = BTreeMap::new();
        for read in reads {
            match read.to {
                Some(to) => per_agent.entry(to).or_default().push(read.seq),
                None => {
                    let route = Route::Broadcast { from: read.from.as_str() };
                    for inbox in self.inboxes.iter().filter(|inbox| inbox.contains(read.seq, route)) {
                        per_agent.entry(inbox.agent.clone()).or_default().push(read.seq);
                    }
                }
            }
        }
        let mut acks = Vec::new();
        for (agent, ids) in per_agent {
            let registered = patiently("cannot read the registry", || self.registry.inbox(&agent)).await?;
            if registered.is_none() {
                *self.tally.marks_unregistered.entry(agent.to_string()).or_default() += ids.len() as u64;
                continue;
            }
            // Marks already set cost nothing (a run over an imported
            // database sets none): only the rest goes through an ack.
            let mark = patiently("cannot read a read mark", || readstate::load(&self.bus, &agent)).await?.mark;
            let (read, unread): (Vec<u64>, Vec<u64>) = ids.into_iter().partition(|id| mark.is_read(*id));
            self.tally.marks_already += read.len() as u64;
            acks.extend(unread.chunks(ACK_BATCH).map(|chunk| (agent.clone(), chunk.to_vec())));
        }
        // Agents' read marks are independent: acknowledged side by side.
        let mailbox = &self.mailbox;
        let mut done = futures_util::stream::iter(acks)
            .map(|(agent, ids)| async move { acknowledge(mailbox, &agent, ids).await })
            .buffer_unordered(ACKS_AT_ONCE);
        let mut failure = None;
        while let Some(result) = done.next().await {
            match result {
                Ok(counts) => {
                    self.tally.marks_applied += counts.applied;
                    self.tally.marks_already += counts.already;
                    self.tally.marks_missing += counts.missing;
                }
                Err(err) => failure = failure.or(Some(err)),
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// What acknowledging some ids came to.
#[derive(Default)]
struct Acknowledged {
    applied: u64,
    already: u64,
    missing: u64,
}

/// Acknowledges `ids` for `agent`. Every id is in its inbox; one reported
/// as not (a replica that has not caught up yet, in a cluster) is tried
/// again a few times.
async fn acknowledge(mailbox: &Mailbox, agent: &AgentName, mut ids: Vec<u64>) -> Result<Acknowledged, Failure> {
    let mut counts = Acknowledged::default();
    let patience = Instant::now() + UNAVAILABLE_PATIENCE;
    let mut retries_of_ignored = 0;
    loop {
        let acked = match mailbox.ack(agent, Ack::Ids(ids.clone())).await {
            Ok(acked) => acked,
            // NATS away for a moment, or live acks of the same agent.
            Err(MailError::Unavailable(_) | MailError::Contended(_)) if Instant::now() < patience => {
                sleep(RETRY_PAUSE).await;
                continue;
            }
            Err(err) => return Err(failed(format!("cannot acknowledge for {agent}: {}", chain(&err)))),
        };
        counts.applied += acked.acked;
        counts.already += ((ids.len() - acked.ignored.len()) as u64).saturating_sub(acked.acked);
        if acked.ignored.is_empty() {
            return Ok(counts);
        }
        if retries_of_ignored == 3 {
            counts.missing += acked.ignored.len() as u64;
            return Ok(counts);
        }
        retries_of_ignored += 1;
        ids = acked.ignored;
        sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `attempt` until it succeeds, for as long as NATS may take to come
/// back.
async fn patiently<T, Fut>(what: &str, mut attempt: impl FnMut() -> Fut) -> Result<T, Failure>
where
    Fut: Future<Output = Result<T, bus::Unavailable>>,
{
    let patience = Instant::now() + UNAVAILABLE_PATIENCE;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(_) if Instant::now() < patience => sleep(RETRY_PAUSE).await,
            Err(err) => return Err(failed(format!("{what}: {}", chain(&err)))),
        }
    }
}

/// Reads the progress record of `key`, or creates it.
async fn load_progress(bus: &Bus, key: &str, source: &Source) -> Result<(Progress, u64), String> {
    let kv = bus.kv();
    loop {
        let entry =
            kv.entry(key).await.map_err(|err| format!("cannot read the progress record {key}: {}", chain(&err)))?;
        if let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) {
            let progress = serde_json::from_slice::<Progress>(&entry.value).map_err(|err| {
                format!("the progress record {key} does not parse ({err}); delete it only if nothing of this source was imported")
            })?;
            return Ok((progress, entry.revision));
        }
        let last = bus.last_sequence().await.map_err(|err| format!("cannot read the stream: {}", chain(&err)))?;
        let progress = Progress {
            database: source.path.canonicalize().unwrap_or_else(|_| source.path.clone()).display().to_string(),
            table: source.table.clone(),
            start: last + 1,
            through: None,
            last: 0,
            open: true,
            updated_at: format_time(bus.now()),
        };
        let value = serde_json::to_vec(&progress).expect("a record serializes").into();
        match kv.create(key, value).await {
            Ok(revision) => return Ok((progress, revision)),
            // Another run created it meanwhile: read it.
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => continue,
            Err(err) => return Err(format!("cannot create the progress record {key}: {}", chain(&err))),
        }
    }
}

/// Publishes one row's message; repeats while NATS says "not now", and
/// moves to the row's next id when a marker holds it.
async fn store(bus: &Bus, name: &str, old: i64, subject: String, payload: Bytes) -> Outcome {
    let patience = Instant::now() + UNAVAILABLE_PATIENCE;
    let mut reuse = 0;
    loop {
        let out = Outgoing { subject: subject.clone(), msg_id: message_id(name, old, reuse), payload: payload.clone() };
        match bus.store(&out).await {
            Ok(Stored::New(seq)) => return Outcome::New(seq),
            Ok(Stored::Earlier(raw)) => {
                let threading = envelope_of(&raw).map_or(Threading::FIRST, |envelope| Threading::of(&envelope));
                return Outcome::Found(Placed { id: raw.seq, threading });
            }
            Ok(Stored::Taken) if reuse + 1 < MAX_ID_REUSES => reuse += 1,
            Ok(Stored::Taken) => return Outcome::Failed("its message ids are all taken".into()),
            Err(SendError::TooLarge) => return Outcome::TooLarge,
            Err(SendError::Unavailable(_)) if Instant::now() < patience => sleep(RETRY_PAUSE).await,
            Err(err) => return Outcome::Failed(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_fingerprint_is_stable() {
        let mut hash = Fnv::default();
        hash.text("messages");
        hash.value(&Value::Integer(1));
        // Pinned: a change would make every earlier import run again.
        assert_eq!(format!("{:016x}", hash.0), "054513d950989067");
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
}
