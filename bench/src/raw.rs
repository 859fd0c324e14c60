//! The raw JetStream side, on the same nats-server in the same run: publish
//! with ack, receipt at an ordered consumer (the kind the adapters follow
//! the stream with), through async-nats with no HTTP and no wake. What is
//! left between this and the clawbus side is what the adapters add.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;
use tokio::task::JoinHandle;

use super::fleet::CONTENT;
use super::receipts::Receipts;
use super::receiver::Receiver;
use super::target::{Arrivals, Attempt, Side, Target};

const STREAM: &str = "BENCHRAW";

pub struct Raw {
    js: jetstream::Context,
    /// One subject per recipient, as clawbus has.
    subjects: Vec<String>,
    /// A payload the size of a clawbus message.
    payload: Bytes,
    /// By stream sequence: when the consumer received it.
    receipts: Receipts,
    consumer: JoinHandle<()>,
}

impl Raw {
    /// Creates the stream (file storage, like clawbus's) and starts the
    /// consumer on its own connection in the receiving runtime.
    pub async fn start(nats_url: &str, recipients: usize, receiver: &Receiver) -> anyhow::Result<Raw> {
        let js = jetstream::new(async_nats::connect(nats_url).await?);
        js.create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec![format!("{}.>", STREAM.to_lowercase())],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        let receipts = Receipts::default();
        let consumer = receiver.run(consume(nats_url.to_owned(), receipts.clone())).await?;
        let subjects = (0..recipients).map(|i| format!("{}.agent-{i:02}", STREAM.to_lowercase())).collect();
        let payload = json!({"from": "agent-00", "to": "agent-01", "content": CONTENT, "priority": "normal",
                             "reply_to": null, "timestamp": "2026-01-01T00:00:00.000Z"});
        Ok(Raw { js, subjects, payload: payload.to_string().into(), receipts, consumer })
    }
}

/// Opens the consumer; the returned task records every receipt.
async fn consume(url: String, receipts: Receipts) -> anyhow::Result<JoinHandle<()>> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let consumer = js
        .get_stream(STREAM)
        .await?
        .create_consumer(pull::OrderedConfig { deliver_policy: DeliverPolicy::All, ..Default::default() })
        .await?;
    let mut messages = consumer.messages().await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = messages.next().await {
            let at = Instant::now();
            // The client recreates the consumer after errors by itself.
            let Ok(message) = message else { continue };
            if let Ok(info) = message.info() {
                receipts.record(info.stream_sequence, at);
            }
        }
    }))
}

impl Target for Raw {
    const SIDE: Side = Side::Raw;

    async fn send(&self) -> Attempt {
        let to = fastrand::usize(..self.subjects.len());
        let (subject, payload) = (self.subjects[to].clone(), self.payload.clone());
        let started = Instant::now();
        let outcome = match self.js.publish(subject, payload).await {
            Ok(ack) => ack.await.map(|ack| ack.sequence).map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        Attempt { to, scheduled: None, started, answered: Instant::now(), outcome }
    }

    fn arrivals(&self, since: Instant, stored: &[(usize, u64)]) -> Arrivals {
        self.receipts.arrivals(since, stored)
    }

    fn cpu(&self) -> Option<Duration> {
        None
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.consumer.abort();
    }
}
