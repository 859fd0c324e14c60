//! The host record `host.<host>`: held by one adapter process at a time.
//!
//! Each adapter process draws an instance id at start and writes its
//! heartbeats with compare-and-set on the record's revision, so that two
//! adapters started with one host name (two boxes both called `raspberrypi`)
//! cannot both write it, nor the host's wake records after it.
//!
//! At start-up, a record that another instance wrote and that says it is
//! running is watched for [`TAKEOVER_AFTER`]: if it changes meanwhile, that
//! instance is alive and this one is refused; if it does not, its writer is
//! gone (killed, or cut off) and this instance takes the record over. So an
//! adapter killed and restarted at once waits out its own last heartbeat
//! instead of being refused. The silence is measured on this host's clock,
//! not against the server's timestamps, so a skewed clock cannot make a live
//! adapter look dead. A running adapter whose compare-and-set fails because
//! another instance holds the record has lost the host, and stops writing.

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;

use super::{HEARTBEAT_INTERVAL, HostRecord, encode};
use crate::bus::{Bus, OrUnavailable, Owned, Unavailable};

/// Silence after which another instance's running record is taken over:
/// three heartbeats missed in a row.
const TAKEOVER_AFTER: Duration = Duration::from_secs(3 * HEARTBEAT_INTERVAL.as_secs());
/// Pause between two looks at a record being watched.
const WATCH_PAUSE: Duration = Duration::from_millis(500);

/// This process's instance id: the same for every start-up attempt, so a
/// retried attempt finds its own record rather than a stranger's.
static INSTANCE: LazyLock<String> = LazyLock::new(|| nuid::next().to_string());

/// Another adapter process runs, or took over, as this host.
#[derive(Debug, thiserror::Error)]
#[error(
    "another adapter is running as host \"{host}\": every adapter needs a host name of its own; \
     set `host` in the config of one of them (it defaults to the machine's short hostname)"
)]
pub(crate) struct HostTaken {
    pub host: String,
}

/// A host record could not be written.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HostError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    #[error(transparent)]
    Taken(#[from] HostTaken),
}

/// This process's hold on its host record.
pub(super) struct Heartbeat {
    host: String,
    /// This process's id, written in every heartbeat.
    pub instance: String,
    /// Revision of the record as this instance last wrote it (`None`: not
    /// written yet).
    revision: Mutex<Option<u64>>,
}

/// The host record as stored.
struct Held {
    record: Option<HostRecord>,
    revision: u64,
}

impl Held {
    /// Written by another instance that says it is running.
    fn running_elsewhere(&self, instance: &str) -> bool {
        self.record.as_ref().is_some_and(|r| r.running && r.instance.as_deref() != Some(instance))
    }
}

impl Heartbeat {
    pub(super) fn new(host: String) -> Self {
        Self { host, instance: INSTANCE.clone(), revision: Mutex::default() }
    }

    fn key(&self) -> String {
        format!("host.{}", self.host)
    }

    fn record(&self, bus: &Bus, running: bool) -> bytes::Bytes {
        encode(&HostRecord {
            running,
            version: env!("CARGO_PKG_VERSION").into(),
            instance: Some(self.instance.clone()),
            seen: bus.seen(),
        })
    }

    /// The record as stored now (`None`: none, or deleted).
    async fn read(&self, bus: &Bus) -> Result<Option<Held>, Unavailable> {
        let entry = bus.kv().entry(self.key()).await.unavailable("cannot read the host record")?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|entry| Held { record: serde_json::from_slice(&entry.value).ok(), revision: entry.revision }))
    }

    /// Takes the host record for this instance at start-up, waiting out a
    /// running record of another instance (see the module's doc); refused
    /// if that instance is alive.
    pub(super) async fn claim(&self, bus: &Bus) -> Result<(), HostError> {
        loop {
            let held = self.read(bus).await?;
            if let Some(held) = held.as_ref().filter(|held| held.running_elsewhere(&self.instance)) {
                self.outwait(bus, held.revision).await?;
            }
            *self.revision.lock().expect("heartbeat lock") = held.map(|held| held.revision);
            match bus.kv_write_owned(&self.key(), self.record(bus, true), &self.revision, |v| self.is_ours(v)).await? {
                Owned::Written => return Ok(()),
                Owned::Lost => tracing::debug!("host record changed meanwhile; reading it again"),
            }
        }
    }

    /// Whether a stored record is this instance's.
    fn is_ours(&self, value: &[u8]) -> bool {
        serde_json::from_slice::<HostRecord>(value).is_ok_and(|r| r.instance.as_deref() == Some(&self.instance))
    }

    /// Watches a running record of another instance until it has been
    /// silent for [`TAKEOVER_AFTER`]; refused if it changes to another
    /// running record meanwhile.
    async fn outwait(&self, bus: &Bus, revision: u64) -> Result<(), HostError> {
        tracing::warn!(
            host = %self.host,
            "the host record says another adapter runs as this host; watching it for {TAKEOVER_AFTER:?}: \
             this adapter takes the host over if it stays silent (a restart after a crash), and stops if it is alive"
        );
        let deadline = Instant::now() + TAKEOVER_AFTER;
        while Instant::now() < deadline {
            tokio::time::sleep(WATCH_PAUSE).await;
            match self.read(bus).await? {
                Some(held) if held.revision == revision => {}
                Some(held) if held.running_elsewhere(&self.instance) => {
                    return Err(HostTaken { host: self.host.clone() }.into());
                }
                // Stopped cleanly or deleted meanwhile: free to take.
                _ => return Ok(()),
            }
        }
        tracing::info!(host = %self.host, "the host record stayed silent; taking the host over");
        Ok(())
    }

    /// Reports this instance alive (or, on shutdown, stopped), with
    /// compare-and-set on the revision it last wrote.
    pub(super) async fn beat(&self, bus: &Bus, running: bool) -> Result<(), HostError> {
        match bus.kv_write_owned(&self.key(), self.record(bus, running), &self.revision, |v| self.is_ours(v)).await? {
            Owned::Written => Ok(()),
            Owned::Lost => Err(HostTaken { host: self.host.clone() }.into()),
        }
    }
}
