//! Creating the stream and the state bucket, and noticing when they are gone.

use std::sync::Arc;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, kv, stream};
use tokio::sync::Semaphore;

use super::{Bus, Nats, OrUnavailable, READ_TIMEOUT, Subjects, Unavailable};
use crate::config::Config;

/// What a look at the stream and the bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    Stream,
    Bucket,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Missing::Stream => "message stream",
            Missing::Bucket => "state bucket",
        })
    }
}

impl Bus {
    /// The bus as `serve` needs it. Creates or updates the state bucket and
    /// updates the stream (idempotent: every adapter runs it at start-up and
    /// none resets what another stored), unless this host has least
    /// privilege: then they must exist already, made by `clawbus setup`.
    /// Either way the bus has read the server's time before it is used. A
    /// stream that does not exist is left to [`Bus::create_stream`]: where
    /// it starts depends on what the fleet's records say.
    pub(crate) async fn open(connection: Nats, config: &Config) -> Result<Bus, Unavailable> {
        if !config.nats.least_privilege {
            return Bus::setup(connection, config).await;
        }
        let js = context(&connection, config);
        let missing = |what: &str| {
            Unavailable::new(format!(
                "the {what} does not exist, and this host's NATS user may not create it: \
                 run `clawbus setup` with the provisioning user's config"
            ))
        };
        let kv = js.get_key_value(config.bucket()).await.map_err(|_| missing("state bucket"))?;
        let bus = Bus::new(connection, js, kv, config).with_clock().await?;
        let info = bus.js.get_stream(&config.nats.stream).await.map_err(|_| missing("stream"))?.cached_info().created;
        bus.saw_created(info);
        Ok(bus)
    }

    /// Creates or updates the state bucket, and updates the stream to
    /// `config` if it exists.
    pub(crate) async fn setup(connection: Nats, config: &Config) -> Result<Bus, Unavailable> {
        let js = context(&connection, config);
        let kv = create_bucket(&js, &config.bucket(), config.nats.replicas).await?;
        let bus = Bus::new(connection, js, kv, config).with_clock().await?;
        if bus.missing().await? != Some(Missing::Stream) {
            bus.write_stream(config, None).await?;
        }
        Ok(bus)
    }

    async fn with_clock(self) -> Result<Bus, Unavailable> {
        self.read_clock().await?;
        Ok(self)
    }

    fn new(connection: Nats, js: jetstream::Context, kv: kv::Store, config: &Config) -> Bus {
        let Nats { client, connects, health, incarnation } = connection;
        let nats = &config.nats;
        Bus {
            client,
            connects,
            health,
            js,
            stream: nats.stream.clone(),
            kv,
            kv_bucket: config.bucket(),
            subjects: Subjects::new(config.subject_prefix()),
            send_timeout: nats.send_timeout,
            settle_timeout: nats.settle_timeout,
            in_flight: Arc::new(Semaphore::new(nats.max_sends_in_flight)),
            replies: Arc::new(super::replies::Replies::new(nats.reply_buffer)),
            newest: Arc::default(),
            clock: Arc::default(),
            incarnation,
        }
    }

    /// Which of the stream and the bucket no longer exists.
    pub(crate) async fn missing(&self) -> Result<Option<Missing>, Unavailable> {
        self.ensure_connected()?;
        // The bucket first: a stream is re-created from what the bucket says.
        for (name, missing) in [(&format!("KV_{}", self.kv_bucket), Missing::Bucket), (&self.stream, Missing::Stream)] {
            let found = tokio::time::timeout(READ_TIMEOUT, self.js.get_stream(name))
                .await
                .map_err(|_| Unavailable::new("JetStream did not answer in time"))?;
            match found {
                Ok(stream) if missing == Missing::Stream => {
                    self.saw_created(stream.cached_info().created);
                }
                Ok(_) => {}
                Err(err) if is_not_found(err.kind()) => return Ok(Some(missing)),
                Err(err) => return Err(Unavailable::caused("cannot look up the stream", err)),
            }
        }
        Ok(None)
    }

    /// Creates the stream, its first message id `first`: above every id
    /// that the fleet's records mention, so that no id is handed out twice.
    /// (With least privilege the server refuses; `clawbus setup` has to.)
    pub(crate) async fn create_stream(&self, config: &Config, first: u64) -> Result<(), Unavailable> {
        self.write_stream(config, (first > 1).then_some(first)).await
    }

    /// Re-creates the state bucket deleted behind the adapter's back.
    /// (Handles to it keep working: they address it by name.)
    pub(crate) async fn create_bucket(&self, config: &Config) -> Result<(), Unavailable> {
        create_bucket(&self.js, &self.kv_bucket, config.nats.replicas).await.map(drop)
    }

    /// Creates the stream or updates it to `config`.
    async fn write_stream(&self, config: &Config, first_seq: Option<u64>) -> Result<(), Unavailable> {
        let nats = &config.nats;
        let stream = self
            .js
            .create_or_update_stream(stream::Config {
                name: nats.stream.clone(),
                description: Some("clawbus agent messages".into()),
                subjects: self.subjects.stream_subjects(),
                storage: stream::StorageType::File,
                num_replicas: nats.replicas,
                max_age: nats.max_age,
                duplicate_window: nats.duplicate_window,
                allow_direct: true,
                discard: stream::DiscardPolicy::Old,
                first_sequence: first_seq,
                ..Default::default()
            })
            .await
            .unavailable("cannot create or update the stream")?;
        self.saw_created(stream.created);
        Ok(())
    }
}

fn context(connection: &Nats, config: &Config) -> jetstream::Context {
    jetstream::ContextBuilder::new().timeout(config.nats.send_timeout).build(connection.client.clone())
}

fn is_not_found(kind: GetStreamErrorKind) -> bool {
    matches!(kind, GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

async fn create_bucket(js: &jetstream::Context, bucket: &str, replicas: usize) -> Result<kv::Store, Unavailable> {
    js.create_or_update_key_value(kv::Config {
        bucket: bucket.to_owned(),
        description: "clawbus registry, read marks and wake marks".into(),
        history: 1,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    })
    .await
    .unavailable("cannot create or update the state bucket")
}
