//! JetStream: the only state clawbus has.
//!
//! One stream holds every message (the stream sequence is the message id);
//! one KV bucket holds the small per-agent records: registration, read marks,
//! wake marks, and host heartbeats. Adapters keep nothing that matters in
//! memory, so any adapter can answer for any agent and a restart loses nothing.

pub(crate) mod clock;
mod connect;
mod direct;
mod follow;
mod full;
mod health;
mod incarnation;
mod owned;
mod provision;
mod publish;
mod replies;
mod scan;
mod subjects;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv, stream};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};

pub(crate) use connect::{Nats, Unreached, connect, connect_within, inbox_prefix};
pub(crate) use direct::{RawMessage, Start};
pub(crate) use follow::Follower;
pub(crate) use health::Status as Health;
pub(crate) use incarnation::Incarnation;
pub(crate) use owned::Owned;
pub(crate) use provision::Missing;
pub(crate) use publish::{Outgoing, SendError, Stored};
pub(crate) use subjects::{Inbox, Route, Subjects};

/// A JetStream request failed, or NATS cannot be reached: nothing was
/// changed, and the HTTP layer answers 503 (507 when the store is full).
#[derive(Debug, thiserror::Error)]
#[error("NATS is unavailable: {what}")]
pub(crate) struct Unavailable {
    what: Cow<'static, str>,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Unavailable {
    pub(crate) fn new(what: impl Into<Cow<'static, str>>) -> Self {
        Self { what: what.into(), source: None }
    }

    /// `source` is any error, or one the NATS client already boxed.
    pub(crate) fn caused(
        what: impl Into<Cow<'static, str>>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self { what: what.into(), source: Some(source.into()) }
    }

    /// JetStream's refusal that caused this, when it says that a storage
    /// limit is reached (see `full`).
    pub(crate) fn store_full(&self) -> Option<&jetstream::Error> {
        full::storage_limit(self)
    }
}

/// `.unavailable("what was being done")` on a NATS result keeps the error as
/// the cause.
pub(crate) trait OrUnavailable<T> {
    fn unavailable(self, what: &'static str) -> Result<T, Unavailable>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> OrUnavailable<T> for Result<T, E> {
    fn unavailable(self, what: &'static str) -> Result<T, Unavailable> {
        self.map_err(|err| Unavailable::caused(what, err))
    }
}

/// A value of the state bucket and when the server stored it.
pub(crate) struct KvValue<T> {
    pub value: T,
    pub revision: u64,
    pub stored: time::OffsetDateTime,
}

/// The server this adapter is connected to, and the stream's replicas.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Placement {
    pub server: String,
    pub leader: Option<String>,
    /// The followers (the leader is not listed).
    pub replicas: Vec<Replica>,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct Replica {
    pub name: String,
    pub current: bool,
    pub lag: Option<u64>,
}

/// The largest record written to the state bucket, whatever the server takes: tens of
/// thousands of holes, half of NATS's default payload limit (1 MiB), and
/// small enough to read with every inbox page.
pub(crate) const MAX_RECORD_BYTES: usize = 512 * 1024;

/// How large the record of the state bucket may grow on a server that takes payloads of
/// up to `max_payload` bytes (0: not known yet): half of that, leaving room
/// for the message's headers, and at most [`MAX_RECORD_BYTES`]. Giving up a
/// hole hides an unread message, so the bound is as high as the server
/// allows rather than a fixed small size; a limit not known yet is taken as
/// the largest, since a record the server refuses only fails that ack.
pub(crate) fn record_limit(max_payload: usize) -> usize {
    match max_payload {
        0 => MAX_RECORD_BYTES,
        payload => (payload / 2).min(MAX_RECORD_BYTES),
    }
}

/// Deadline of one read from JetStream.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected, provisioned bus.
#[derive(Clone)]
pub(crate) struct Bus {
    client: async_nats::Client,
    connects: watch::Receiver<u64>,
    health: Arc<health::Health>,
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
    /// Where the replies to direct gets arrive (see `replies`).
    replies: Arc<replies::Replies>,
    /// The newest version of each record this adapter read from a leader or
    /// wrote, and when (see [`Bus::kv_leader_entry`]).
    newest: Arc<std::sync::Mutex<HashMap<String, (LeaderEntry, tokio::time::Instant)>>>,
    /// The server's time, which every decision goes by (see `clock`).
    clock: Arc<clock::ServerClock>,
    /// The stream's incarnation, which records are written for (see
    /// `incarnation`).
    incarnation: Arc<incarnation::Current>,
}

/// How long a version this adapter saw outranks an older one that a leader
/// answers: a node cut off from its cluster may still act as leader until
/// it notices, and answer with what it had. Past this, the leader's answer
/// is taken as it is (a re-created bucket numbers its versions afresh).
const NEWEST_TRUSTED: Duration = Duration::from_secs(60);

impl Bus {
    pub(crate) fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub(crate) fn kv(&self) -> &kv::Store {
        &self.kv
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The largest payload the connected server takes, in bytes (0 before
    /// the first connection).
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Fails fast instead of letting a request queue up behind a reconnect.
    pub(crate) fn ensure_connected(&self) -> Result<(), Unavailable> {
        if self.is_connected() { Ok(()) } else { Err(Unavailable::new("not connected")) }
    }

    /// Whether JetStream answers through the server connected to, which
    /// one that is, and why not (see `health`).
    pub(crate) fn health(&self) -> Health {
        self.health.status()
    }

    /// Fails fast while JetStream does not answer through this server:
    /// connected, but to a node cut off from its cluster or stalled.
    pub(crate) fn ensure_healthy(&self) -> Result<(), Unavailable> {
        self.ensure_connected()?;
        self.health.check().map_err(Unavailable::new)
    }

    /// The NATS server's time now: what presence, the limits' windows and
    /// message timestamps go by, whatever this host's clock says.
    pub(crate) fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// Reads the server's time again (at start-up and every heartbeat), and
    /// logs when this host's clock is off by more than
    /// [`clock::SKEW_TOLERANCE`].
    pub(crate) async fn read_clock(&self) -> Result<clock::Reading, Unavailable> {
        self.ensure_connected()?;
        let (anchor, reading) = clock::read(&self.js, &format!("KV_{}", self.kv_bucket)).await?;
        self.clock.set(anchor, reading);
        Ok(reading)
    }

    /// Times the connection to NATS was established again after the first.
    pub(crate) fn reconnects(&self) -> u64 {
        self.connects.borrow().saturating_sub(1)
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
        self.saw_created(info.created);
        Ok(info)
    }

    /// The stream's last sequence: the newest message id.
    pub(crate) async fn last_sequence(&self) -> Result<u64, Unavailable> {
        Ok(self.stream_info().await?.state.last_sequence)
    }

    /// Where the stream lives: for `/api/stats`, so operators (and tests)
    /// can see the leader and whether every replica is caught up.
    pub(crate) async fn placement(&self) -> Result<Placement, Unavailable> {
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
    pub(crate) async fn count(&self, filter: &str, from: u64) -> Result<Count, Unavailable> {
        self.count_from(&self.stream, filter, Start::Seq(from)).await
    }

    /// Number of messages matching `filter` stored at or after `since`.
    pub(crate) async fn count_since(&self, filter: &str, since: time::OffsetDateTime) -> Result<Count, Unavailable> {
        self.count_from(&self.stream, filter, Start::Time(since)).await
    }

    /// Number of state bucket keys under `prefix` (e.g. `agent.`).
    pub(crate) async fn count_keys(&self, prefix: &str) -> Result<u64, Unavailable> {
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

    /// One message by id, if it still exists. Any replica may answer; one
    /// that has not caught up yet does not have the message, so "no such
    /// message" is asked again of the stream's leader before it is believed
    /// (an acknowledgement would otherwise be ignored, or a reply refused).
    pub(crate) async fn message(&self, seq: u64) -> Result<Option<RawMessage>, Unavailable> {
        let every = self.subjects.every_message();
        let batch = self.direct_batch(&self.stream, &every, Start::Seq(seq), 1).await?;
        if let Some(found) = batch.messages.into_iter().next().filter(|m| m.seq == seq) {
            return Ok(Some(found));
        }
        Ok(self.first_on_leader_of(&[(every, seq)]).await?.filter(|m| m.seq == seq))
    }

    /// Id of the first message stored at or after `at`.
    pub(crate) async fn first_stored_since(&self, at: time::OffsetDateTime) -> Result<Option<u64>, Unavailable> {
        let batch = self.direct_batch(&self.stream, &self.subjects.every_message(), Start::Time(at), 1).await?;
        Ok(batch.messages.first().map(|m| m.seq))
    }

    /// Scans messages matching any of `filters`, each from its own start,
    /// in id order.
    pub(crate) fn scan(&self, filters: Vec<(String, Start)>, chunk: usize) -> scan::Scan<'_> {
        scan::Scan::new(self, self.stream.clone(), filters, chunk)
    }

    /// Follows messages matching `filters` from sequence `from` on.
    pub(crate) fn follow(&self, filters: Vec<String>, from: u64) -> Follower {
        Follower::new(self.clone(), filters, from)
    }

    /// Current values of the state bucket under `prefix` (e.g. `agent.`),
    /// keyed by the rest of the key, read in bulk rather than key by key.
    /// Values that are not JSON of type `T` are skipped.
    pub(crate) async fn kv_values<T: DeserializeOwned>(
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

/// A state bucket key's newest version, as the bucket's leader has it.
#[derive(Clone)]
pub(crate) struct LeaderEntry {
    /// `None` when the newest version is a delete or purge marker.
    pub value: Option<bytes::Bytes>,
    pub revision: u64,
    pub stored: time::OffsetDateTime,
}

impl Bus {
    /// The newest version of one state bucket key, read from the bucket's
    /// leader. For records whose readers must never be shown an older
    /// version than one already acted on (read marks): a direct get may be
    /// answered by a replica that is behind, by seconds after a partition
    /// heals, and an acknowledged message would show unread again.
    pub(crate) async fn kv_leader_entry(&self, key: &str) -> Result<Option<LeaderEntry>, Unavailable> {
        self.ensure_connected()?;
        let subject = format!("$KV.{}.{key}", self.kv_bucket);
        let read = async {
            let stream = self
                .js
                .get_stream_no_info(format!("KV_{}", self.kv_bucket))
                .await
                .unavailable("cannot reach the state bucket")?;
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => Ok(Some(message)),
                Err(err) if err.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(err) => Err(Unavailable::caused("cannot read a state record", err)),
            }
        };
        let message = tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| Unavailable::new("the state bucket's leader did not answer in time"))??;
        let Some(message) = message else { return Ok(None) };
        let deleted = message.headers.get("KV-Operation").is_some_and(|op| op.as_str() != "PUT");
        let answered = LeaderEntry {
            value: (!deleted).then_some(message.payload),
            revision: message.sequence,
            stored: message.time,
        };
        Ok(Some(self.newest_of(key, answered)))
    }

    /// Notes a version of a record this adapter has just written.
    pub(crate) fn kv_wrote(&self, key: &str, value: bytes::Bytes, revision: u64, stored: time::OffsetDateTime) {
        self.newest_of(key, LeaderEntry { value: Some(value), revision, stored });
    }

    /// `entry`, unless this adapter saw a newer version of `key` lately:
    /// then that one. Versions of a record only ever grow, so an older one
    /// is a stale answer.
    fn newest_of(&self, key: &str, entry: LeaderEntry) -> LeaderEntry {
        let mut newest = self.newest.lock().expect("newest lock");
        let now = tokio::time::Instant::now();
        if let Some((seen, at)) = newest.get(key)
            && seen.revision > entry.revision
            && now.duration_since(*at) < NEWEST_TRUSTED
        {
            tracing::debug!(key, stale = entry.revision, newer = seen.revision, "a leader answered an older version");
            return seen.clone();
        }
        if newest.len() > 10_000 {
            newest.retain(|_, (_, at)| now.duration_since(*at) < NEWEST_TRUSTED);
        }
        newest.insert(key.to_owned(), (entry.clone(), now));
        entry
    }

    /// The current value of one state bucket key, if it exists and is JSON
    /// of type `T`.
    pub(crate) async fn kv_get<T: DeserializeOwned>(&self, key: String) -> Result<Option<KvValue<T>>, Unavailable> {
        Ok(self.kv_get_many(vec![key]).await?.into_values().next())
    }

    /// Current values of the given state bucket keys that exist, read in
    /// requests of a few hundred keys rather than one per key. Values that
    /// are not JSON of type `T` are left out.
    pub(crate) async fn kv_get_many<T: DeserializeOwned>(
        &self,
        keys: Vec<String>,
    ) -> Result<HashMap<String, KvValue<T>>, Unavailable> {
        let subject_prefix = format!("$KV.{}.", self.kv_bucket);
        let subjects: Vec<String> = keys.iter().map(|key| format!("{subject_prefix}{key}")).collect();
        let stream = format!("KV_{}", self.kv_bucket);
        let limit = record_limit(self.max_payload());
        let reads = direct::requests(&subjects, limit).into_iter().map(|chunk| self.direct_last(&stream, chunk));
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
pub(crate) struct Count {
    pub total: u64,
    /// Id of the first counted message, and when it was stored.
    pub first: Option<u64>,
    pub first_stored: Option<time::OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_the_server_payload_limit() {
        assert_eq!(record_limit(16 * 1024), 8 * 1024);
        assert_eq!(record_limit(1024 * 1024), MAX_RECORD_BYTES);
        assert_eq!(record_limit(8 * 1024 * 1024), MAX_RECORD_BYTES);
        assert_eq!(record_limit(0), MAX_RECORD_BYTES, "a limit not known yet gives nothing up");
    }
}
