//! The run: rebuild what earlier runs imported from the stream itself, then
//! store the rest page by page, publishes in a window, each page's read
//! state applied and its progress recorded.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

use super::error::ImportError;
use super::progress::Record;
use super::publish::{Outcome, Placed, store};
use super::reads::{Marks, ReadRow};
use super::rows::{Entry, Reply, Skip, old_id, prepare};
use super::source::{Row, Source};
use super::summary::Tally;
use crate::bus::{self, Bus, Start};
use crate::config::Config;
use crate::mailbox::Threading;
use crate::message::{BROADCAST, Envelope, format_time};

/// Rows read, stored, acknowledged and recorded at a time; a progress line
/// follows each page.
const PAGE: usize = 1000;
/// Publishes waiting for JetStream at once.
const WINDOW: usize = 128;
/// How long to wait for NATS at start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One row in flight.
struct Pending {
    entry: Entry,
    threading: Threading,
    outcome: Outcome,
}

/// What a page's publishes came to so far.
#[derive(Default)]
struct Settled {
    /// Rows still being published.
    in_flight: HashSet<i64>,
    /// Read rows to acknowledge.
    reads: Vec<ReadRow>,
    /// The first failure in row order, which decides how far the page got.
    failure: Option<(i64, ImportError)>,
}

struct Importer<'a> {
    source: &'a Source,
    bus: Bus,
    marks: Marks,
    name: String,
    record: Record,
    /// Old id → its message, for the rows of this import found or stored.
    placed: HashMap<i64, Placed>,
    /// Whether messages from `start` on may have expired.
    expired: bool,
    window: usize,
    tally: Tally,
}

/// Runs the import of `source` as `name`. `None` as tally: nothing was
/// done.
pub(super) async fn import(config: &Config, source: &Source, name: String) -> (Option<Tally>, Option<ImportError>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,async_nats=error".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut importer = match Importer::start(config, source, name).await {
        Ok(importer) => importer,
        Err(err) => return (None, Some(err)),
    };
    let result = importer.run().await;
    (Some(importer.tally), result.err())
}

impl<'a> Importer<'a> {
    /// Reaches NATS, reads the registry and the progress record, and
    /// rebuilds the map of what earlier runs imported.
    async fn start(config: &Config, source: &'a Source, name: String) -> Result<Importer<'a>, ImportError> {
        let nats = bus::connect_within(config, CONNECT_TIMEOUT).await?;
        let bus = crate::app::stream::open(nats, config)
            .await
            .map_err(|source| ImportError::Unavailable { what: "cannot open the bus", source })?;
        let marks = Marks::open(&bus, &config.host).await?;
        let record = Record::load(&bus, &name, source).await?;
        let tally = Tally::new(name.clone(), config.nats.stream.clone());
        let mut importer = Importer {
            source,
            bus,
            marks,
            name,
            record,
            placed: HashMap::new(),
            expired: false,
            window: WINDOW.min(config.nats.max_sends_in_flight).max(1),
            tally,
        };
        let progress = &importer.record.progress;
        let (started, open, last) = (progress.start, progress.open, progress.last);
        eprintln!(
            "clawbus import: {} rows in table {} of {}, source {}{}",
            source.total,
            source.table,
            source.path.display(),
            importer.name,
            if progress.through.is_some() || last > 0 { " (continuing an earlier import)" } else { "" }
        );
        // Marked open before anything is stored; a concurrent run of the
        // same source loses its next compare-and-set.
        importer.record.save(&importer.bus, true).await?;
        let until = if open { u64::MAX } else { last };
        if until >= started {
            importer.rebuild(started, until).await.map_err(ImportError::Stream)?;
        }
        let first = importer.bus.count(&importer.bus.subjects().every_message(), 1).await;
        let first = first.map_err(ImportError::Stream)?.first;
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
            let Some(envelope) = raw.envelope() else { continue };
            self.placed.entry(old).or_insert(Placed { id: raw.seq, threading: Threading::of(&envelope) });
            self.record.progress.last = self.record.progress.last.max(raw.seq);
        }
        Ok(())
    }

    async fn run(&mut self) -> Result<(), ImportError> {
        if self.source.odd_ids > 0 {
            self.tally.rows += self.source.odd_ids;
            self.tally.skip(Skip::OddId, None, self.source.odd_ids);
        }
        let mut after = None;
        loop {
            let rows = self
                .source
                .page(after, PAGE)
                .map_err(|source| ImportError::Read { path: self.source.path.clone(), source })?;
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
        self.record.save(&self.bus, false).await
    }

    /// Stores one page of rows, applies their read state, and records it.
    async fn page(&mut self, rows: Vec<Row>) -> Result<(), ImportError> {
        let mut window = FuturesOrdered::new();
        let mut settled = Settled::default();
        let mut through = self.record.progress.through;
        for row in rows {
            // Everything before this row has been settled.
            let previous = through;
            through = Some(row.id);
            self.tally.rows += 1;
            let entry = match prepare(row) {
                Ok(entry) => entry,
                Err(skip) => {
                    self.tally.skip(skip, through, 1);
                    continue;
                }
            };
            if entry.read {
                self.tally.read_rows += 1;
            }
            if let Some(placed) = self.placed.get(&entry.id) {
                self.tally.already += 1;
                if entry.read {
                    settled.reads.push(ReadRow { seq: placed.id, from: entry.from, to: entry.to });
                }
                continue;
            }
            if self.expired && self.record.progress.through.is_some_and(|t| entry.id <= t) {
                self.tally.already += 1;
                self.tally.gone += 1;
                if entry.read {
                    self.tally.marks_missing += 1;
                }
                continue;
            }
            // A reply waits for the row it answers, if that is in flight.
            if let Reply::To(parent) = entry.reply {
                while settled.in_flight.contains(&parent) {
                    let Some(done) = window.next().await else { break };
                    self.settle(done, &mut settled);
                }
            }
            while window.len() >= self.window {
                let Some(done) = window.next().await else { break };
                self.settle(done, &mut settled);
            }
            if settled.failure.is_some() {
                // Rows from here on were not handled.
                self.tally.rows -= 1;
                if entry.read {
                    self.tally.read_rows -= 1;
                }
                through = previous;
                break;
            }
            settled.in_flight.insert(entry.id);
            window.push_back(self.publish(entry));
        }
        while let Some(done) = window.next().await {
            self.settle(done, &mut settled);
        }
        let Settled { reads, failure, .. } = settled;
        // After a failure, rows after it may have landed too: they are
        // found by the next run, as the record stays open.
        let progress = &mut self.record.progress;
        if let Some((failed_row, _)) = &failure {
            through = through.min(Some(failed_row.saturating_sub(1))).max(progress.through);
        }
        progress.through = through;
        let marks = self.marks.apply(reads, &mut self.tally).await;
        if let Some(last) = self.tally.last_new {
            self.record.progress.last = self.record.progress.last.max(last);
        }
        match (failure, marks) {
            (Some((_, failure)), _) => {
                // Best effort: what got in is found again by the next run either way.
                let _ = self.record.save(&self.bus, true).await;
                Err(failure)
            }
            (None, Err(failure)) => Err(failure),
            (None, Ok(())) => self.record.save(&self.bus, true).await,
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
    fn settle(&mut self, done: Pending, settled: &mut Settled) {
        let Pending { entry, threading, outcome } = done;
        settled.in_flight.remove(&entry.id);
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
                self.record.progress.last = self.record.progress.last.max(placed.id);
                placed
            }
            Outcome::TooLarge => {
                self.tally.skip(Skip::TooLarge, Some(entry.id), 1);
                return;
            }
            Outcome::Failed(err) => {
                if settled.failure.as_ref().is_none_or(|(row, _)| entry.id < *row) {
                    settled.failure = Some((entry.id, err));
                }
                return;
            }
        };
        self.placed.insert(entry.id, placed);
        if entry.read {
            settled.reads.push(ReadRow { seq: placed.id, from: entry.from, to: entry.to });
        }
    }
}
