//! Riding out a NATS that is away for a moment: each step of the import
//! (a row's publish, an acknowledgement, a progress write, a read) is
//! retried for a while before the run stops.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, sleep};

use super::error::ImportError;
use crate::bus;

/// How long one step is retried while NATS says "not now".
const UNAVAILABLE_PATIENCE: Duration = Duration::from_secs(30);
/// Pause between those retries.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Until when a step that starts now is retried.
pub(super) fn deadline() -> Instant {
    Instant::now() + UNAVAILABLE_PATIENCE
}

/// Runs `attempt` until it succeeds, for as long as NATS may take to come
/// back.
pub(super) async fn patiently<T, Fut>(what: &'static str, mut attempt: impl FnMut() -> Fut) -> Result<T, ImportError>
where
    Fut: Future<Output = Result<T, bus::Unavailable>>,
{
    let patience = deadline();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(_) if Instant::now() < patience => sleep(RETRY_PAUSE).await,
            Err(source) => return Err(ImportError::Patience { what, source }),
        }
    }
}
