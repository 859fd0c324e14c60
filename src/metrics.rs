//! Counters for operators, at `/metrics` in Prometheus text format. Every
//! series exists from start-up (at zero), so dashboards and alerts see it
//! before its first event. These are this adapter's; what the whole fleet
//! did is in `/api/stats`, from JetStream.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Latency buckets: 0.5 ms to about a minute.
#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0005, 2.0, 18))
    }
}

pub(crate) struct Metrics {
    registry: Registry,
    sends: Family<Labels, Counter>,
    send_latency: Histogram,
    wakes: Family<Labels, Counter>,
    agent_wake_failures: Family<Labels, Counter>,
    agent_unread: Family<Labels, Gauge>,
    refusals: Family<Labels, Counter>,
    /// The same, summed per reason (in the order of `REFUSALS`).
    refusals_by_reason: [Counter; 4],
    folded: Counter,
    wake_latency: Histogram,
    requests: Family<Labels, Counter>,
    request_latency: Family<Labels, Histogram, Buckets>,
    pub nats_connected: Gauge,
    pub nats_reconnects: Counter,
    /// 1 while JetStream answers through the server connected to.
    pub jetstream_ready: Gauge,
    /// Servers given up because JetStream did not answer through them.
    pub nats_server_moves: Counter,
    /// The server connected to, as a label (value 1).
    pub nats_server: Family<Labels, Gauge>,
    pub agents_waiting: Gauge,
}

/// How a send ended, as counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SendOutcome {
    Stored,
    Duplicate,
    Rejected,
    Unavailable,
    /// Refused at a JetStream storage limit (507): needs an operator.
    StoreFull,
}

impl SendOutcome {
    const ALL: [SendOutcome; 5] = [Self::Stored, Self::Duplicate, Self::Rejected, Self::Unavailable, Self::StoreFull];

    fn label(self) -> &'static str {
        match self {
            Self::Stored => "stored",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
            Self::Unavailable => "unavailable",
            Self::StoreFull => "store_full",
        }
    }
}

/// How a gateway call ended, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeOutcome {
    Queued,
    Coalesced,
    /// Worth retrying soon (connection error, 408, 429, 5xx).
    Retryable,
    /// A 4xx other than 408/429, a redirect, or a 2xx that is not a wake:
    /// a configuration problem.
    Rejected,
}

impl WakeOutcome {
    const ALL: [WakeOutcome; 4] = [Self::Queued, Self::Coalesced, Self::Retryable, Self::Rejected];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Coalesced => "coalesced",
            Self::Retryable => "retryable",
            Self::Rejected => "rejected",
        }
    }

    pub(crate) fn succeeded(self) -> bool {
        matches!(self, Self::Queued | Self::Coalesced)
    }
}

fn outcome(label: &str) -> Labels {
    vec![("outcome", label.to_owned())]
}

/// The reasons a send is refused (see `mailbox::limits`).
const REFUSALS: [&str; 4] = ["max_hops", "pair_per_minute", "sends_per_minute", "accept_from"];

fn refusal(reason: &str, sender: &str) -> Labels {
    vec![("reason", reason.to_owned()), ("agent", sender.to_owned())]
}

fn agent(name: &str) -> Labels {
    vec![("agent", name.to_owned())]
}

impl Metrics {
    /// The metrics of an adapter hosting `agents`.
    pub(crate) fn new(agents: &[String]) -> Self {
        let mut registry = Registry::with_prefix("clawbus");
        let build = Family::<Labels, Gauge>::default();
        build.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_owned())]).set(1);
        registry.register("build_info", "The running version", build);
        let metrics = Metrics {
            sends: Family::default(),
            send_latency: Buckets.new_metric(),
            wakes: Family::default(),
            agent_wake_failures: Family::default(),
            agent_unread: Family::default(),
            refusals: Family::default(),
            refusals_by_reason: Default::default(),
            folded: Counter::default(),
            wake_latency: Buckets.new_metric(),
            requests: Family::default(),
            request_latency: Family::new_with_constructor(Buckets),
            nats_connected: Gauge::default(),
            nats_reconnects: Counter::default(),
            jetstream_ready: Gauge::default(),
            nats_server_moves: Counter::default(),
            nats_server: Family::default(),
            agents_waiting: Gauge::default(),
            registry,
        };
        for send in SendOutcome::ALL {
            let _ = metrics.sends.get_or_create(&outcome(send.label()));
        }
        for wake in WakeOutcome::ALL {
            let _ = metrics.wakes.get_or_create(&outcome(wake.label()));
        }
        for name in agents {
            let _ = metrics.agent_wake_failures.get_or_create(&agent(name));
            let _ = metrics.agent_unread.get_or_create(&agent(name));
            for reason in REFUSALS {
                let _ = metrics.refusals.get_or_create(&refusal(reason, name));
            }
        }
        metrics.register()
    }

    fn register(mut self) -> Self {
        let r = &mut self.registry;
        r.register("sends", "Sends by outcome", self.sends.clone());
        r.register(
            "send_latency_seconds",
            "From a send's request to its answer, for sends stored",
            self.send_latency.clone(),
        );
        r.register("wakes", "Gateway calls by outcome (queued and coalesced were answered 200)", self.wakes.clone());
        r.register(
            "agent_wake_failures",
            "Failed gateway calls per local agent (all retried)",
            self.agent_wake_failures.clone(),
        );
        r.register(
            "agent_unread",
            "Unread messages per agent, as of the last fleet listing",
            self.agent_unread.clone(),
        );
        r.register(
            "refusals",
            "Sends refused by conversation safety limits, by reason and sender",
            self.refusals.clone(),
        );
        r.register("wake_coalesced_messages", "Messages folded into another's wake", self.folded.clone());
        r.register("wake_latency_seconds", "From message stored to covering wake answered", self.wake_latency.clone());
        r.register("http_requests", "HTTP requests by route and status", self.requests.clone());
        r.register("http_request_duration_seconds", "HTTP request latency by route", self.request_latency.clone());
        r.register("nats_connected", "1 while connected to NATS", self.nats_connected.clone());
        r.register("nats_reconnects", "Times the NATS connection was established again", self.nats_reconnects.clone());
        r.register(
            "jetstream_ready",
            "1 while JetStream answers through the NATS server connected to",
            self.jetstream_ready.clone(),
        );
        r.register(
            "nats_server_moves",
            "NATS servers given up because JetStream did not answer through them",
            self.nats_server_moves.clone(),
        );
        r.register("nats_server", "The NATS server connected to (label server)", self.nats_server.clone());
        r.register("agents_waiting", "Local agents with un-woken messages", self.agents_waiting.clone());
        self
    }

    /// The connection's health as of now (set on every scrape).
    pub(crate) fn nats_health(&self, ready: bool, server: Option<&str>, moves: u64) {
        self.jetstream_ready.set(ready.into());
        self.nats_server_moves.inc_by(moves.saturating_sub(self.nats_server_moves.get()));
        self.nats_server.clear();
        if let Some(server) = server {
            self.nats_server.get_or_create(&vec![("server", server.to_owned())]).set(1);
        }
    }

    pub(crate) fn send(&self, outcome: SendOutcome, took: Duration) {
        self.sends.get_or_create(&self::outcome(outcome.label())).inc();
        if matches!(outcome, SendOutcome::Stored | SendOutcome::Duplicate) {
            self.send_latency.observe(took.as_secs_f64());
        }
    }

    pub(crate) fn wake(&self, name: &str, outcome: WakeOutcome) {
        self.wakes.get_or_create(&self::outcome(outcome.label())).inc();
        if !outcome.succeeded() {
            self.agent_wake_failures.get_or_create(&agent(name)).inc();
        }
    }

    /// A successful wake covered `messages`, the oldest stored `latency` ago.
    pub(crate) fn woke(&self, messages: u64, latency: Duration) {
        self.folded.inc_by(messages.saturating_sub(1));
        self.wake_latency.observe(latency.as_secs_f64());
    }

    pub(crate) fn refused(&self, reason: &'static str, sender: &str) {
        self.refusals.get_or_create(&refusal(reason, sender)).inc();
        if let Some(i) = REFUSALS.iter().position(|r| *r == reason) {
            self.refusals_by_reason[i].inc();
        }
    }

    /// This adapter's refusals by reason, for `/api/stats`.
    pub(crate) fn refusal_counts(&self) -> Vec<(&'static str, u64)> {
        REFUSALS.iter().zip(&self.refusals_by_reason).map(|(reason, count)| (*reason, count.get())).collect()
    }

    pub(crate) fn unread(&self, name: &str, unread: u64) {
        self.agent_unread.get_or_create(&agent(name)).set(unread.try_into().unwrap_or(i64::MAX));
    }

    pub(crate) fn request(&self, route: &str, status: u16, took: Duration) {
        self.requests.get_or_create(&vec![("route", route.to_owned()), ("status", status.to_string())]).inc();
        self.request_latency.get_or_create(&vec![("route", route.to_owned())]).observe(took.as_secs_f64());
    }

    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
