//! The progress record, `import.<source>` in the state bucket: how far the
//! import of a source got, written with compare-and-set so that two runs of
//! the same source cannot both go on.

use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

use super::error::ImportError;
use super::patience::{RETRY_PAUSE, deadline};
use super::source::Source;
use crate::bus::Bus;
use crate::message::format_time;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Progress {
    /// What is imported, for people reading the bucket.
    database: String,
    table: String,
    /// The stream's next id when the first run began.
    pub(super) start: u64,
    /// Every row up to this old id is settled (stored or skipped).
    pub(super) through: Option<i64>,
    /// The highest new id of the import's messages.
    pub(super) last: u64,
    /// A run is going on, or stopped before finishing: messages of rows
    /// after `through` may exist after `last`.
    pub(super) open: bool,
    updated_at: String,
}

/// The record as this run last read or wrote it.
pub(super) struct Record {
    key: String,
    revision: u64,
    pub(super) progress: Progress,
}

impl Record {
    /// Reads the progress record of source `name`, or creates it.
    pub(super) async fn load(bus: &Bus, name: &str, source: &Source) -> Result<Record, ImportError> {
        let key = format!("import.{name}");
        let kv = bus.kv();
        loop {
            let entry =
                kv.entry(&key).await.map_err(|source| ImportError::ProgressRead { key: key.clone(), source })?;
            if let Some(entry) = entry.filter(|entry| entry.operation == kv::Operation::Put) {
                let progress = serde_json::from_slice::<Progress>(&entry.value)
                    .map_err(|source| ImportError::ProgressParse { key: key.clone(), source })?;
                return Ok(Record { key, revision: entry.revision, progress });
            }
            let last = bus.last_sequence().await.map_err(ImportError::Stream)?;
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
            match kv.create(&key, value).await {
                Ok(revision) => return Ok(Record { key, revision, progress }),
                // Another run created it meanwhile: read it.
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                Err(source) => return Err(ImportError::ProgressCreate { key, source }),
            }
        }
    }

    /// Writes the record (compare-and-set), marked `open` or finished.
    pub(super) async fn save(&mut self, bus: &Bus, open: bool) -> Result<(), ImportError> {
        self.progress.open = open;
        self.progress.updated_at = format_time(bus.now());
        let value: Bytes = serde_json::to_vec(&self.progress).expect("a record serializes").into();
        let patience = deadline();
        let mut in_doubt = false;
        loop {
            match bus.kv().update(&self.key, value.clone(), self.revision).await {
                Ok(revision) => {
                    self.revision = revision;
                    return Ok(());
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // An attempt whose answer was lost may have landed.
                    if in_doubt
                        && let Ok(Some(entry)) = bus.kv().entry(&self.key).await
                        && entry.value == value
                    {
                        self.revision = entry.revision;
                        return Ok(());
                    }
                    return Err(ImportError::ProgressChanged { key: self.key.clone() });
                }
                Err(_) if Instant::now() < patience => {
                    in_doubt = true;
                    sleep(RETRY_PAUSE).await;
                }
                Err(err) => return Err(ImportError::ProgressWrite(err)),
            }
        }
    }
}
