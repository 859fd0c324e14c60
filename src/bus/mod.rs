//! JetStream: the only state clawbus has.
//!
//! One stream holds every message (the stream sequence is the message id);
//! one KV bucket holds the small per-agent records: registration, read marks,
//! wake marks, and host heartbeats. Adapters keep nothing that matters in
//! memory, so any adapter can answer for any agent and a restart loses nothing.

mod direct;
mod follow;
mod publish;
mod scan;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, kv, stream};
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::message::Subjects;

pub use direct::{RawMessage, Start};
pub use follow::Follower;
pub use publish::{Outgoing, SendError, Stored};
pub use scan::Scan;

/// A JetStream request failed; the HTTP layer answers 503.
#[derive(Debug, thiserror::Error)]
#[error("NATS is unavailable: {0}")]
pub struct Unavailable(pub String);

impl Unavailable {
    pub fn from(err: impl std::fmt::Display) -> Self {
        Self(err.to_string())
    }
}

/// A value of the state bucket and when the server stored it.
pub struct KvValue<T> {
    pub value: T,
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

/// Sends one adapter lets wait for JetStream at once. A single node
/// persists a few thousand messages per second with fsync, so this is
/// about a quarter of a second of backlog at most.
const MAX_SENDS_IN_FLIGHT: usize = 1024;

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
    /// Admission control for sends: past this many in flight, a send is
    /// refused at once (503) instead of queueing towards its deadline.
    in_flight: Arc<Semaphore>,
}

/// A NATS connection and a count of the times it was (re)established.
#[derive(Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    /// Bumped on every (re)connect: server-side state such as ephemeral
    /// consumers may be gone, and followers recreate theirs at once instead
    /// of waiting for missed heartbeats.
    connects: watch::Receiver<u64>,
}

/// Connects without waiting: the client keeps retrying in the background, so
/// the adapter can serve `/healthz` (and answer 503) while NATS is away.
pub async fn connect(config: &Config) -> anyhow::Result<Nats> {
    let (bump, connects) = watch::channel(0u64);
    let nats = &config.nats;
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("clawbus@{}", config.host))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .ping_interval(Duration::from_secs(10))
        .connection_timeout(Duration::from_secs(3))
        .reconnect_delay_callback(|attempt| {
            let exp = attempt.min(6) as u32;
            Duration::from_millis(50 * 2u64.pow(exp)).min(Duration::from_secs(2))
        })
        .event_callback(move |event| {
            let bump = bump.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!("connected to NATS");
                        bump.send_modify(|count| *count += 1);
                    }
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    other => tracing::info!("NATS: {other}"),
                }
            }
        });
    if let Some(path) = &nats.credentials {
        options = options.credentials_file(path).await?;
    }
    if let (Some(user), Some(password)) = (&nats.user, &nats.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &nats.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &nats.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&nats.tls_cert, &nats.tls_key) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let client = options.connect(nats.urls()).await?;
    Ok(Nats { client, connects })
}

impl Bus {
    /// Creates or updates the stream and the state bucket. Idempotent: every
    /// adapter runs it at start-up and none resets what another stored.
    pub async fn provision(connection: Nats, config: &Config) -> Result<Bus, Unavailable> {
        let Nats { client, connects } = connection;
        let nats = &config.nats;
        let js = jetstream::ContextBuilder::new().timeout(nats.send_timeout).build(client.clone());
        let subjects = Subjects::new(config.subject_prefix());
        js.create_or_update_stream(stream::Config {
            name: nats.stream.clone(),
            description: Some("clawbus agent messages".into()),
            subjects: subjects.stream_subjects(),
            storage: stream::StorageType::File,
            num_replicas: nats.replicas,
            max_age: nats.max_age,
            duplicate_window: nats.duplicate_window,
            allow_direct: true,
            discard: stream::DiscardPolicy::Old,
            ..Default::default()
        })
        .await
        .map_err(Unavailable::from)?;
        let kv_bucket = format!("{}_STATE", nats.stream);
        let kv = js
            .create_or_update_key_value(kv::Config {
                bucket: kv_bucket.clone(),
                description: "clawbus registry, read marks and wake marks".into(),
                history: 1,
                storage: stream::StorageType::File,
                num_replicas: nats.replicas,
                ..Default::default()
            })
            .await
            .map_err(Unavailable::from)?;
        Ok(Bus {
            client,
            connects,
            js,
            stream: nats.stream.clone(),
            kv,
            kv_bucket,
            subjects,
            send_timeout: nats.send_timeout,
            in_flight: Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT)),
        })
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Fails fast instead of letting a request queue up behind a reconnect.
    pub fn ensure_connected(&self) -> Result<(), Unavailable> {
        if self.is_connected() { Ok(()) } else { Err(Unavailable("not connected".into())) }
    }

    /// The stream's state and placement, from its leader.
    async fn stream_info(&self) -> Result<stream::Info, Unavailable> {
        self.ensure_connected()?;
        tokio::time::timeout(READ_TIMEOUT, async {
            self.js.get_stream_no_info(&self.stream).await?.get_info().await.map_err(anyhow::Error::from)
        })
        .await
        .map_err(Unavailable::from)?
        .map_err(Unavailable::from)
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

    /// Number of messages matching `filter` with a sequence of at least `from`.
    pub async fn count(&self, filter: &str, from: u64) -> Result<u64, Unavailable> {
        let batch = self.direct_batch(&self.stream, filter, Start::Seq(from), 1).await?;
        Ok(batch.messages.len() as u64 + batch.pending)
    }

    /// One message by id, if it still exists.
    pub async fn message(&self, seq: u64) -> Result<Option<RawMessage>, Unavailable> {
        let batch = self.direct_batch(&self.stream, &self.subjects.every_message(), Start::Seq(seq), 1).await?;
        Ok(batch.messages.into_iter().next().filter(|m| m.seq == seq))
    }

    /// Scans messages matching any of `filters`, each from its own start,
    /// in id order.
    pub fn scan(&self, filters: Vec<(String, Start)>, chunk: usize) -> Scan<'_> {
        Scan::new(self, self.stream.clone(), filters, chunk)
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
        let mut scan = Scan::new(self, format!("KV_{}", self.kv_bucket), vec![(filter, Start::Seq(1))], 256);
        let mut values = HashMap::new();
        while let Some(message) = scan.next().await? {
            let key = message.subject.strip_prefix(&subject_prefix).unwrap_or_default();
            if let (true, Ok(value)) = (message.is_kv_value(), serde_json::from_slice(&message.payload)) {
                values.insert(key.to_owned(), KvValue { value, stored: message.stored });
            }
        }
        Ok(values)
    }
}
