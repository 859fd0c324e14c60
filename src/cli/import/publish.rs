//! Storing one row's message, exactly as a send would have: through
//! [`Bus::store`], under the row's own message id, so that a repeat finds
//! the stored copy instead of storing another.

use bytes::Bytes;
use tokio::time::{Instant, sleep};

use super::error::ImportError;
use super::patience::{RETRY_PAUSE, deadline};
use super::rows::message_id;
use crate::bus::{Bus, Outgoing, SendError, Stored};
use crate::mailbox::Threading;

/// New ids tried when a row's message id is held by something else (a
/// marker that settled an earlier attempt as not stored).
const MAX_ID_REUSES: usize = 8;

/// A stored message, and where it sits in its thread.
#[derive(Clone, Copy, Debug)]
pub(super) struct Placed {
    pub(super) id: u64,
    pub(super) threading: Threading,
}

/// How one publish ended.
pub(super) enum Outcome {
    New(u64),
    /// An earlier run's (or attempt's) copy holds the id.
    Found(Placed),
    TooLarge,
    Failed(ImportError),
}

/// Publishes row `old`'s message for source `name`; repeats while NATS
/// says "not now", and moves to the row's next id when a marker holds it.
pub(super) async fn store(bus: &Bus, name: &str, old: i64, subject: String, payload: Bytes) -> Outcome {
    let patience = deadline();
    let mut reuse = 0;
    loop {
        let out = Outgoing { subject: subject.clone(), msg_id: message_id(name, old, reuse), payload: payload.clone() };
        match bus.store(&out).await {
            Ok(Stored::New(seq)) => return Outcome::New(seq),
            Ok(Stored::Earlier(raw)) => {
                let threading = raw.envelope().map_or(Threading::FIRST, |envelope| Threading::of(&envelope));
                return Outcome::Found(Placed { id: raw.seq, threading });
            }
            Ok(Stored::Taken) if reuse + 1 < MAX_ID_REUSES => reuse += 1,
            Ok(Stored::Taken) => return Outcome::Failed(ImportError::IdsTaken { row: old }),
            Err(SendError::TooLarge) => return Outcome::TooLarge,
            Err(SendError::Unavailable(_)) if Instant::now() < patience => sleep(RETRY_PAUSE).await,
            Err(source) => return Outcome::Failed(ImportError::Store { row: old, source }),
        }
    }
}
