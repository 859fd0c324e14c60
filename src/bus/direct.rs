//! Batched direct gets (`$JS.API.DIRECT.GET`, nats-server 2.11+).
//!
//! One request returns up to `batch` messages matching a subject filter from
//! a starting point, followed by an end-of-batch marker that tells how many
//! more match. That gives both paging and cheap counts ("how many unread")
//! from the server's subject index, with no consumer to create or delete.

use crate::message::{Envelope, MessageView};
use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use bytes::Bytes;
use futures_util::future::try_join_all;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Bus, OrUnavailable, READ_TIMEOUT, Unavailable};

/// Most bytes one batch may carry; the server stops after the message that
/// crosses it.
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Times a read is asked again after losing replies.
const READ_ATTEMPTS: usize = 3;

/// Most subjects one "newest of each" request names.
pub(super) const MAX_LAST_SUBJECTS: usize = 256;

/// `subjects` in runs one "newest of each" request each can name: at most
/// [`MAX_LAST_SUBJECTS`], and at most `limit` bytes of names (a request
/// past the server's payload limit is refused, and a few hundred long keys
/// pass a small one).
pub(super) fn requests(subjects: &[String], limit: usize) -> Vec<&[String]> {
    let mut runs = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, subject) in subjects.iter().enumerate() {
        // `"subject",`
        let cost = subject.len() + 3;
        if i > start && (i - start == MAX_LAST_SUBJECTS || size + cost > limit) {
            runs.push(&subjects[start..i]);
            (start, size) = (i, 0);
        }
        size += cost;
    }
    if start < subjects.len() {
        runs.push(&subjects[start..]);
    }
    runs
}

/// Where a scan starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Start {
    /// At this sequence (inclusive).
    Seq(u64),
    /// At the first message stored at or after this time.
    Time(OffsetDateTime),
}

/// A stored message with the metadata the server attaches.
#[derive(Clone, Debug)]
pub(crate) struct RawMessage {
    pub seq: u64,
    pub subject: String,
    /// When the server stored it.
    pub stored: OffsetDateTime,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

impl RawMessage {
    /// The message's envelope, if it is a message.
    pub(crate) fn envelope(&self) -> Option<Envelope> {
        Envelope::decode(&self.payload)
    }

    /// The message object of the API, as a reader with `read` sees it.
    pub(crate) fn view(&self, read: bool) -> Option<MessageView> {
        MessageView::decode(self.seq, &self.payload, read)
    }

    /// False for KV delete and purge markers.
    pub(crate) fn is_kv_value(&self) -> bool {
        self.headers.as_ref().and_then(|h| h.get("KV-Operation")).is_none()
    }
}

pub(crate) struct Batch {
    pub messages: Vec<RawMessage>,
    /// Matching messages after the last one returned.
    pub pending: u64,
}

#[derive(Default, Serialize)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    start_time: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    /// The newest message of each of these subjects.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    multi_last: &'a [String],
    batch: usize,
    max_bytes: usize,
}

impl Bus {
    pub(crate) async fn direct_batch(
        &self,
        stream: &str,
        filter: &str,
        start: Start,
        batch: usize,
    ) -> Result<Batch, Unavailable> {
        let (seq, start_time) = match start {
            Start::Seq(seq) => (Some(seq.max(1)), None),
            Start::Time(at) => (None, Some(at)),
        };
        let request = Request {
            seq,
            start_time,
            next_by_subj: Some(filter),
            batch: batch.max(1),
            max_bytes: MAX_BATCH_BYTES,
            ..Request::default()
        };
        self.direct_request(stream, &request).await
    }

    /// The newest message of each of `subjects` that has one (at most
    /// [`MAX_LAST_SUBJECTS`] of them), in one request.
    pub(crate) async fn direct_last(&self, stream: &str, subjects: &[String]) -> Result<Vec<RawMessage>, Unavailable> {
        assert!(subjects.len() <= MAX_LAST_SUBJECTS, "one request reads at most {MAX_LAST_SUBJECTS} subjects");
        let request = Request {
            multi_last: subjects,
            batch: subjects.len().max(1),
            max_bytes: MAX_BATCH_BYTES,
            ..Request::default()
        };
        Ok(self.direct_request(stream, &request).await?.messages)
    }

    /// One batched direct get, asked again if replies were lost on the way
    /// (see [`Collected::Incomplete`]): a batch returned is complete.
    async fn direct_request(&self, stream: &str, request: &Request<'_>) -> Result<Batch, Unavailable> {
        self.ensure_connected()?;
        let body: Bytes = serde_json::to_vec(request).expect("request serializes").into();
        let read = async {
            for _ in 0..READ_ATTEMPTS {
                match self.direct_attempt(stream, request.batch, body.clone()).await? {
                    Collected::Complete(batch) => return Ok(batch),
                    Collected::Incomplete => tracing::debug!(%stream, "replies to a read were lost; reading again"),
                }
            }
            Err(Unavailable::new("replies to reads are being lost (the connection cannot keep up); try again"))
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| Unavailable::new(format!("no answer to a read within {}s", READ_TIMEOUT.as_secs())))?
    }

    async fn direct_attempt(&self, stream: &str, batch: usize, body: Bytes) -> Result<Collected, Unavailable> {
        // The batch, and the end-of-batch marker.
        let mut inbox = self.replies.inbox(&self.client, batch + 1).await?;
        self.client
            .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox.subject.clone(), body)
            .await
            .unavailable("cannot request a read")?;
        let mut messages: Vec<RawMessage> = Vec::new();
        while let Some(reply) = inbox.replies.recv().await {
            // Each reply names the sequence of the one before it in the batch
            // (0 for the first), and the end-of-batch marker the last one's:
            // a reply dropped on the way breaks the chain.
            let before = messages.last().map_or(0, |m| m.seq);
            if header(&reply.headers, "Nats-Last-Sequence").is_some_and(|v| v.parse() != Ok(before)) {
                return Ok(Collected::Incomplete);
            }
            match reply.status.map(|s| s.as_u16()) {
                None | Some(200) => messages.push(parse(reply.headers, reply.payload)?),
                // End of batch: how many more match.
                Some(204) => {
                    let pending = header_u64(&reply.headers, "Nats-Num-Pending");
                    return Ok(Collected::Complete(Batch { messages, pending }));
                }
                // Nothing matches (also the answer for a missing stream).
                Some(404) => return Ok(Collected::Complete(Batch { messages, pending: 0 })),
                Some(503) => return Err(Unavailable::new("no JetStream server answered")),
                Some(code) => {
                    let why = reply.description.unwrap_or_default();
                    return Err(Unavailable::new(format!("direct get failed: {code} {why}")));
                }
            }
        }
        Err(Unavailable::new("connection closed during read"))
    }
}

/// How the replies to one read came in.
enum Collected {
    Complete(Batch),
    /// Some were dropped on the way (the client's buffer for the replies
    /// overflowed): what came is not the batch.
    Incomplete,
}

impl Bus {
    /// The first message matching `filter` with an id of at least `from`,
    /// as the stream's leader has it. A direct get may be answered by a
    /// replica a moment behind the leader; a reader that must not miss the
    /// newest messages asks the leader once its direct gets found the end.
    pub(crate) async fn first_on_leader(&self, filter: &str, from: u64) -> Result<Option<RawMessage>, Unavailable> {
        self.ensure_connected()?;
        let read = async {
            let stream = self.js.get_stream_no_info(&self.stream).await.unavailable("cannot reach the stream")?;
            match stream.get_first_raw_message_by_subject(filter, from.max(1)).await {
                Ok(message) => Ok(Some(RawMessage {
                    seq: message.sequence,
                    subject: message.subject.to_string(),
                    stored: message.time,
                    headers: Some(message.headers),
                    payload: message.payload,
                })),
                Err(err) if err.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
                Err(err) => Err(Unavailable::caused("cannot read from the stream's leader", err)),
            }
        };
        tokio::time::timeout(READ_TIMEOUT, read)
            .await
            .map_err(|_| Unavailable::new("the stream's leader did not answer in time"))?
    }
}

impl Bus {
    /// The first message of any of `starts` (filters, each with the first id
    /// to read it from), as the stream's leader has it: what a scan that
    /// found the end confirms before a mark moves on that finding.
    pub(crate) async fn first_on_leader_of(&self, starts: &[(String, u64)]) -> Result<Option<RawMessage>, Unavailable> {
        let firsts = try_join_all(starts.iter().map(|(filter, from)| self.first_on_leader(filter, *from))).await?;
        Ok(firsts.into_iter().flatten().min_by_key(|raw| raw.seq))
    }
}

pub(super) fn header<'a>(headers: &'a Option<HeaderMap>, name: &str) -> Option<&'a str> {
    headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn header_u64(headers: &Option<HeaderMap>, name: &str) -> u64 {
    header(headers, name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn parse(headers: Option<HeaderMap>, payload: Bytes) -> Result<RawMessage, Unavailable> {
    let bad = |what: &str| Unavailable::new(format!("direct get reply without {what}"));
    let seq = header(&headers, "Nats-Sequence").and_then(|v| v.parse().ok()).ok_or_else(|| bad("sequence"))?;
    let subject = header(&headers, "Nats-Subject").ok_or_else(|| bad("subject"))?.to_owned();
    let stored = header(&headers, "Nats-Time-Stamp")
        .and_then(|v| OffsetDateTime::parse(v, &Rfc3339).ok())
        .ok_or_else(|| bad("timestamp"))?;
    Ok(RawMessage { seq, subject, stored, headers, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_split_into_requests_within_both_bounds_in_order() {
        let subjects: Vec<String> = (0..1000).map(|i| format!("$KV.STATE.agent.{i:0>60}")).collect();
        let runs = requests(&subjects, 8192);
        assert!(runs.iter().all(|run| !run.is_empty() && run.len() <= MAX_LAST_SUBJECTS));
        assert!(runs.iter().all(|run| run.iter().map(|s| s.len() + 3).sum::<usize>() <= 8192));
        assert_eq!(runs.concat(), subjects);
        assert_eq!(requests(&subjects, usize::MAX).len(), 4, "256 a request when size is no bound");
    }
}
