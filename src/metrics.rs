//! Counters for operators: Prometheus text at `/metrics`, and the same
//! numbers (plus recent wake latency percentiles) in `/api/stats`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

type Labels = Vec<(&'static str, &'static str)>;

/// Latencies kept for the percentiles in `/api/stats`.
const RECENT: usize = 1024;

pub struct Metrics {
    registry: Registry,
    sends: Family<Labels, Counter>,
    wakes: Family<Labels, Counter>,
    wake_failures: Family<Labels, Counter>,
    folded: Counter,
    wake_latency: Histogram,
    recent_latency: Mutex<VecDeque<Duration>>,
    pub nats_connected: Gauge,
    pub agents_waiting: Gauge,
}

/// How a send ended, as counted.
#[derive(Clone, Copy, Debug)]
pub enum SendOutcome {
    Stored,
    Duplicate,
    Rejected,
    Unavailable,
}

/// How a gateway call ended, as counted.
#[derive(Clone, Copy, Debug)]
pub enum WakeOutcome {
    Queued,
    Coalesced,
    /// Worth retrying soon (connection error, 408, 429, 5xx).
    Retryable,
    /// A 4xx other than 408/429: a configuration problem.
    Rejected,
}

#[derive(Debug, Serialize)]
pub struct WakeStats {
    /// Gateway calls answered 200.
    pub sent: u64,
    /// Of those, answered `coalesced` by the gateway.
    pub gateway_coalesced: u64,
    /// Gateway calls that failed (each is retried).
    pub failed: u64,
    /// Messages covered by a wake they did not cause themselves.
    pub coalesced: u64,
    /// Agents with messages not yet covered by a successful wake.
    pub waiting: i64,
    /// Milliseconds from a message being stored to the wake that covered it
    /// being answered, over the most recent wakes.
    pub latency_ms: Option<Percentiles>,
}

#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        let sends = Family::<Labels, Counter>::default();
        let wakes = Family::<Labels, Counter>::default();
        let wake_failures = Family::<Labels, Counter>::default();
        let folded = Counter::default();
        let wake_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        let (nats_connected, agents_waiting) = (Gauge::default(), Gauge::default());
        let mut registry = Registry::with_prefix("clawbus");
        registry.register("sends", "Sends by outcome", sends.clone());
        registry.register("wakes", "Gateway calls answered 200, by gateway outcome", wakes.clone());
        registry.register("wake_failures", "Failed gateway calls (all retried)", wake_failures.clone());
        registry.register("wake_coalesced_messages", "Messages folded into another's wake", folded.clone());
        registry.register(
            "wake_latency_seconds",
            "From message stored to covering wake answered",
            wake_latency.clone(),
        );
        registry.register("nats_connected", "1 while connected to NATS", nats_connected.clone());
        registry.register("agents_waiting", "Local agents with un-woken messages", agents_waiting.clone());
        Metrics {
            registry,
            sends,
            wakes,
            wake_failures,
            folded,
            wake_latency,
            recent_latency: Mutex::new(VecDeque::with_capacity(RECENT)),
            nats_connected,
            agents_waiting,
        }
    }
}

impl Metrics {
    pub fn send(&self, outcome: SendOutcome) {
        let label = match outcome {
            SendOutcome::Stored => "stored",
            SendOutcome::Duplicate => "duplicate",
            SendOutcome::Rejected => "rejected",
            SendOutcome::Unavailable => "unavailable",
        };
        self.sends.get_or_create(&vec![("outcome", label)]).inc();
    }

    pub fn wake(&self, outcome: WakeOutcome) {
        let (family, label) = match outcome {
            WakeOutcome::Queued => (&self.wakes, "queued"),
            WakeOutcome::Coalesced => (&self.wakes, "coalesced"),
            WakeOutcome::Retryable => (&self.wake_failures, "retryable"),
            WakeOutcome::Rejected => (&self.wake_failures, "rejected"),
        };
        family.get_or_create(&vec![("outcome", label)]).inc();
    }

    /// A successful wake covered `messages`, the oldest stored `latency` ago.
    pub fn woke(&self, messages: u64, latency: Duration) {
        self.folded.inc_by(messages.saturating_sub(1));
        self.wake_latency.observe(latency.as_secs_f64());
        let mut recent = self.recent_latency.lock().expect("metrics lock");
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(latency);
    }

    fn count(family: &Family<Labels, Counter>, label: &'static str) -> u64 {
        family.get_or_create(&vec![("outcome", label)]).get()
    }

    pub fn wake_stats(&self) -> WakeStats {
        let queued = Self::count(&self.wakes, "queued");
        let gateway_coalesced = Self::count(&self.wakes, "coalesced");
        let mut recent: Vec<Duration> = self.recent_latency.lock().expect("metrics lock").iter().copied().collect();
        recent.sort_unstable();
        let ms = |q: f64| recent[((recent.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
        WakeStats {
            sent: queued + gateway_coalesced,
            gateway_coalesced,
            failed: Self::count(&self.wake_failures, "retryable") + Self::count(&self.wake_failures, "rejected"),
            coalesced: self.folded.get(),
            waiting: self.agents_waiting.get(),
            latency_ms: (!recent.is_empty()).then(|| Percentiles {
                p50: ms(0.5),
                p90: ms(0.9),
                p99: ms(0.99),
                max: ms(1.0),
            }),
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
