//! Storing a message so that the HTTP answer never lies.
//!
//! 200 must mean "stored", and 503 must mean "not stored". The hard case is
//! an ambiguous publish: the connection dropped or the acknowledgement is
//! late, so the message may or may not be stored, and the NATS client even
//! buffers publishes across a reconnect, so it may be stored later still.
//!
//! Every publish carries a `Nats-Msg-Id`, so repeating it is harmless within
//! the stream's duplicate window. An ambiguous publish is settled before the
//! client is answered:
//!
//! 1. Until `nats.send_timeout`, the publish is repeated with the same id. A
//!    definite answer, "stored" or "duplicate of N", means stored: 200.
//! 2. After that, a marker with the same id is published to the `void`
//!    subject instead. If the marker is stored, the id is taken and the
//!    original can never be: 503. If the marker is a duplicate, the original
//!    (or an earlier send with the same key) was stored: 200 with its id.
//! 3. If NATS answers neither within `SETTLE_TIMEOUT` more, the outcome is
//!    unknown and the client is told so (504): it should retry with the same
//!    `Idempotency-Key`, which then resolves to the one stored copy.
//!
//! Nothing is ever deleted, so no answer given is ever contradicted.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use bytes::Bytes;
use tokio::time::{Instant, sleep, timeout};

use super::Bus;

/// A message ready to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    /// Deduplication id (`Nats-Msg-Id`).
    pub msg_id: String,
    pub payload: Bytes,
}

/// A definite success.
#[derive(Clone, Copy, Debug)]
pub struct Stored {
    pub seq: u64,
    /// An earlier publish with the same id was stored at `seq`.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Definitely not stored.
    #[error("NATS cannot store the message right now: {0}")]
    Unavailable(String),
    /// Definitely not stored.
    #[error("the message exceeds the server's maximum payload")]
    TooLarge,
    /// Perhaps stored: NATS could not be asked.
    #[error("the outcome is unknown (NATS unreachable); retry with the same Idempotency-Key")]
    Unknown,
}

enum Attempt {
    Definite(SendError),
    Ambiguous,
}

/// Pause between attempts while the outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long past `nats.send_timeout` a send waits to settle an ambiguous
/// publish before answering that its outcome is unknown.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

impl Bus {
    /// Stores `out`; an error other than [`SendError::Unknown`] means that
    /// nothing was stored (see the module docs).
    pub async fn store(&self, out: &Outgoing) -> Result<Stored, SendError> {
        if !self.is_connected() {
            return Err(SendError::Unavailable("not connected".into()));
        }
        let _admitted = self
            .in_flight
            .try_acquire()
            .map_err(|_| SendError::Unavailable("too many sends waiting for JetStream".into()))?;
        let deadline = Instant::now() + self.send_timeout;
        let mut in_doubt = false;
        loop {
            match self.publish_once(&out.subject, out, deadline).await {
                Ok(ack) => return Ok(Stored { seq: ack.sequence, duplicate: ack.duplicate }),
                // Nothing of ours can be in flight: the failure is final.
                Err(Attempt::Definite(err)) if !in_doubt => return Err(err),
                // An earlier attempt may still land: keep asking.
                Err(_) => in_doubt = true,
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return self.settle(out).await;
            }
            sleep(RETRY_PAUSE).await;
            // Repeats go out only once connected: a publish buffered during
            // a reconnect would only add to what is in doubt.
            while !self.is_connected() && Instant::now() < deadline {
                sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// Settles an ambiguous publish by taking its id with a marker.
    async fn settle(&self, out: &Outgoing) -> Result<Stored, SendError> {
        let marker = Outgoing { subject: self.subjects.void(), msg_id: out.msg_id.clone(), payload: Bytes::new() };
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while Instant::now() < deadline {
            if self.is_connected()
                && let Ok(ack) = self.publish_once(&marker.subject, &marker, deadline).await
            {
                if !ack.duplicate {
                    tracing::info!(msg_id = %out.msg_id, "a send whose outcome was unknown was not stored");
                    return Err(SendError::Unavailable("no confirmation from JetStream in time".into()));
                }
                // The id was taken first: by the original, an earlier send
                // with the same key, or an earlier marker.
                match self.message(ack.sequence).await {
                    Ok(Some(stored)) => {
                        let duplicate = stored.payload != out.payload;
                        return Ok(Stored { seq: ack.sequence, duplicate });
                    }
                    Ok(None) => return Err(SendError::Unavailable("no confirmation from JetStream in time".into())),
                    Err(_) => {}
                }
            }
            sleep(RETRY_PAUSE).await;
        }
        tracing::warn!(msg_id = %out.msg_id, "outcome of a send unknown: NATS unreachable");
        Err(SendError::Unknown)
    }

    async fn publish_once(&self, subject: &str, out: &Outgoing, deadline: Instant) -> Result<PublishAck, Attempt> {
        let publish = PublishMessage::build().payload(out.payload.clone()).message_id(&out.msg_id);
        let result = timeout(deadline.saturating_duration_since(Instant::now()), async {
            self.js.send_publish(subject.to_owned(), publish).await?.await
        })
        .await;
        let err = match result {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(err)) => err,
            Err(_) => return Err(Attempt::Ambiguous),
        };
        Err(match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => Attempt::Definite(SendError::TooLarge),
            // No stream leader took it, or the server refused it.
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending | PublishErrorKind::Other => {
                Attempt::Definite(SendError::Unavailable(err.to_string()))
            }
            _ => Attempt::Ambiguous,
        })
    }
}
