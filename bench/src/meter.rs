//! What a step cost: CPU time of the adapters (the system under test), of
//! nats-server, and of this process (load generator, gateways, raw clients,
//! the HTTP floor, which on a small machine compete with them for the same
//! cores), and the writes JetStream made durable. With fsync after every write the disk's fsync rate is the
//! server's ceiling, so writes per message say how soon a path meets it.

use std::time::Duration;

use async_nats::jetstream;
use futures_util::TryStreamExt;
use serde::Serialize;

use clawbus_testkit::NatsServer;

use super::target::Target;

/// What one step used.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Cost {
    /// All adapters together (the HTTP floor: its thread), in milliseconds
    /// (`None` on the raw side).
    pub adapters_cpu_ms: Option<f64>,
    /// nats-server, in milliseconds (`None` if /proc could not say).
    pub server_cpu_ms: Option<f64>,
    /// The benchmark process, in milliseconds.
    pub bench_cpu_ms: f64,
    /// Messages stored in all streams (KV buckets included) during the
    /// step; `None` if the server could not be asked. Steps run one at a
    /// time, so these are the measured side's, plus the adapters'
    /// heartbeats.
    pub jetstream_writes: Option<u64>,
}

/// The counters at the start of a step.
pub struct Meter {
    adapters: Option<Duration>,
    server: Option<Duration>,
    bench: Duration,
    writes: Option<u64>,
}

impl Meter {
    pub async fn start(target: &impl Target, js: &jetstream::Context, nats: &NatsServer) -> Meter {
        Meter { adapters: target.cpu(), server: nats.cpu(), bench: own_cpu(), writes: writes(js).await }
    }

    pub async fn stop(self, target: &impl Target, js: &jetstream::Context, nats: &NatsServer) -> Cost {
        let ms = |then: Duration, now: Duration| now.saturating_sub(then).as_secs_f64() * 1e3;
        Cost {
            adapters_cpu_ms: self.adapters.zip(target.cpu()).map(|(then, now)| ms(then, now)),
            server_cpu_ms: self.server.zip(nats.cpu()).map(|(then, now)| ms(then, now)),
            bench_cpu_ms: ms(self.bench, own_cpu()),
            jetstream_writes: self.writes.zip(writes(js).await).map(|(then, now)| now.saturating_sub(then)),
        }
    }
}

/// Every stream's last sequence, added up: deleting (a KV update drops the
/// previous revision) does not lower it.
async fn writes(js: &jetstream::Context) -> Option<u64> {
    js.streams().try_fold(0, |sum, info| async move { Ok(sum + info.state.last_sequence) }).await.ok()
}

/// User plus system CPU time of this process so far.
fn own_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
