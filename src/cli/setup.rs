//! `clawbus setup`: creates the stream and the state bucket, or updates them
//! to the config, with the config's (provisioning) NATS user.

use std::time::Duration;

use crate::app::stream;
use crate::bus::{self, Bus};
use crate::config::Config;

/// How long `clawbus setup` waits to reach NATS.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets up the stream and the bucket; returns what was set up, for the
/// operator.
pub(super) async fn run(config: &Config) -> anyhow::Result<String> {
    let nats = bus::connect_within(config, SETUP_TIMEOUT).await?;
    let bus = Bus::setup(nats, config).await?;
    stream::create_if_missing(&bus, config).await?;
    let nats = &config.nats;
    Ok(format!(
        "stream {} and bucket {}_STATE are set up: {} replica(s), messages kept {}, duplicate window {}",
        nats.stream,
        nats.stream,
        nats.replicas,
        humantime::format_duration(nats.max_age),
        humantime::format_duration(nats.duplicate_window),
    ))
}
