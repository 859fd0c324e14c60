//! `clawbus import`: brings the old Flask + SQLite bus's messages along, with
//! their read state, once.
//!
//! The parts: `source` reads the old table, `rows` turns a row into a
//! message, `publish` stores it, `reads` applies read flags, `progress`
//! keeps the record in the state bucket, `importer` runs the pages,
//! `summary` counts and reports, `patience` rides out a NATS away for a
//! moment; `error` maps every failure, cause kept, to the exit code below.
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
//! that cannot be read; 5 NATS not reachable (nothing was done); all in
//! [`ImportError::exit`].

mod error;
mod importer;
mod patience;
mod progress;
mod publish;
mod reads;
mod rows;
mod source;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

use super::Exit;
use super::chain;
use crate::config::Config;
use crate::names::AgentName;
use error::ImportError;
use source::Source;

#[derive(clap::Args)]
pub(super) struct Args {
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
pub(super) fn run(config: Config, args: Args) -> ExitCode {
    let (source, name) = match open(&config, &args) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            println!("nothing to import: table {} of {} has no rows", args.table, args.sqlite.display());
            return Exit::Ok.into();
        }
        Err(err) => {
            eprintln!("clawbus: {}", chain(&err));
            return err.exit().into();
        }
    };
    let started = std::time::Instant::now();
    let (tally, failure) = super::runtime().block_on(importer::import(&config, &source, name));
    let Some(mut tally) = tally else {
        let err = failure.expect("a failure when nothing was done");
        eprintln!("clawbus: {}; nothing was imported", chain(&err));
        return err.exit().into();
    };
    tally.seconds = started.elapsed().as_secs_f64();
    print!("{}", tally.summary(&source, failure.is_some()));
    match failure {
        None => Exit::Ok.into(),
        Some(err) => {
            eprintln!("clawbus: import failed: {}", chain(&err));
            err.exit().into()
        }
    }
}

/// The table to import and the import's name; `None` for an empty table
/// that no `--source` names.
fn open(config: &Config, args: &Args) -> Result<Option<(Source, String)>, ImportError> {
    if config.nats.least_privilege {
        return Err(ImportError::LeastPrivilege);
    }
    let source = Source::open(args)?;
    let name = match (&args.source, &source.fingerprint) {
        (Some(name), _) if valid_source(name) => name.clone(),
        (Some(name), _) => return Err(ImportError::SourceName(name.clone())),
        (None, Some(fingerprint)) => fingerprint.clone(),
        (None, None) => return Ok(None),
    };
    Ok(Some((source, name)))
}

fn valid_source(name: &str) -> bool {
    AgentName::parse(name).is_ok()
}
