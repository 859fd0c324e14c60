//! The NATS server's clock, as this adapter sees it.
//!
//! A host's clock can be minutes off, and what an adapter decides must not
//! depend on it. JetStream stamps every stored message and KV entry with the
//! server's own receive time, so presence (how long ago a host's heartbeat
//! was stored) and the limits' one-minute windows (what was stored in the
//! last minute) compare those stamps with the server's "now", never with this
//! host's. The server's now is learned from the `ts` of a stream info answer
//! (the server's time when it answered), asked at start-up and every
//! heartbeat, and carried forward in between by the monotonic clock, so
//! neither a wrong wall clock nor one that jumps moves it.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, response::Response};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{OrUnavailable, READ_TIMEOUT, Unavailable};

/// A difference from the server's clock beyond this is reported (at
/// start-up, in the log when it appears, and by `clawbus doctor`).
pub(crate) const SKEW_TOLERANCE: Duration = Duration::from_secs(2);

/// This host's clock against the server's, at one moment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reading {
    /// This host's time minus the server's: positive when this host is ahead.
    pub skew: time::Duration,
    /// The request's round trip: the server answered somewhere within it,
    /// so the skew is known to half of it.
    pub round_trip: Duration,
}

impl Reading {
    /// Whether the clocks are certainly further apart than
    /// [`SKEW_TOLERANCE`], whatever the round trip hid.
    pub(crate) fn is_skewed(&self) -> bool {
        self.skew.unsigned_abs() > SKEW_TOLERANCE + self.round_trip / 2
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (apart, margin) = (shown(self.skew.unsigned_abs()), shown(self.round_trip / 2));
        if !self.is_skewed() {
            return write!(f, "within {apart} of the NATS server's (±{margin})");
        }
        let way = if self.skew.is_positive() { "ahead of" } else { "behind" };
        write!(f, "{apart} {way} the NATS server's (±{margin})")
    }
}

/// A duration as precisely as it matters: whole seconds from ten seconds
/// on (a skew of minutes needs no milliseconds), else milliseconds, and
/// microseconds below one (a round trip on one machine).
fn shown(d: Duration) -> humantime::FormattedDuration {
    let rounded = if d >= Duration::from_secs(10) {
        Duration::from_secs(d.as_secs_f64().round() as u64)
    } else if d >= Duration::from_millis(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        Duration::from_micros(d.as_micros() as u64)
    };
    humantime::format_duration(rounded)
}

/// The server's time at a moment of this host's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Anchor {
    at: Instant,
    server: OffsetDateTime,
}

/// The server's now, from the latest reading.
#[derive(Default)]
pub(super) struct ServerClock {
    latest: Mutex<Option<(Anchor, Reading)>>,
}

impl ServerClock {
    /// The server's time now. Before the first reading (which comes before
    /// anything is decided) this host's own.
    pub(super) fn now(&self) -> OffsetDateTime {
        match *self.latest.lock().expect("clock lock") {
            Some((anchor, _)) => anchor.server + anchor.at.elapsed(),
            None => OffsetDateTime::now_utc(),
        }
    }

    /// Takes a new reading, and logs when this host's clock has moved beyond
    /// [`SKEW_TOLERANCE`] from the server's (the first reading included) or
    /// back within it.
    pub(super) fn set(&self, anchor: Anchor, reading: Reading) {
        let before = self.latest.lock().expect("clock lock").replace((anchor, reading)).map(|(_, r)| r.is_skewed());
        match (before, reading.is_skewed()) {
            (Some(true), true) | (None | Some(false), false) => {}
            (_, true) => tracing::warn!(
                skew_ms = reading.skew.whole_milliseconds() as i64,
                "this host's clock is {reading}: clawbus goes by the server's time for presence, limits and \
                 timestamps, but fix the host's time synchronisation (NTP)"
            ),
            (Some(true), false) => tracing::info!("this host's clock is back {reading}"),
        }
    }
}

/// The part of a stream info answer that tells the time.
#[derive(Deserialize)]
struct Stamped {
    /// The server's time when it answered (absent only from old servers).
    ts: Option<String>,
}

/// Asks the server for its time with a stream info request for `stream` (a
/// read every host may make), and measures this host's clock against it.
pub(crate) async fn read(js: &jetstream::Context, stream: &str) -> Result<(Anchor, Reading), Unavailable> {
    let (sent, local) = (Instant::now(), OffsetDateTime::now_utc());
    let answer = tokio::time::timeout(READ_TIMEOUT, js.request(format!("STREAM.INFO.{stream}"), &()))
        .await
        .map_err(|_| Unavailable::new("the server did not tell its time in time"))?
        .unavailable("cannot ask the server's time")?;
    let round_trip = sent.elapsed();
    let ts = match answer {
        Response::Ok(Stamped { ts: Some(ts) }) => ts,
        Response::Ok(Stamped { ts: None }) => {
            return Err(Unavailable::new("the server does not tell its time: upgrade nats-server"));
        }
        Response::Err { error } => return Err(Unavailable::caused("cannot ask the server's time", error)),
    };
    let server = OffsetDateTime::parse(&ts, &Rfc3339).unavailable("the server's time does not parse")?;
    // The server answered somewhere within the round trip: say half way.
    let half = round_trip / 2;
    let skew = (local + half) - server;
    Ok((Anchor { at: sent + half, server }, Reading { skew, round_trip }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(skew_ms: i64, round_trip_ms: u64) -> Reading {
        Reading { skew: time::Duration::milliseconds(skew_ms), round_trip: Duration::from_millis(round_trip_ms) }
    }

    #[test]
    fn a_skew_counts_only_beyond_the_tolerance_and_what_the_round_trip_hides() {
        assert!(!reading(1_900, 2).is_skewed());
        assert!(!reading(-2_100, 400).is_skewed());
        assert!(reading(2_100, 2).is_skewed());
        assert!(reading(-600_000, 2).is_skewed());
    }

    #[test]
    fn a_reading_says_which_way_and_how_far() {
        assert_eq!(reading(600_012, 4).to_string(), "10m ahead of the NATS server's (±2ms)");
        assert_eq!(reading(-599_999, 2).to_string(), "10m behind the NATS server's (±1ms)");
        assert_eq!(reading(2_512, 2).to_string(), "2s 512ms ahead of the NATS server's (±1ms)");
        assert_eq!(reading(3, 2).to_string(), "within 3ms of the NATS server's (±1ms)");
        let close = Reading { skew: time::Duration::microseconds(-312), round_trip: Duration::from_micros(170) };
        assert_eq!(close.to_string(), "within 312us of the NATS server's (±85us)");
    }

    #[test]
    fn the_servers_now_moves_with_the_monotonic_clock() {
        let clock = ServerClock::default();
        let server = OffsetDateTime::now_utc() - time::Duration::minutes(10);
        clock.set(Anchor { at: Instant::now(), server }, reading(600_000, 1));
        let now = clock.now();
        assert!(now >= server && now - server < time::Duration::minutes(1), "{now} from {server}");
    }
}
