//! The fleet as one read model, above the mailboxes and the wakes:
//! `GET /api/agents` and `GET /api/stats` (the whole fleet, from JetStream,
//! so every adapter gives the same answer and restarts lose nothing), and
//! `GET /api/messages/{id}` (one message's way, in `path`).
//!
//! A listing costs three server-side counts per agent. A small fleet's takes
//! milliseconds and is made for every request (concurrent requests share
//! one). A large fleet's takes seconds: once a listing took longer than
//! [`SLOW`], listings are served for up to [`STALE`] while a new one is
//! made in the background (at most every [`FRESH`]), so readers wait for
//! none; what they see is at most that old (`age_ms` says how old).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt, stream};

mod path;

pub(crate) use path::{Acknowledged, MessagePath, Woken};

use crate::bus::Unavailable;
use crate::mailbox::Mailbox;
use crate::readstate;
use crate::registry::AgentStatus;
use crate::wake::{self, WakeRecord};

/// Unread counts computed at once.
const CONCURRENCY: usize = 32;
/// A listing slower than this to make is served from the last one.
const SLOW: Duration = Duration::from_millis(50);
/// The least age of a listing before another is made in the background.
const FRESH: Duration = Duration::from_secs(1);
/// The most age of a listing that is served.
const STALE: Duration = Duration::from_secs(15);

/// One row of `GET /api/agents`.
pub(crate) struct AgentRow {
    pub status: AgentStatus,
    pub unread: u64,
    /// What its wakes came to, if it was ever woken.
    pub wakes: Option<WakeRecord>,
}

/// The fleet at one moment.
pub(crate) struct Fleet {
    pub agents: Vec<AgentRow>,
    /// Messages in the stream (markers excluded).
    pub messages: u64,
    made: Instant,
    /// How long it took to make.
    took: Duration,
}

impl Fleet {
    /// Seconds since the listing was made.
    pub(crate) fn age(&self) -> Duration {
        self.made.elapsed()
    }
}

/// The last listing, and one being made.
#[derive(Default)]
struct Cache {
    last: Mutex<Option<Arc<Fleet>>>,
    /// Held while a listing is made: one at a time.
    making: Arc<tokio::sync::Mutex<()>>,
}

/// The fleet's read model, over the mailbox of this adapter.
#[derive(Clone)]
pub(crate) struct FleetView {
    mailbox: Mailbox,
    cache: Arc<Cache>,
}

impl FleetView {
    pub(crate) fn new(mailbox: Mailbox) -> Self {
        FleetView { mailbox, cache: Arc::default() }
    }

    /// The fleet now, or for a large fleet as of at most [`STALE`] ago.
    pub(crate) async fn fleet(&self) -> Result<Arc<Fleet>, Unavailable> {
        let cache = &self.cache;
        let asked = Instant::now();
        let last = cache.last.lock().expect("fleet lock").clone();
        match last {
            Some(fleet) if fleet.took >= SLOW && fleet.age() < STALE => {
                if fleet.age() >= FRESH
                    && let Ok(making) = cache.making.clone().try_lock_owned()
                {
                    let view = self.clone();
                    tokio::spawn(async move {
                        let _making = making;
                        if let Err(err) = view.list_fleet().await {
                            tracing::debug!(error = &err as &dyn std::error::Error, "fleet listing not refreshed");
                        }
                    });
                }
                return Ok(fleet);
            }
            _ => {}
        }
        // One listing at a time; one made after this request arrived serves it.
        let _making = cache.making.lock().await;
        let since_asked = cache.last.lock().expect("fleet lock").clone().filter(|fleet| fleet.made >= asked);
        match since_asked {
            Some(fleet) => Ok(fleet),
            None => self.list_fleet().await,
        }
    }

    /// Lists the fleet now, and keeps the listing.
    async fn list_fleet(&self) -> Result<Arc<Fleet>, Unavailable> {
        let (mailbox, bus) = (&self.mailbox, self.mailbox.bus());
        let started = Instant::now();
        let (statuses, marks, wakes, last) = tokio::try_join!(
            mailbox.registry().list(),
            readstate::load_all(bus),
            wake::fleet_records(bus),
            bus.last_sequence(),
        )?;
        let mut wakes = wakes;
        let counts: Vec<_> = statuses
            .iter()
            .map(|status| {
                let stored = marks.get(status.inbox.agent.as_str());
                let (mark, written) = stored.map_or_else(Default::default, |m| (m.value.clone(), Some(m.stored)));
                async move {
                    // A mark ahead of the stream is repaired when its agent
                    // reads; here it is only counted as if it were.
                    let mark = match mark.within(last) {
                        Some(_) => mark.within(mailbox.newest_before(written).await?).unwrap_or(mark),
                        None => mark,
                    };
                    mailbox.unread(&status.inbox, &mark).await
                }
            })
            .collect();
        let (unread, messages) = tokio::try_join!(
            stream::iter(counts).buffered(CONCURRENCY).try_collect::<Vec<u64>>(),
            self.message_count()
        )?;
        let agents = statuses
            .into_iter()
            .zip(unread)
            .map(|(status, unread)| {
                let wakes = wakes.remove(&(status.inbox.agent.to_string(), status.host.clone()));
                AgentRow { status, unread, wakes }
            })
            .collect();
        let fleet = Arc::new(Fleet { agents, messages, made: started, took: started.elapsed() });
        *self.cache.last.lock().expect("fleet lock") = Some(fleet.clone());
        Ok(fleet)
    }

    /// Messages in the stream (markers excluded).
    async fn message_count(&self) -> Result<u64, Unavailable> {
        let bus = self.mailbox.bus();
        Ok(bus.count(&bus.subjects().every_message(), 1).await?.total)
    }
}
