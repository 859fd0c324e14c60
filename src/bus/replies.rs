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
//!
//! The client buffers a bounded number of messages per subscription and
//! drops what does not fit ("slow consumer"). So each read first takes room
//! for the replies it asked for (its batch and the end-of-batch marker) out
//! of that buffer's size, and gives it back when it ends: however many reads
//! are in flight, their replies fit. A read asking for more than the whole
//! buffer takes all of it, and may still lose replies; the read itself
//! notices (see `direct`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::Message;
use futures_util::StreamExt;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore, mpsc};

use super::{OrUnavailable, Unavailable};

type Waiting = Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Message>>>>;

pub(super) struct Replies {
    /// `<inbox>.`, once subscribed.
    prefix: OnceCell<String>,
    waiting: Waiting,
    next: AtomicU64,
    /// Room left in the subscription's buffer, in replies.
    room: Arc<Semaphore>,
    /// The buffer's size.
    capacity: usize,
}

/// The replies to one read, until it is dropped.
pub(super) struct Inbox {
    pub subject: String,
    pub replies: mpsc::UnboundedReceiver<Message>,
    token: u64,
    waiting: Waiting,
    _room: OwnedSemaphorePermit,
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.waiting.lock().expect("replies lock").remove(&self.token);
    }
}

impl Replies {
    /// Replies for reads whose answers fit `capacity` messages, the size of
    /// the client's buffer per subscription.
    pub(super) fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            prefix: OnceCell::new(),
            waiting: Waiting::default(),
            next: AtomicU64::new(0),
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// A reply subject of its own for one read of up to `replies` replies,
    /// once there is room for them.
    pub(super) async fn inbox(&self, client: &async_nats::Client, replies: usize) -> Result<Inbox, Unavailable> {
        let prefix = self.prefix.get_or_try_init(|| self.subscribe(client)).await?;
        let wanted = u32::try_from(replies.clamp(1, self.capacity)).unwrap_or(u32::MAX);
        let room = self.room.clone().acquire_many_owned(wanted).await.unavailable("reads are shut down")?;
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, replies) = mpsc::unbounded_channel();
        self.waiting.lock().expect("replies lock").insert(token, sender);
        Ok(Inbox { subject: format!("{prefix}{token}"), replies, token, waiting: self.waiting.clone(), _room: room })
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
