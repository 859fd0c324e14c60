//! Storing a message so that the HTTP answer never lies.
//!
//! 200 must mean "stored", and 503 must mean "not stored". The hard case is
//! an ambiguous publish: the connection dropped or the acknowledgement is
//! late, so the message may or may not be stored, and the NATS client even
//! buffers publishes across a reconnect, so it may be stored later still.
//!
//! Every publish carries a `Nats-Msg-Id`, so repeating it is harmless within
//! the stream's duplicate window, and a `Clawbus-Send` nonce of its own, so a
//! duplicate can be told apart: this very send (an earlier attempt landed),
//! an earlier send with the same id, or a marker. An ambiguous publish is
//! settled before the client is answered:
//!
//! 1. Until `nats.send_timeout`, the publish is repeated with the same id.
//!    "Stored" means stored; "duplicate of N" is looked up (at the stream
//!    leader, never a lagging replica) to learn whose N is.
//! 2. After that, a marker with the same id is published to the `void`
//!    subject instead. If the marker is stored, the id is taken and the
//!    original can never be: 503. If the marker is a duplicate, whatever
//!    holds the id is looked up as above.
//! 3. If NATS answers neither within `nats.settle_timeout` more, the outcome
//!    is unknown and the client is told so (504): it should retry with the
//!    same `Idempotency-Key`, which then resolves to the one stored copy.
//!
//! Nothing is ever deleted, so no answer given is ever contradicted.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use tokio::time::{Instant, sleep, timeout};

use super::direct::header;
use super::{Bus, RawMessage, Unavailable};

/// A message ready to publish.
#[derive(Clone, Debug)]
pub(crate) struct Outgoing {
    pub subject: String,
    /// Deduplication id (`Nats-Msg-Id`).
    pub msg_id: String,
    pub payload: Bytes,
}

/// A definite outcome: the message id is taken, and this says by what.
#[derive(Clone, Debug)]
pub(crate) enum Stored {
    /// This send is stored, as message `seq`.
    New(u64),
    /// An earlier send from the same sender with the same id is stored;
    /// this one stored nothing.
    Earlier(RawMessage),
    /// Something else holds the id: a marker (an earlier send with it was
    /// answered 503), or a message another sender published with it. This
    /// send stored nothing and should try the key's next id.
    Taken,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Definitely not stored; [`Unavailable::store_full`] tells whether
    /// JetStream's store is at its limit.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Definitely not stored.
    #[error("the message exceeds the server's maximum payload")]
    TooLarge,
    /// Perhaps stored: NATS did not answer (unreachable, stalled, or its
    /// disk full, where nats-server answers no publish).
    #[error("the outcome is unknown (NATS did not answer); retry with the same Idempotency-Key")]
    Unknown,
}

enum Attempt {
    Definite(SendError),
    Ambiguous,
}

/// Header naming the send that published a message.
const NONCE_HEADER: &str = "Clawbus-Send";
/// Pause between attempts while the outcome is unknown.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Longest wait for one look-up of a message id's holder.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// Stores `out`; an error other than [`SendError::Unknown`] means that
    /// nothing was stored (see the module docs).
    pub(crate) async fn store(&self, out: &Outgoing) -> Result<Stored, SendError> {
        self.ensure_healthy()?;
        let _admitted =
            self.in_flight.try_acquire().map_err(|_| Unavailable::new("too many sends waiting for JetStream"))?;
        let nonce = nuid::next().to_string();
        let deadline = Instant::now() + self.send_timeout;
        let mut in_doubt = false;
        loop {
            match self.publish_once(&out.subject, out, Some(&nonce), deadline).await {
                Ok(ack) if ack.duplicate => return self.holder(ack.sequence, out, &nonce).await,
                Ok(ack) => {
                    self.saw(ack.sequence);
                    return Ok(Stored::New(ack.sequence));
                }
                // Nothing of ours can be in flight: the failure is final.
                Err(Attempt::Definite(err)) if !in_doubt => return Err(err),
                // An earlier attempt may still land: keep asking.
                Err(_) => in_doubt = true,
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return self.settle(out, &nonce).await;
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
    async fn settle(&self, out: &Outgoing, nonce: &str) -> Result<Stored, SendError> {
        let marker = Outgoing { subject: self.subjects.void(), msg_id: out.msg_id.clone(), payload: Bytes::new() };
        let deadline = Instant::now() + self.settle_timeout;
        while Instant::now() < deadline {
            if self.is_connected()
                && let Ok(ack) = self.publish_once(&marker.subject, &marker, None, deadline).await
            {
                if !ack.duplicate {
                    tracing::info!(msg_id = %out.msg_id, "a send whose outcome was unknown was not stored");
                    return Err(Unavailable::new("no confirmation from JetStream in time").into());
                }
                return self.holder(ack.sequence, out, nonce).await;
            }
            sleep(RETRY_PAUSE).await;
        }
        tracing::warn!(msg_id = %out.msg_id, "outcome of a send unknown: NATS did not answer (unreachable, stalled, or its disk full)");
        Err(SendError::Unknown)
    }

    /// What holds message `seq`, whose id a publish of `out` found taken.
    /// Asked of the stream leader, which stored it: a replica that has not
    /// caught up yet would answer "no such message". Message ids are one
    /// namespace per stream, so a holder from another sender (a host
    /// publishing under someone else's key) is never taken for ours.
    async fn holder(&self, seq: u64, out: &Outgoing, nonce: &str) -> Result<Stored, SendError> {
        let deadline = Instant::now() + self.settle_timeout;
        let stream = self.js.get_stream_no_info(&self.stream).await.map_err(|_| SendError::Unknown)?;
        loop {
            match timeout(LOOKUP_TIMEOUT, stream.get_raw_message(seq)).await {
                Ok(Ok(message)) => {
                    self.saw(seq);
                    let raw = RawMessage {
                        seq,
                        subject: message.subject.to_string(),
                        stored: message.time,
                        payload: message.payload,
                        headers: Some(message.headers),
                    };
                    let sender = |subject: &str| self.subjects.route(subject).map(|route| route.from().to_owned());
                    return Ok(if header(&raw.headers, NONCE_HEADER) == Some(nonce) {
                        Stored::New(seq)
                    } else if sender(&raw.subject).is_some_and(|from| Some(from) == sender(&out.subject)) {
                        Stored::Earlier(raw)
                    } else {
                        Stored::Taken
                    });
                }
                // The holder expired or was removed: nothing stored holds
                // the id any more, so this send is free to store anew.
                Ok(Err(err)) if err.kind() == RawMessageErrorKind::NoMessageFound => return Ok(Stored::Taken),
                Ok(Err(_)) | Err(_) if Instant::now() < deadline => sleep(RETRY_PAUSE).await,
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(seq, "outcome of a send unknown: its message id's holder cannot be read");
                    return Err(SendError::Unknown);
                }
            }
        }
    }

    async fn publish_once(
        &self,
        subject: &str,
        out: &Outgoing,
        nonce: Option<&str>,
        deadline: Instant,
    ) -> Result<PublishAck, Attempt> {
        let mut publish = PublishMessage::build().payload(out.payload.clone()).message_id(&out.msg_id);
        if let Some(nonce) = nonce {
            publish = publish.header(NONCE_HEADER, nonce);
        }
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
            // No stream leader took it, or the server refused it (a full
            // store among other reasons).
            PublishErrorKind::StreamNotFound | PublishErrorKind::MaxAckPending | PublishErrorKind::Other => {
                Attempt::Definite(Unavailable::caused("JetStream refused the message", err).into())
            }
            _ => Attempt::Ambiguous,
        })
    }
}
