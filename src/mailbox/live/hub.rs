//! One follower for all the live streams of this adapter.
//!
//! However many clients follow `/api/stream`, the adapter follows the stream
//! with one ordered consumer on every message and hands each message to the
//! clients through a broadcast channel, so the server's consumers do not
//! grow with clients. The follower starts with the first client and stops
//! once the last one is gone. What was stored before a client subscribed,
//! it reads back from the stream itself (see `Live`).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast;

use crate::bus::{Bus, Follower, RawMessage, Unavailable};

/// How many messages a client may fall behind the follower before it has
/// to read them back from the stream.
const CAPACITY: usize = 1024;

pub(crate) struct Hub {
    bus: Bus,
    following: Arc<Mutex<Option<Following>>>,
}

/// The running follower: its channel, and the id of the last message sent
/// on it. Both change only under the lock, so that a subscriber knows
/// exactly which messages it will receive.
struct Following {
    sender: broadcast::Sender<Arc<RawMessage>>,
    last: u64,
}

pub(crate) struct Subscription {
    /// Every message with an id above `after`, in id order (unless the
    /// receiver lags).
    pub receiver: broadcast::Receiver<Arc<RawMessage>>,
    pub after: u64,
}

impl Following {
    fn subscribe(&self) -> Subscription {
        Subscription { receiver: self.sender.subscribe(), after: self.last }
    }
}

impl Hub {
    pub(crate) fn new(bus: Bus) -> Self {
        Self { bus, following: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Following>> {
        self.following.lock().expect("hub lock")
    }

    /// Messages from now on, following the stream if nobody else does yet.
    pub(crate) async fn subscribe(&self) -> Result<Subscription, Unavailable> {
        if let Some(following) = &*self.lock() {
            return Ok(following.subscribe());
        }
        let last = self.bus.last_sequence().await?;
        let mut following = self.lock();
        // Another client may have started it meanwhile.
        let following = following.get_or_insert_with(|| {
            let (sender, _) = broadcast::channel(CAPACITY);
            let follower = self.bus.follow(vec![self.bus.subjects().every_message()], last + 1);
            tokio::spawn(forward(self.following.clone(), sender.clone(), follower));
            Following { sender, last }
        });
        Ok(following.subscribe())
    }
}

/// Sends each message on the channel, until nobody is subscribed. Stopping
/// is decided under the lock, so a client subscribes either to this follower
/// or to the next one.
async fn forward(
    following: Arc<Mutex<Option<Following>>>,
    sender: broadcast::Sender<Arc<RawMessage>>,
    mut follower: Follower,
) {
    let mut followed = None;
    loop {
        let message = tokio::select! {
            message = follower.next() => Some(Arc::new(message)),
            () = sender.closed() => None,
        };
        let mut state = following.lock().expect("hub lock");
        // A stream created again ends every live stream: a client that
        // knows ids of the stream before learns of it when it reconnects
        // (see `bus::Incarnation`).
        if followed.as_ref().is_some_and(|before| Some(before) != follower.incarnation()) {
            *state = None;
            return;
        }
        followed = follower.incarnation().cloned();
        let nobody = match message {
            Some(message) => {
                state.as_mut().expect("only this task stops following").last = message.seq;
                sender.send(message).is_err()
            }
            None => sender.receiver_count() == 0,
        };
        if nobody {
            *state = None;
            return;
        }
    }
}
