//! Creating the message stream where the fleet's records allow.
//!
//! Message ids are stream sequences. A stream deleted and created again
//! would number its messages from 1, and ids that read marks, wake marks
//! and registrations already speak of would name new messages: a read mark
//! would hide them, a wake mark skip them. So a stream is created with its
//! first id above every id those records mention, and above the highest id
//! any adapter reported in its host record. A running adapter that finds
//! the stream gone waits [`RECREATE_AFTER`] before creating it: by then
//! every live adapter has written its last heartbeat since the stream went,
//! with the highest id it saw. (Records of the stream before are also
//! tagged with its incarnation, see `bus::Incarnation`, for a stream that
//! someone else re-creates.)

use std::time::Duration;

use crate::bus::{Bus, Missing, Nats, Unavailable};
use crate::config::Config;
use crate::registry::{self, HEARTBEAT_INTERVAL};
use crate::{readstate, wake};

/// How long a stream is missing before a running adapter creates it:
/// two heartbeats.
pub(crate) const RECREATE_AFTER: Duration = Duration::from_secs(2 * HEARTBEAT_INTERVAL.as_secs());

/// The bus as an adapter or the import opens it (see [`Bus::open`]), with
/// the stream created if it does not exist and this host may create it.
pub(crate) async fn open(nats: Nats, config: &Config) -> Result<Bus, Unavailable> {
    let bus = Bus::open(nats, config).await?;
    if !config.nats.least_privilege
        && let Some(first) = create_if_missing(&bus, config).await?
    {
        tracing::info!(first, "created the stream");
    }
    Ok(bus)
}

/// Creates the stream if it does not exist (see [`create`]); returns its
/// first id if it did not.
pub(crate) async fn create_if_missing(bus: &Bus, config: &Config) -> Result<Option<u64>, Unavailable> {
    match bus.missing().await? {
        Some(Missing::Stream) => create(bus, config).await.map(Some),
        _ => Ok(None),
    }
}

/// Creates the stream, continuing after every id the fleet knows of.
pub(crate) async fn create(bus: &Bus, config: &Config) -> Result<u64, Unavailable> {
    let first = high_water(bus).await? + 1;
    bus.create_stream(config, first).await?;
    Ok(first)
}

/// The highest message id that any record of the fleet mentions, or that
/// this adapter saw.
async fn high_water(bus: &Bus) -> Result<u64, Unavailable> {
    let (read, woken, registered) =
        tokio::try_join!(readstate::highest(bus), wake::highest(bus), registry::highest(bus))?;
    Ok(read.max(woken).max(registered).max(bus.seen()))
}
