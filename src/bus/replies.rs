//! One subscription for the replies to every direct get.
//!
//! A direct get is answered with several messages (the batch, then an
//! end-of-batch marker), so the client's request-reply, which takes one
//! answer, does not fit. Subscribing a fresh inbox per read did, but cost
//! every read a subscribe and an unsubscribe, on the connection and in the
//! server's subject index, and sends with conversation limits make up to
//! five reads each. Instead, reads share one wildcard subscription under
//! this connection's inbox prefix (made on the first read, and kept by the
//! client across reconnects), and a task hands each reply to the read whose
//! token its subject ends with. A reply to a read that gave up is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::Message;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, mpsc};

use super::{OrUnavailable, Unavailable};

type Waiting = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

#[derive(Default)]
pub(super) struct Replies {
    /// `<inbox>.`, once subscribed.
    prefix: OnceCell<String>,
    waiting: Waiting,
    next: AtomicU64,
}

/// The replies to one read, until it is dropped.
pub(super) struct Inbox {
    pub subject: String,
    pub replies: mpsc::UnboundedReceiver<Message>,
    token: u64,
    waiting: Waiting,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.waiting.lock().expect("replies lock").remove(&self.token);
    }
}

impl Replies {
    /// A reply subject of its own for one read.
    pub async fn inbox(&self, client: &async_nats::Client) -> Result<Inbox, Unavailable> {
        let prefix = self.prefix.get_or_try_init(|| self.subscribe(client)).await?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, replies) = mpsc::unbounded_channel();
        self.waiting.lock().expect("replies lock").insert(token, sender);
        Ok(Inbox { subject: format!("{prefix}{token}"), replies, token, waiting: self.waiting.clone() })
    }

    async fn subscribe(&self, client: &async_nats::Client) -> Result<String, Unavailable> {
        let prefix = format!("{}.", client.new_inbox());
        let mut replies =
            client.subscribe(format!("{prefix}*")).await.unavailable("cannot subscribe for the replies to reads")?;
        let (waiting, skip) = (self.waiting.clone(), prefix.len());
        tokio::spawn(async move {
            while let Some(reply) = replies.next().await {
                let Some(token) = reply.subject.get(skip..).and_then(|token| token.parse().ok()) else { continue };
                if let Some(read) = waiting.lock().expect("replies lock").get(&token) {
                    let _ = read.send(reply);
                }
            }
            // The client is closed: reads waiting now learn it at once.
            waiting.lock().expect("replies lock").clear();
        });
        Ok(prefix)
    }
}
