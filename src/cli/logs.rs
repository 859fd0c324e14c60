//! The adapter's log output: stderr, written in batches.
//!
//! Every message leaves a lifecycle line or two, so at thousands of messages
//! a second one `write` per line (and, behind a pipe, one wake-up of the
//! reader per line) is a good part of the adapter's CPU. Info and debug
//! lines are therefore collected and written together, at most
//! [`FLUSH_AFTER`] after the first of them; a warning or an error is written
//! at once, with everything collected before it, so the order stays the
//! order of events. The batch is also written on exit and on a panic; only a
//! kill leaves up to [`FLUSH_AFTER`] of info lines unwritten.

use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// How long an info line may wait for others to share its `write`.
const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// A batch this large is written by the line that fills it.
const MAX_BATCH: usize = 64 * 1024;

/// Installs the adapter's logging (the level from `RUST_LOG`, default
/// `info`) until the returned guard is dropped.
pub(super) fn init(format: LogFormat) -> Flush {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,async_nats=warn".into());
    let batch = Batch::start();
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(batch.clone());
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs.with_ansi(io::stderr().is_terminal()).init(),
    }
    let on_panic = batch.clone();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        on_panic.write_out();
        default_hook(info);
    }));
    Flush(batch)
}

/// Writes what is collected when dropped, at the end of `serve`.
pub(super) struct Flush(Batch);

impl Drop for Flush {
    fn drop(&mut self) {
        self.0.write_out();
    }
}

/// Lines waiting for their `write`, shared by every thread that logs and
/// the thread that writes them out.
#[derive(Clone, Default)]
struct Batch(Arc<Shared>);

#[derive(Default)]
struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Signalled when the first line of a batch arrives.
    started: Condvar,
}

impl Batch {
    fn start() -> Batch {
        let batch = Batch::default();
        let writer = batch.clone();
        std::thread::Builder::new()
            .name("clawbus-logs".into())
            .spawn(move || writer.write_batches())
            .expect("the log thread starts");
        batch
    }

    fn lines(&self) -> MutexGuard<'_, Vec<u8>> {
        // A thread that panicked mid-line leaves at worst a partial line.
        self.0.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The log thread: waits for a first line, lets more gather, writes.
    fn write_batches(&self) {
        loop {
            let mut lines = self.lines();
            while lines.is_empty() {
                lines = self.0.started.wait(lines).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            drop(lines);
            std::thread::sleep(FLUSH_AFTER);
            self.write_out();
        }
    }

    /// Writes everything collected, now. Holding the lock while writing
    /// keeps batches in order.
    fn write_out(&self) {
        let mut lines = self.lines();
        write_to_stderr(&lines);
        lines.clear();
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut lines = self.lines();
        let first = lines.is_empty();
        lines.extend_from_slice(line);
        if urgent || lines.len() >= MAX_BATCH {
            write_to_stderr(&lines);
            lines.clear();
        } else if first {
            self.0.started.notify_one();
        }
    }
}

/// Logging has nowhere to report its own failure: a closed stderr loses
/// the lines, as it would unbatched.
fn write_to_stderr(bytes: &[u8]) {
    if !bytes.is_empty() {
        let _ = io::stderr().lock().write_all(bytes);
    }
}

/// Where one event's line goes. The formatter hands a whole line to one
/// `write_all`, so a line is appended whole, with no copy of its own.
pub(super) struct Line<'a> {
    batch: &'a Batch,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.batch.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batch {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line { batch: self, urgent: true }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line { batch: self, urgent: urgent(meta.level()) }
    }
}

fn urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_wait_and_a_warning_takes_them_along() {
        let batch = Batch::default();
        batch.append(b"logs test: info\n", false);
        assert_eq!(*batch.lines(), b"logs test: info\n");
        batch.append(b"logs test: warning\n", true);
        assert!(batch.lines().is_empty(), "the warning wrote the batch");
    }

    #[test]
    fn a_full_batch_is_written_by_the_line_that_fills_it() {
        let batch = Batch::default();
        batch.append(&[b'.'; MAX_BATCH - 1], false);
        assert_eq!(batch.lines().len(), MAX_BATCH - 1);
        batch.append(b"\n", false);
        assert!(batch.lines().is_empty());
    }

    #[test]
    fn warnings_and_errors_are_urgent() {
        assert!(urgent(&Level::ERROR) && urgent(&Level::WARN));
        assert!(!urgent(&Level::INFO) && !urgent(&Level::DEBUG));
    }

    #[test]
    fn the_log_thread_writes_a_waiting_line() {
        let batch = Batch::start();
        batch.append(b"logs test: from the log thread\n", false);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !batch.lines().is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            std::thread::sleep(FLUSH_AFTER);
        }
    }
}
