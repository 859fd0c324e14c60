//! What a run found: every step, the clawbus/raw comparisons and whether
//! the targets were met (serialized as the JSON; `table` prints it).

use serde::Serialize;

use super::machine::Machine;
use super::step::{Kind, Step};
use super::table::thousands;
use super::target::Side;
use super::{Settings, SyncInterval};

/// clawbus next to raw JetStream.
#[derive(Clone, Debug, Serialize)]
pub struct Versus {
    pub clawbus: f64,
    pub raw: f64,
    /// clawbus / raw.
    pub ratio: f64,
}

impl Versus {
    pub fn new(clawbus: f64, raw: f64) -> Versus {
        Versus { clawbus, raw, ratio: clawbus / raw }
    }
}

/// clawbus latency over raw JetStream latency at one offered rate.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub rate: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// What every process spent per message in the closed-loop runs, and the
/// throughput that the floors alone leave room for on these cores: an
/// estimate for this machine, client and server stack, since a message
/// through clawbus costs at least one HTTP request and one publish with its
/// delivery, each measured here on its own.
#[derive(Clone, Debug, Serialize)]
pub struct Ceiling {
    /// Adapters, nats-server and this process (client and gateways), in
    /// microseconds per message stored.
    pub clawbus_us: f64,
    pub clawbus_adapters_us: f64,
    pub clawbus_server_us: f64,
    pub clawbus_bench_us: f64,
    /// nats-server and this process (publisher and consumer).
    pub raw_us: f64,
    /// This process: the load generator's client and the endpoint's thread.
    pub http_us: f64,
    /// The endpoint's thread alone: the server's side of a request.
    pub http_endpoint_us: f64,
    /// The HTTP floor's most requests answered per second.
    pub http_per_second: f64,
    /// `cores / (raw_us + http_us)`: messages per second these cores could
    /// carry if each cost only one HTTP request and one publish with its
    /// delivery, as measured alone; nothing is spent on wakes.
    pub bound_per_second: f64,
    /// The bound over raw JetStream's measured rate.
    pub bound_vs_raw: f64,
    /// clawbus's measured rate over the bound.
    pub clawbus_vs_bound: f64,
}

impl Ceiling {
    /// `None` unless every side stored something and every CPU figure was
    /// measured.
    fn new(clawbus: &Step, raw: &Step, http: &Step, cores: usize) -> Option<Ceiling> {
        if [clawbus, raw, http].iter().any(|step| step.stored == 0) {
            return None;
        }
        let per = |ms: f64, step: &Step| ms * 1e3 / step.stored as f64;
        let (ours, server, bench) = (
            per(clawbus.cost.adapters_cpu_ms?, clawbus),
            per(clawbus.cost.server_cpu_ms?, clawbus),
            per(clawbus.cost.bench_cpu_ms, clawbus),
        );
        let raw_us = per(raw.cost.server_cpu_ms? + raw.cost.bench_cpu_ms, raw);
        let http_us = per(http.cost.bench_cpu_ms, http);
        let http_endpoint_us = per(http.cost.adapters_cpu_ms?, http);
        let bound = cores as f64 * 1e6 / (raw_us + http_us);
        Some(Ceiling {
            clawbus_us: ours + server + bench,
            clawbus_adapters_us: ours,
            clawbus_server_us: server,
            clawbus_bench_us: bench,
            raw_us,
            http_us,
            http_endpoint_us,
            http_per_second: http.stored_rate,
            bound_per_second: bound,
            bound_vs_raw: bound / raw.stored_rate,
            clawbus_vs_bound: clawbus.stored_rate / bound,
        })
    }
}

/// One adapter process at the end of a mode.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterUsage {
    pub host: String,
    pub cpu_s: f64,
    pub rss_mb: f64,
    pub peak_rss_mb: f64,
}

/// Everything measured against one nats-server setting.
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    pub sync_interval: SyncInterval,
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    pub comparisons: Vec<Comparison>,
    /// Most messages stored per second, closed loop.
    pub throughput: Option<Versus>,
    /// The same runs' CPU per message, next to the floors'.
    pub ceiling: Option<Ceiling>,
    /// Highest offered rate sustained with p99 under the limit.
    pub highest_sustained: Option<Versus>,
    pub adapters: Vec<AdapterUsage>,
}

impl ModeReport {
    pub fn new(
        sync_interval: SyncInterval,
        steps: Vec<Step>,
        highest_sustained: Option<Versus>,
        adapters: Vec<AdapterUsage>,
        cores: usize,
    ) -> Self {
        let mut mode = ModeReport {
            sync_interval,
            steps,
            comparisons: Vec::new(),
            throughput: None,
            ceiling: None,
            highest_sustained,
            adapters,
        };
        mode.comparisons = mode
            .fixed_rates()
            .into_iter()
            .filter_map(|rate| {
                let clawbus = mode.fixed(Side::Clawbus, rate)?.latency.as_ref()?.shown();
                let raw = mode.fixed(Side::Raw, rate)?.latency.as_ref()?.shown();
                let [p50, p90, p99, p999, max] = std::array::from_fn(|i| clawbus[i] / raw[i]);
                Some(Comparison { rate, p50, p90, p99, p999, max })
            })
            .collect();
        let saturated = |side| mode.steps.iter().find(|s| s.side == side && s.kind == Kind::Saturate);
        if let (Some(clawbus), Some(raw)) = (saturated(Side::Clawbus), saturated(Side::Raw)) {
            mode.throughput = Some(Versus::new(clawbus.stored_rate, raw.stored_rate));
            mode.ceiling = saturated(Side::Http).and_then(|http| Ceiling::new(clawbus, raw, http, cores));
        }
        mode
    }

    /// The fixed and probe steps of one side.
    pub(super) fn open_steps(&self, side: Side) -> impl Iterator<Item = &Step> {
        self.steps.iter().filter(move |s| s.side == side && matches!(s.kind, Kind::Fixed | Kind::Probe))
    }

    pub(super) fn fixed(&self, side: Side, rate: f64) -> Option<&Step> {
        self.steps.iter().find(|s| s.side == side && s.kind == Kind::Fixed && s.offered_rate == Some(rate))
    }

    pub(super) fn fixed_rates(&self) -> Vec<f64> {
        let mut rates: Vec<f64> =
            self.steps.iter().filter(|s| s.kind == Kind::Fixed).filter_map(|s| s.offered_rate).collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        rates
    }

    fn peak_rss_mb(&self) -> f64 {
        self.adapters.iter().map(|a| a.peak_rss_mb).fold(0.0, f64::max)
    }
}

/// A target of the issue, met or not.
#[derive(Clone, Debug, Serialize)]
pub struct Goal {
    pub goal: String,
    pub value: String,
    pub met: bool,
}

/// The rate the latency targets are stated at.
const TARGET_RATE: f64 = 1000.0;

fn goals(mode: &ModeReport, agents: usize) -> Vec<Goal> {
    let goal = |goal: String, met: bool, value: String| Goal { goal, value, met };
    let mut goals = Vec::new();
    if let (Some(clawbus), Some(raw)) = (mode.fixed(Side::Clawbus, TARGET_RATE), mode.fixed(Side::Raw, TARGET_RATE)) {
        let (ours, floor) = (clawbus.p99(), raw.p99());
        goals.push(goal("send-to-wake p99 at 1,000 msg/s under 5 ms".into(), ours < 5.0, format!("{ours:.2} ms")));
        goals.push(goal(
            "send-to-wake p99 at 1,000 msg/s within 3x raw JetStream's p99".into(),
            ours <= 3.0 * floor,
            format!("{:.2}x ({ours:.2} ms vs {floor:.2} ms)", ours / floor),
        ));
    }
    if let Some(throughput) = &mode.throughput {
        goals.push(goal(
            "adapter throughput at least half of raw JetStream's publish rate".into(),
            throughput.ratio >= 0.5,
            format!(
                "{:.2}x ({}/s vs {}/s)",
                throughput.ratio,
                thousands(throughput.clawbus),
                thousands(throughput.raw)
            ),
        ));
    }
    let peak = mode.peak_rss_mb();
    goals.push(goal(format!("adapter peak RSS under 50 MB at {agents} agents"), peak < 50.0, format!("{peak:.1} MB")));
    let ours = || mode.steps.iter().filter(|s| s.side == Side::Clawbus);
    let (missing, stored): (usize, usize) = (ours().map(|s| s.missing).sum(), ours().map(|s| s.stored).sum());
    goals.push(goal(
        "every send answered 200 woke its recipient".into(),
        missing == 0,
        format!("{missing} of {stored} not woken"),
    ));
    goals
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub modes: Vec<ModeReport>,
    /// Judged on the `sync_interval: always` mode, as the targets are stated.
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn new(machine: Machine, settings: Settings, modes: Vec<ModeReport>) -> Report {
        let goals = modes
            .iter()
            .find(|m| m.sync_interval == SyncInterval::Always)
            .map(|mode| goals(mode, settings.agents))
            .unwrap_or_default();
        Report { machine, settings, modes, goals }
    }
}
