//! Creating the stream and the state bucket, and noticing when they are gone.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::{self, ErrorCode, kv, stream};
use tokio::sync::Semaphore;

use super::{Bus, Nats, OrUnavailable, READ_TIMEOUT, Unavailable};
use crate::config::Config;
use crate::message::Subjects;

/// What a look at the stream and the bucket found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
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
    /// The bus as `serve` needs it. Creates or updates the stream and the
    /// state bucket (idempotent: every adapter runs it at start-up and none
    /// resets what another stored), unless this host has least privilege:
    /// then they must exist already, made by `clawbus setup`. Either way the
    /// bus has read the server's time before it is used.
    pub async fn open(connection: Nats, config: &Config) -> Result<Bus, Unavailable> {
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
        js.get_stream(&config.nats.stream).await.map_err(|_| missing("stream"))?;
        Bus::new(connection, js, kv, config).with_clock().await
    }

    /// Creates the stream and the state bucket, or updates them to `config`.
    pub async fn setup(connection: Nats, config: &Config) -> Result<Bus, Unavailable> {
        let js = context(&connection, config);
        create_stream(&js, config, &Subjects::new(config.subject_prefix()), None).await?;
        let kv = create_bucket(&js, &config.bucket(), config.nats.replicas).await?;
        Bus::new(connection, js, kv, config).with_clock().await
    }

    async fn with_clock(self) -> Result<Bus, Unavailable> {
        self.read_clock().await?;
        Ok(self)
    }

    fn new(connection: Nats, js: jetstream::Context, kv: kv::Store, config: &Config) -> Bus {
        let Nats { client, connects, health } = connection;
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
            seen: Arc::new(AtomicU64::new(0)),
            replies: Arc::new(super::replies::Replies::new(nats.reply_buffer)),
            newest: Arc::default(),
            clock: Arc::default(),
        }
    }

    /// Which of the stream and the bucket no longer exists.
    pub async fn missing(&self) -> Result<Option<Missing>, Unavailable> {
        self.ensure_connected()?;
        for (name, missing) in [(&self.stream, Missing::Stream), (&format!("KV_{}", self.kv_bucket), Missing::Bucket)] {
            let found = tokio::time::timeout(READ_TIMEOUT, self.js.get_stream(name))
                .await
                .map_err(|_| Unavailable::new("JetStream did not answer in time"))?;
            match found {
                Ok(_) => {}
                Err(err) if is_not_found(err.kind()) => return Ok(Some(missing)),
                Err(err) => return Err(Unavailable::caused("cannot look up the stream", err)),
            }
        }
        Ok(None)
    }

    /// Re-creates what was deleted behind the adapter's back. The stream
    /// continues after the highest id this adapter has seen. (With least
    /// privilege the server refuses; `clawbus setup` has to.)
    /// (Handles to the bucket keep working: they address it by name.)
    pub async fn recreate(&self, config: &Config, missing: Missing) -> Result<(), Unavailable> {
        match missing {
            Missing::Stream => {
                let first_seq = (self.seen() > 0).then(|| self.seen() + 1);
                create_stream(&self.js, config, &self.subjects, first_seq).await
            }
            Missing::Bucket => create_bucket(&self.js, &self.kv_bucket, config.nats.replicas).await.map(drop),
        }
    }
}

async fn create_stream(
    js: &jetstream::Context,
    config: &Config,
    subjects: &Subjects,
    first_seq: Option<u64>,
) -> Result<(), Unavailable> {
    let nats = &config.nats;
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
        first_sequence: first_seq,
        ..Default::default()
    })
    .await
    .unavailable("cannot create or update the stream")
    .map(drop)
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
