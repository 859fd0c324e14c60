//! Storing a message so that the HTTP answer never lies.
//!
//! 200 must mean "stored", and an error must mean "not stored". The hard case
//! is an ambiguous publish: the connection dropped or the ack timed out, so the
//! message may or may not have been stored — and the NATS client buffers
//! publishes across a reconnect, so it may even be stored later.
//!
//! Every publish carries a `Nats-Msg-Id`, so repeating it is harmless within
//! the stream's duplicate window. An ambiguous publish is repeated until the
//! server gives a definite answer ("stored" or "duplicate of seq N": both
//! mean stored) or the send deadline passes. Past the deadline the client gets
//! 503, and a background task *withdraws* the message: it publishes a marker
//! with the same id to the `void` subject. If the marker is stored, the
//! original never will be; if the marker is a duplicate, the original landed
//! after all and is deleted.

use std::sync::atomic::Ordering;
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

/// A definite failure: nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("NATS cannot store the message right now: {0}")]
    Unavailable(String),
    #[error("the message exceeds the server's maximum payload")]
    TooLarge,
}

enum Attempt {
    Definite(SendError),
    Ambiguous(String),
}

/// Pause between attempts while the outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl Bus {
    /// Stores `out`, or fails having stored nothing (see the module docs).
    pub async fn store(&self, out: &Outgoing) -> Result<Stored, SendError> {
        if !self.is_connected() {
            return Err(SendError::Unavailable("not connected".into()));
        }
        let _admitted = self
            .in_flight
            .try_acquire()
            .map_err(|_| SendError::Unavailable("too many sends waiting for JetStream".into()))?;
        let deadline = Instant::now() + self.send_timeout;
        let mut ambiguous = None;
        loop {
            if self.is_connected() {
                match self.publish_once(&out.subject, out, deadline).await {
                    Ok(ack) => {
                        return Ok(Stored { seq: ack.sequence, duplicate: ack.duplicate });
                    }
                    // Nothing of ours can be in flight: the failure is final.
                    Err(Attempt::Definite(err)) if ambiguous.is_none() => return Err(err),
                    // An earlier attempt may still land: keep asking.
                    Err(Attempt::Definite(_)) => {}
                    Err(Attempt::Ambiguous(why)) => ambiguous = Some(why),
                }
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                break;
            }
            sleep(RETRY_PAUSE).await;
        }
        match ambiguous {
            Some(why) => {
                self.withdraw(out.msg_id.clone());
                Err(SendError::Unavailable(format!("no confirmation from JetStream ({why})")))
            }
            None => Err(SendError::Unavailable("not connected".into())),
        }
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
            Err(_) => return Err(Attempt::Ambiguous("deadline passed".into())),
        };
        Err(match err.kind() {
            PublishErrorKind::MaxPayloadExceeded => Attempt::Definite(SendError::TooLarge),
            // No stream leader took it, or the server refused it.
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending | PublishErrorKind::Other => {
                Attempt::Definite(SendError::Unavailable(err.to_string()))
            }
            _ => Attempt::Ambiguous(err.to_string()),
        })
    }

    /// Makes sure a send answered 503 is not stored: see the module docs.
    fn withdraw(&self, msg_id: String) {
        let bus = self.clone();
        bus.retractions.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let marker = Outgoing { subject: bus.subjects.void(), msg_id, payload: Bytes::new() };
            let mut pause = Duration::from_millis(100);
            loop {
                let deadline = Instant::now() + bus.send_timeout;
                if bus.is_connected()
                    && let Ok(ack) = bus.publish_once(&marker.subject, &marker, deadline).await
                    && (!ack.duplicate || bus.delete_unless_marker(ack.sequence).await)
                {
                    break;
                }
                sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            bus.retractions.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// The id was taken by `seq`: the original message, or an earlier attempt
    /// at the marker. Deletes the former. True when done.
    async fn delete_unless_marker(&self, seq: u64) -> bool {
        let stream = match self.js.get_stream_no_info(&self.stream).await {
            Ok(stream) => stream,
            Err(_) => return false,
        };
        match stream.direct_get(seq).await {
            Ok(message) if message.subject.as_str() == self.subjects.void() => true,
            Ok(_) => match stream.delete_message(seq).await {
                Ok(_) => {
                    tracing::warn!(seq, "withdrew message {seq}: it was stored after its send was answered 503");
                    true
                }
                Err(err) => {
                    tracing::warn!(seq, "cannot withdraw message yet: {err}");
                    false
                }
            },
            // Already gone (expired or deleted): nothing to withdraw.
            Err(err) if err.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => true,
            Err(_) => false,
        }
    }
}
