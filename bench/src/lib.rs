//! clawbus's benchmarks, run on the `clawbus-testkit` harness (real
//! nats-server and adapter processes, stand-in OpenClaw gateways).
//!
//! The crate root is the send-to-wake benchmark (the `clawbus-bench`
//! binary): how long from one agent sending to another agent's gateway being
//! woken, how many messages per second get through, and how that compares
//! with raw JetStream on the same server in the same run. [`scale`] (the
//! `clawbus-scale` binary) measures one adapter hosting many agents:
//! start-up time, memory, wake latency and the cost of listing the fleet.
//!
//! Each mode of the send-to-wake benchmark starts its own nats-server (file
//! storage, `sync_interval: always`, or the default for comparison), real
//! adapter processes hosting the agents, and a stand-in gateway per adapter
//! that timestamps every wake's arrival. This process is the load generator: it sends through the
//! HTTP API of the sender's adapter to an agent on another adapter, open
//! loop at each offered rate (see `load`), and ties every message to the
//! first wake covering it (`Clawbus-Up-To`), so every message answered 200
//! is either measured or reported missing. The raw side publishes with ack
//! to a stream of its own and receives at an ordered consumer. The HTTP
//! floor is the same send to an endpoint that answers at once (see
//! `floor`): with the raw side, what any HTTP front end to JetStream pays.
//!
//! Per mode: a warm-up, the fixed rates (clawbus, raw and the HTTP floor
//! interleaved, so drift in the machine hits all alike), the most messages
//! stored per second with many sends in flight, and a search for the
//! highest rate clawbus and raw sustain with p99 under the limit.

mod fleet;
mod floor;
pub mod limits;
mod load;
mod machine;
mod meter;
mod raw;
mod receipts;
mod receiver;
mod report;
pub mod scale;
mod search;
mod stats;
mod step;
mod table;
mod target;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use serde::{Serialize, Serializer};

use clawbus_testkit::NatsServer;

pub use machine::Machine;
pub use meter::Cost;
pub use report::{AdapterUsage, Ceiling, Comparison, Goal, ModeReport, Report, Versus};
pub use stats::Summary;
pub use step::{Kind, Slow, Step};
pub use target::Side;

use fleet::Fleet;
use floor::Floor;
use meter::Meter;
use raw::Raw;
use receiver::Receiver;
use step::{Load, Plan};
use target::Target;

/// Warm-up rate: enough to reach every agent (first sends fill the
/// adapters' registry caches) without loading anything.
const WARMUP_RATE: f64 = 200.0;
/// The search stops when the highest pass and lowest failure are this close.
const SEARCH_PRECISION: f64 = 0.1;
const MAX_PROBES: usize = 6;
/// Every side, in the order each rate runs them. (The search for the
/// highest rate sustained runs clawbus and raw only.)
const SIDES: [Side; 3] = [Side::Clawbus, Side::Raw, Side::Http];

/// JetStream's fsync setting for a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncInterval {
    /// fsync after every write, as clawbus runs in production.
    Always,
    /// JetStream's default (fsync every 2 minutes).
    Default,
}

impl SyncInterval {
    fn describe(self) -> &'static str {
        match self {
            SyncInterval::Always => "always (fsync after every write)",
            SyncInterval::Default => "default (fsync every 2 minutes)",
        }
    }
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub adapters: usize,
    /// Spread evenly over the adapters.
    pub agents: usize,
    /// Offered rates, messages per second.
    pub rates: Vec<f64>,
    /// Measured time per rate.
    #[serde(serialize_with = "seconds")]
    pub step: Duration,
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    /// Closed-loop run for the most messages per second, if any.
    #[serde(serialize_with = "optional_seconds")]
    pub saturate: Option<Duration>,
    /// Sends in flight in the closed-loop run.
    pub concurrency: usize,
    /// Time per probe of the highest-rate search, if any.
    #[serde(serialize_with = "optional_seconds")]
    pub probe: Option<Duration>,
    /// Open-loop sends in flight at most; only a saturated path reaches it,
    /// and then the generator's lateness shows it.
    pub max_in_flight: usize,
    #[serde(serialize_with = "seconds")]
    pub p99_limit: Duration,
    /// How long to wait for the last wakes of a step.
    #[serde(serialize_with = "seconds")]
    pub settle: Duration,
    pub sync_intervals: Vec<SyncInterval>,
}

impl Settings {
    /// The benchmark of record: 20 agents on 2 adapters, 100, 1,000 and
    /// 5,000 messages per second, fsync always. 10 s per rate: this disk
    /// stalls an fsync for 20-100 ms a few times a minute, and at 10,000
    /// samples one stall shows in p99.9 and max without deciding p99 alone.
    pub fn standard() -> Settings {
        Settings {
            adapters: 2,
            agents: 20,
            rates: vec![100.0, 1000.0, 5000.0],
            step: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            saturate: Some(Duration::from_secs(5)),
            concurrency: 128,
            probe: Some(Duration::from_secs(3)),
            max_in_flight: 1024,
            p99_limit: Duration::from_millis(50),
            settle: Duration::from_secs(30),
            sync_intervals: vec![SyncInterval::Always],
        }
    }
}

fn seconds<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

fn optional_seconds<S: Serializer>(duration: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    duration.map(|d| d.as_secs_f64()).serialize(serializer)
}

/// Runs the benchmark; progress goes to stderr.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let mut modes = Vec::new();
    for &sync in &settings.sync_intervals {
        modes.push(Mode::start(settings, sync).await?.run().await);
    }
    Ok(Report::new(Machine::probe(), settings.clone(), modes))
}

/// One nats-server setting: its own server, adapters, gateways, raw stream
/// and HTTP floor.
struct Mode<'a> {
    settings: &'a Settings,
    sync: SyncInterval,
    steps: Vec<Step>,
    // Dropped in this order: adapters and gateways, the raw clients, the
    // HTTP floor, the server, and the runtime the receiving ends ran on.
    fleet: Arc<Fleet>,
    raw: Arc<Raw>,
    floor: Arc<Floor>,
    /// For the meter: the server's write counts.
    js: jetstream::Context,
    /// For the meter too: the server's CPU.
    nats: NatsServer,
    _receiver: Receiver,
}

impl<'a> Mode<'a> {
    async fn start(settings: &'a Settings, sync: SyncInterval) -> anyhow::Result<Mode<'a>> {
        eprintln!("sync_interval {sync:?}: starting nats-server, {} adapters, gateways", settings.adapters);
        let nats = NatsServer::start_single(sync == SyncInterval::Always);
        let receiver = Receiver::start();
        let fleet = Fleet::start(&nats.url(), settings.adapters, settings.agents, &receiver).await;
        let raw = Raw::start(&nats.url(), settings.agents, &receiver).await?;
        let js = jetstream::new(async_nats::connect(nats.url()).await?);
        Ok(Mode {
            settings,
            sync,
            steps: Vec::new(),
            fleet: Arc::new(fleet),
            raw: Arc::new(raw),
            floor: Arc::new(Floor::start()?),
            js,
            nats,
            _receiver: receiver,
        })
    }

    async fn run(mut self) -> ModeReport {
        let s = self.settings;
        for side in SIDES {
            let step = self.measure(side, Kind::Warmup, Load::Rate(WARMUP_RATE), s.warmup).await;
            self.steps.push(step);
        }
        for &rate in &s.rates {
            for side in SIDES {
                let step = self.measure(side, Kind::Fixed, Load::Rate(rate), s.step).await;
                self.steps.push(step);
            }
        }
        if let Some(duration) = s.saturate {
            for side in SIDES {
                let step = self.measure(side, Kind::Saturate, Load::InFlight(s.concurrency), duration).await;
                self.steps.push(step);
            }
        }
        let mut highest = None;
        if let Some(duration) = s.probe {
            let clawbus = self.search(Side::Clawbus, duration).await;
            highest = Some(Versus::new(clawbus, self.search(Side::Raw, duration).await));
        }
        let adapters = self
            .fleet
            .adapters()
            .iter()
            .filter_map(|adapter| {
                let used = adapter.resources()?;
                let mb = |bytes: u64| bytes as f64 / 1e6;
                let (rss_mb, peak_rss_mb) = (mb(used.rss), mb(used.peak_rss));
                Some(AdapterUsage { host: adapter.host().into(), cpu_s: used.cpu.as_secs_f64(), rss_mb, peak_rss_mb })
            })
            .collect();
        ModeReport::new(self.sync, self.steps, highest, adapters, machine::cores())
    }

    async fn measure(&self, side: Side, kind: Kind, load: Load, duration: Duration) -> Step {
        match side {
            Side::Clawbus => self.measure_on(&self.fleet, kind, load, duration).await,
            Side::Raw => self.measure_on(&self.raw, kind, load, duration).await,
            Side::Http => self.measure_on(&self.floor, kind, load, duration).await,
        }
    }

    async fn measure_on<T: Target>(&self, target: &Arc<T>, kind: Kind, load: Load, duration: Duration) -> Step {
        let s = self.settings;
        let meter = Meter::start(target.as_ref(), &self.js, &self.nats).await;
        let run = match load {
            Load::Rate(rate) => load::open_loop(target, rate, duration, s.max_in_flight).await,
            Load::InFlight(n) => load::closed_loop(target, n, duration).await,
        };
        let arrivals = load::arrivals(target.as_ref(), &run, s.settle).await;
        let cost = meter.stop(target.as_ref(), &self.js, &self.nats).await;
        let step = Step::new(Plan { side: T::SIDE, kind, load }, &run, &arrivals, cost, s.p99_limit);
        eprintln!(
            "  {} {kind:?} {load:?}: stored {:.0}/s, p99 {:.2} ms, {} missing, {} errors",
            T::SIDE.name(),
            step.stored_rate,
            stats::p99(step.latency.as_ref()),
            step.missing,
            step.errors
        );
        step
    }

    /// The highest rate sustained, probing between the fixed rates that
    /// passed and failed.
    async fn search(&mut self, side: Side, duration: Duration) -> f64 {
        let fixed: Vec<&Step> = self.steps.iter().filter(|s| s.side == side && s.kind == Kind::Fixed).collect();
        let rate = |step: &&Step| step.offered_rate.unwrap_or_default();
        let passed = fixed.iter().filter(|s| s.sustained).map(rate).fold(0.0, f64::max);
        let failed = fixed.iter().filter(|s| !s.sustained).map(rate).filter(|&r| r > passed).reduce(f64::min);
        let mut probes = Vec::new();
        let highest = search::highest(passed, failed, SEARCH_PRECISION, MAX_PROBES, async |rate| {
            let step = self.measure(side, Kind::Probe, Load::Rate(rate), duration).await;
            let sustained = step.sustained;
            probes.push(step);
            sustained
        })
        .await;
        self.steps.extend(probes);
        highest
    }
}
