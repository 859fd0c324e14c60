//! JetStream: the only state clawbus has.
//!
//! One stream holds every message (the stream sequence is the message id);
//! one KV bucket holds the small per-agent records: registration, read marks,
//! wake marks, and host heartbeats. Adapters keep nothing that matters in
//! memory, so any adapter can answer for any agent and a restart loses nothing.

mod connect;
mod direct;
mod follow;
mod provision;
mod publish;
mod replies;
mod scan;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv, stream};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};

use crate::message::Subjects;

pub use connect::{Nats, connect, inbox_prefix};
pub use direct::{RawMessage, Start};
pub use follow::Follower;
pub use publish::{Outgoing, SendError, Stored};

/// A JetStream request failed, or NATS cannot be reached: nothing was
/// changed, and the HTTP layer answers 503.
#[derive(Debug, thiserror::Error)]
#[error("NATS is unavailable: {what}")]
pub struct Unavailable {
    what: Cow<'static, str>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Unavailable {
    pub fn new(what: impl Into<Cow<'static, str>>) -> Self {
        Self { what: what.into(), source: None }
    }

    pub fn caused(what: impl Into<Cow<'static, str>>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self { what: what.into(), source: Some(Box::new(source)) }
    }
}

/// `.unavailable("what was being done")` on a NATS result keeps the error as
/// the cause.
pub trait OrUnavailable<T> {
    fn unavailable(self, what: &'static str) -> Result<T, Unavailable>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> OrUnavailable<T> for Result<T, E> {
    fn unavailable(self, what: &'static str) -> Result<T, Unavailable> {
        self.map_err(|err| Unavailable::caused(what, err))
    }
}

/// A value of the state bucket and when the server stored it.
pub struct KvValue<T> {
    pub value: T,
    pub revision: u64,
    pub stored: time::OffsetDateTime,
}

/// The server this adapter is connected to, and the stream's replicas.
#[derive(Debug, serde::Serialize)]
pub struct Placement {
    pub server: String,
    pub leader: Option<String>,
    /// The followers (the leader is not listed).
    pub replicas: Vec<Replica>,
}

#[derive(Debug, serde::Serialize)]
pub struct Replica {
    pub name: String,
    pub current: bool,
    pub lag: Option<u64>,
}

/// Deadline of one read from JetStream.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected, provisioned bus.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    connects: watch::Receiver<u64>,
    js: jetstream::Context,
    stream: String,
    kv: kv::Store,
    kv_bucket: String,
    subjects: Subjects,
    send_timeout: Duration,
    settle_timeout: Duration,
    /// Admission control for sends: past this many in flight, a send is
    /// refused at once (503) instead of queueing towards its deadline.
    in_flight: Arc<Semaphore>,
    /// The highest message id this adapter knows to exist. A read mark at or
    /// below it is certainly not ahead of the stream; only a mark above it
    /// costs a look at the stream's last sequence.
    seen: Arc<AtomicU64>,
    /// Where the replies to direct gets arrive (see `replies`).
    replies: Arc<replies::Replies>,
}

impl Bus {
    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The largest payload the connected server takes, in bytes (0 before
    /// the first connection).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Fails fast instead of letting a request queue up behind a reconnect.
    pub fn ensure_connected(&self) -> Result<(), Unavailable> {
        if self.is_connected() { Ok(()) } else { Err(Unavailable::new("not connected")) }
    }

    /// Times the connection to NATS was established again after the first.
    pub fn reconnects(&self) -> u64 {
        self.connects.borrow().saturating_sub(1)
    }

    /// The highest message id known to exist (see [`Bus::last_sequence`]
    /// for the authoritative one).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    fn saw(&self, seq: u64) {
        self.seen.fetch_max(seq, Ordering::Relaxed);
    }

    /// The stream's state and placement, from its leader.
    async fn stream_info(&self) -> Result<stream::Info, Unavailable> {
        self.ensure_connected()?;
        let info = tokio::time::timeout(READ_TIMEOUT, async {
            let stream = self.js.get_stream_no_info(&self.stream).await.unavailable("cannot reach the stream")?;
            stream.get_info().await.unavailable("cannot read the stream's state")
        })
        .await
        .map_err(|_| Unavailable::new("the stream's leader did not answer in time"))??;
        self.saw(info.state.last_sequence);
        Ok(info)
    }

    /// The stream's last sequence: the newest message id.
    pub async fn last_sequence(&self) -> Result<u64, Unavailable> {
        Ok(self.stream_info().await?.state.last_sequence)
    }

    /// Where the stream lives: for `/api/stats`, so operators (and tests)
    /// can see the leader and whether every replica is caught up.
    pub async fn placement(&self) -> Result<Placement, Unavailable> {
        let info = self.stream_info().await?;
        let cluster = info.cluster.unwrap_or_default();
        Ok(Placement {
            server: self.client.server_info().server_name,
            leader: cluster.leader,
            replicas: cluster
                .replicas
                .into_iter()
                .map(|peer| Replica { name: peer.name, current: peer.current && !peer.offline, lag: peer.lag })
                .collect(),
        })
    }

    /// Number of messages matching `filter` with a sequence of at least
    /// `from`, and the first of them.
    pub async fn count(&self, filter: &str, from: u64) -> Result<Count, Unavailable> {
        self.count_from(&self.stream, filter, Start::Seq(from)).await
    }

    /// Number of messages matching `filter` stored at or after `since`.
    pub async fn count_since(&self, filter: &str, since: time::OffsetDateTime) -> Result<Count, Unavailable> {
        self.count_from(&self.stream, filter, Start::Time(since)).await
    }

    /// Number of state bucket keys under `prefix` (e.g. `agent.`).
    pub async fn count_keys(&self, prefix: &str) -> Result<u64, Unavailable> {
        let filter = format!("$KV.{}.{prefix}>", self.kv_bucket);
        Ok(self.count_from(&format!("KV_{}", self.kv_bucket), &filter, Start::Seq(1)).await?.total)
    }

    async fn count_from(&self, stream: &str, filter: &str, start: Start) -> Result<Count, Unavailable> {
        let batch = self.direct_batch(stream, filter, start, 1).await?;
        let first = batch.messages.first();
        Ok(Count {
            total: batch.messages.len() as u64 + batch.pending,
            first: first.map(|m| m.seq),
            first_stored: first.map(|m| m.stored),
        })
    }

    /// One message by id, if it still exists, as any caught-up replica has it.
    pub async fn message(&self, seq: u64) -> Result<Option<RawMessage>, Unavailable> {
        let batch = self.direct_batch(&self.stream, &self.subjects.every_message(), Start::Seq(seq), 1).await?;
        Ok(batch.messages.into_iter().next().filter(|m| m.seq == seq))
    }

    /// Id of the first message stored at or after `at`.
    pub async fn first_stored_since(&self, at: time::OffsetDateTime) -> Result<Option<u64>, Unavailable> {
        let batch = self.direct_batch(&self.stream, &self.subjects.every_message(), Start::Time(at), 1).await?;
        Ok(batch.messages.first().map(|m| m.seq))
    }

    /// Scans messages matching any of `filters`, each from its own start,
    /// in id order.
    pub fn scan(&self, filters: Vec<(String, Start)>, chunk: usize) -> scan::Scan<'_> {
        scan::Scan::new(self, self.stream.clone(), filters, chunk)
    }

    /// Follows messages matching `filters` from sequence `from` on.
    pub fn follow(&self, filters: Vec<String>, from: u64) -> Follower {
        Follower::new(self.clone(), filters, from)
    }

    /// Current values of the state bucket under `prefix` (e.g. `agent.`),
    /// keyed by the rest of the key, read in bulk rather than key by key.
    /// Values that are not JSON of type `T` are skipped.
    pub async fn kv_values<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<HashMap<String, KvValue<T>>, Unavailable> {
        let subject_prefix = format!("$KV.{}.{prefix}", self.kv_bucket);
        let filter = format!("{subject_prefix}>");
        let mut scan = scan::Scan::new(self, format!("KV_{}", self.kv_bucket), vec![(filter, Start::Seq(1))], 256);
        let mut values = HashMap::new();
        while let Some(message) = scan.next().await? {
            let key = message.subject.strip_prefix(&subject_prefix).unwrap_or_default();
            if !message.is_kv_value() {
                values.remove(key);
            } else if let Ok(value) = serde_json::from_slice(&message.payload) {
                values.insert(key.to_owned(), KvValue { value, revision: message.seq, stored: message.stored });
            }
        }
        Ok(values)
    }
}

impl Bus {
    /// The current value of one state bucket key, if it exists and is JSON
    /// of type `T`.
    pub async fn kv_get<T: DeserializeOwned>(&self, key: String) -> Result<Option<KvValue<T>>, Unavailable> {
        Ok(self.kv_get_many(vec![key]).await?.into_values().next())
    }

    /// Current values of the given state bucket keys that exist, read in
    /// requests of a few hundred keys rather than one per key. Values that
    /// are not JSON of type `T` are left out.
    pub async fn kv_get_many<T: DeserializeOwned>(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, KvValue<T>>, Unavailable> {
        let subject_prefix = format!("$KV.{}.", self.kv_bucket);
        let subjects: Vec<String> = keys.iter().map(|key| format!("{subject_prefix}{key}")).collect();
        let stream = format!("KV_{}", self.kv_bucket);
        let reads = subjects.chunks(direct::MAX_LAST_SUBJECTS).map(|chunk| self.direct_last(&stream, chunk));
        let mut values = HashMap::new();
        for message in futures_util::future::try_join_all(reads).await?.into_iter().flatten() {
            let Some(key) = message.subject.strip_prefix(&subject_prefix) else { continue };
            if !message.is_kv_value() {
                continue;
            }
            if let Ok(value) = serde_json::from_slice(&message.payload) {
                values.insert(key.to_owned(), KvValue { value, revision: message.seq, stored: message.stored });
            }
        }
        Ok(values)
    }
}

/// An unread count and where the counted messages start.
#[derive(Clone, Copy, Debug, Default)]
pub struct Count {
    pub total: u64,
    /// Id of the first counted message, and when it was stored.
    pub first: Option<u64>,
    pub first_stored: Option<time::OffsetDateTime>,
}
