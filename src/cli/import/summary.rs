//! What a run did, counted as it goes, and the summary printed at its end.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::rows::Skip;
use super::source::Source;

/// Examples of skipped rows named in the summary, per reason.
const EXAMPLES: usize = 5;

/// What a run did, for the summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    source: String,
    stream: String,
    pub(super) rows: u64,
    pub(super) stored: u64,
    first_new: Option<u64>,
    pub(super) last_new: Option<u64>,
    pub(super) already: u64,
    /// Of `already`: rows whose message has expired from the stream.
    pub(super) gone: u64,
    skipped: BTreeMap<Skip, (u64, Vec<i64>)>,
    pub(super) odd_priorities: BTreeMap<String, u64>,
    pub(super) replies_unmapped: u64,
    pub(super) times_unreadable: u64,
    pub(super) read_rows: u64,
    pub(super) marks_applied: u64,
    pub(super) marks_already: u64,
    pub(super) marks_unregistered: BTreeMap<String, u64>,
    pub(super) marks_missing: u64,
    pub(super) seconds: f64,
}

impl Tally {
    /// Nothing done yet in the import of `source` into `stream`.
    pub(super) fn new(source: String, stream: String) -> Tally {
        Tally { source, stream, ..Tally::default() }
    }

    pub(super) fn skip(&mut self, skip: Skip, id: Option<i64>, count: u64) {
        let (n, examples) = self.skipped.entry(skip).or_default();
        *n += count;
        if let Some(id) = id
            && examples.len() < EXAMPLES
        {
            examples.push(id);
        }
    }

    pub(super) fn skipped(&self) -> u64 {
        self.skipped.values().map(|(n, _)| n).sum()
    }

    pub(super) fn stored(&mut self, seq: u64) {
        self.stored += 1;
        self.first_new = Some(self.first_new.map_or(seq, |first| first.min(seq)));
        self.last_new = Some(self.last_new.map_or(seq, |last| last.max(seq)));
    }

    /// The summary; `failed`: the run stopped before the end.
    pub(super) fn summary(&self, source: &Source, failed: bool) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "import of {} (table {}, source {}) into stream {}: {}",
            source.path.display(),
            source.table,
            self.source,
            self.stream,
            if failed { "FAILED, incomplete" } else { "done" }
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
