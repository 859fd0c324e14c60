//! Following the stream live: an ordered consumer that survives outages.
//!
//! Ordered consumers are ephemeral and cost the server almost nothing (no
//! acks, no replicated state); an adapter has two (the wake dispatcher's,
//! and one shared by its live streams). The client library recreates one after two missed heartbeats; this wrapper
//! shortens that to seconds (idle heartbeats every second), recreates the
//! consumer at once after a reconnect (a restarted server has forgotten it)
//! or any error, always from the sequence after the last one delivered, and
//! drops anything older should a recreated consumer start too early. So a
//! follower never skips or repeats a message. A stream created again is
//! followed from its start: its ids may be below the last one delivered
//! (see `incarnation`), and the follower's owner learns of it through
//! [`Follower::incarnation`].

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Bus, Incarnation, OrUnavailable, RawMessage, Unavailable};

pub(crate) struct Follower {
    bus: Bus,
    filters: Vec<String>,
    next: u64,
    messages: Option<pull::Ordered>,
    connects: watch::Receiver<u64>,
    /// The stream incarnation followed (`None`: not opened yet), and the
    /// bus's news of it.
    incarnation: Option<Incarnation>,
    incarnations: watch::Receiver<Option<Incarnation>>,
}

/// Longest pull request: idle heartbeats come every half of it, and two
/// missed ones make the client recreate the consumer.
const MAX_EXPIRES: Duration = Duration::from_secs(2);

impl Follower {
    pub(super) fn new(bus: Bus, filters: Vec<String>, from: u64) -> Self {
        let (connects, incarnations) = (bus.connects.clone(), bus.incarnations());
        Self { bus, filters, next: from.max(1), messages: None, connects, incarnation: None, incarnations }
    }

    /// The incarnation of the stream the messages come from: it changes
    /// when the stream was created again, and the next message is then the
    /// new stream's first.
    pub(crate) fn incarnation(&self) -> Option<&Incarnation> {
        self.incarnation.as_ref()
    }

    /// The next message; waits for one, retrying through outages.
    pub(crate) async fn next(&mut self) -> RawMessage {
        let mut pause = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            match self.try_next().await {
                Ok(message) => {
                    self.next = message.seq + 1;
                    return message;
                }
                Err(err) => {
                    // Once per outage: the connection's own lines say the rest.
                    if failures == 0 {
                        tracing::warn!(
                            from = self.next,
                            error = &err as &dyn std::error::Error,
                            "stream follower restarting"
                        );
                    } else {
                        tracing::debug!(
                            from = self.next,
                            error = &err as &dyn std::error::Error,
                            "stream follower restarting"
                        );
                    }
                    failures += 1;
                    self.messages = None;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    async fn try_next(&mut self) -> Result<RawMessage, Unavailable> {
        if self.messages.is_none() {
            self.connects.mark_unchanged();
            let (messages, incarnation) = open(&self.bus, &self.filters, self.next, self.incarnation.as_ref()).await?;
            if self.incarnation.as_ref().is_some_and(|followed| *followed != incarnation) {
                self.next = 1;
            }
            // A newer stream seen while the consumer was being opened makes
            // it the stream before: open again.
            let newest = self.incarnations.borrow_and_update().clone();
            self.incarnation = Some(incarnation.clone());
            if newest.is_some_and(|newest| newest != incarnation) {
                return Err(Unavailable::new("the stream was re-created"));
            }
            self.messages = Some(messages);
        }
        let messages = self.messages.as_mut().expect("opened above");
        let message = tokio::select! {
            message = messages.next() => message.ok_or_else(|| Unavailable::new("consumer ended"))?,
            _ = self.connects.changed() => return Err(Unavailable::new("reconnected to NATS")),
            _ = self.incarnations.changed() => return Err(Unavailable::new("the stream was re-created")),
        }
        .unavailable("the consumer failed")?;
        let info = message.info().map_err(|err| Unavailable::caused("a message without metadata", err))?;
        let (seq, stored) = (info.stream_sequence, info.published);
        if seq < self.next {
            return Err(Unavailable::new(format!("consumer restarted at {seq}, before {}", self.next)));
        }
        self.bus.saw(seq);
        Ok(RawMessage {
            seq,
            subject: message.subject.to_string(),
            stored,
            headers: message.headers.clone(),
            payload: message.payload.clone(),
        })
    }
}

/// An ordered consumer from `next` on, or from the start of the stream if
/// it is not the incarnation `followed`. (A free function: holding
/// `&Follower` across the awaits would make the follower's future need
/// `Sync`.)
async fn open(
    bus: &Bus,
    filters: &[String],
    next: u64,
    followed: Option<&Incarnation>,
) -> Result<(pull::Ordered, Incarnation), Unavailable> {
    bus.ensure_connected()?;
    let stream = bus.js.get_stream(&bus.stream).await.unavailable("cannot reach the stream")?;
    let incarnation = bus.saw_created(stream.cached_info().created);
    let start_sequence = if followed.is_some_and(|followed| *followed != incarnation) { 1 } else { next };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: filters.to_vec(),
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence },
            max_expires: MAX_EXPIRES,
            ..Default::default()
        })
        .await
        .unavailable("cannot create a consumer")?;
    Ok((consumer.messages().await.unavailable("cannot follow the consumer")?, incarnation))
}
