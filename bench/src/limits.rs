//! What conversation safety costs a send (the `clawbus-limits` binary):
//! send latency, send-to-wake latency and throughput with the limits on,
//! next to the same with them off, in one run on one nats-server.
//!
//! Two adapters share the server and one stand-in gateway each. Adapter
//! "off" has `pair_per_minute = 0` and no budget, and its sender sends plain
//! messages: no check reads anything. Adapter "on" has a pair limit and a
//! send budget too high to refuse anything, so every check runs (two counts
//! for the pair, three for the budget), and every other message replies to
//! the one before, so the parent read runs as well. (That read is not a
//! `[limits]` setting: a reply pays it with the limits off too. The "on"
//! side is everything conversation safety reads on a send, the "off" side
//! none of it.)
//!
//! Each adapter hosts a silent sender and ten woken recipients, named after
//! the side (`off-sender`, `off-r0`, ...), so every wake belongs to one side.
//! The sides take turns in rounds, the first side alternating, so drift in
//! the machine hits both alike; each round ends when every stored message
//! has woken its recipient, so neither side's backlog runs into the other's
//! round.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::json;
use tokio::task::JoinSet;

use clawbus_testkit::{Adapter, AdapterConfig, AgentSpec, Gateway, NatsServer};

use super::SyncInterval;
use super::fleet::CONTENT;
use super::machine::Machine;
use super::receiver::Receiver;
use super::stats::{Summary, ms};

/// Woken agents per side; messages go to them in turn.
const RECIPIENTS: usize = 10;
/// Messages per side before measuring: connections and registry caches.
const WARMUP: usize = 50;
/// Rounds per measurement; the sides take turns within each.
pub const ROUNDS: usize = 5;
/// How long a round may wait for its last wakes.
const SETTLE: Duration = Duration::from_secs(60);
/// A limit no run reaches: every check runs, none refuses.
const UNREACHED: u32 = 1_000_000;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Per side, sent one at a time: send and send-to-wake latency.
    pub messages: usize,
    /// Per side, closed loop with `concurrency` sends in flight: throughput.
    #[serde(serialize_with = "super::seconds")]
    pub duration: Duration,
    pub concurrency: usize,
    pub rounds: usize,
    pub sync_interval: SyncInterval,
}

/// The two adapters compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limits {
    Off,
    On,
}

impl Limits {
    fn name(self) -> &'static str {
        match self {
            Limits::Off => "off",
            Limits::On => "on",
        }
    }

    /// The adapter's `[limits]` lines.
    fn config(self) -> Vec<String> {
        match self {
            Limits::Off => vec!["pair_per_minute = 0".into()],
            Limits::On => vec![format!("pair_per_minute = {UNREACHED}"), format!("sends_per_minute = {UNREACHED}")],
        }
    }

    /// Whether every other message replies to the one before.
    fn replies(self) -> bool {
        self == Limits::On
    }
}

/// One side's results over all its rounds of one kind.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub sent: usize,
    /// Answered 200.
    pub stored: usize,
    pub errors: usize,
    /// A few distinct error texts.
    pub error_examples: Vec<String>,
    /// Stored but no wake covering it arrived.
    pub missing: usize,
    /// Sending time (first send to last answer), summed over the rounds.
    pub seconds: f64,
    pub stored_per_s: f64,
    /// Each round's stored per second, in order.
    pub rounds_stored_per_s: Vec<f64>,
    /// The HTTP round trip of `POST /api/send`.
    pub send: Option<Summary>,
    /// Client clock just before the send → arrival at the gateway of the
    /// first wake whose `Clawbus-Up-To` covers the message.
    pub send_to_wake: Option<Summary>,
    /// The adapter's CPU time (sending and waking) per stored message.
    pub adapter_cpu_us_per_msg: Option<f64>,
}

/// One adapter's configuration and results.
#[derive(Clone, Debug, Serialize)]
pub struct SideReport {
    pub limits: Limits,
    /// The `[limits]` lines of its config.
    pub config: Vec<String>,
    pub replies: bool,
    /// Messages sent one at a time.
    pub one_at_a_time: Phase,
    /// Closed loop with `concurrency` sends in flight.
    pub in_flight: Phase,
}

/// One line of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub metric: String,
    pub off: f64,
    pub on: f64,
    /// on / off.
    pub ratio: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub settings: Settings,
    pub off: SideReport,
    pub on: SideReport,
    pub comparison: Vec<Row>,
}

/// Runs the benchmark; progress goes to stderr.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    eprintln!("starting nats-server (sync_interval {}), 2 adapters, 2 gateways", settings.sync_interval.describe());
    let nats = NatsServer::start_single(settings.sync_interval == SyncInterval::Always);
    let receiver = Receiver::start();
    let sides = [Side::start(Limits::Off, &nats, &receiver).await, Side::start(Limits::On, &nats, &receiver).await];
    let http = clawbus_testkit::http_client(Duration::from_secs(30));
    for side in &sides {
        side.round(&http, Load::OneAtATime(WARMUP), &mut Tally::default()).await;
    }
    let rounds = settings.rounds.max(1);
    // Even rounds start with "off", odd ones with "on".
    let order = |round: usize| if round.is_multiple_of(2) { [0, 1] } else { [1, 0] };
    let mut one = [Tally::default(), Tally::default()];
    for round in 0..rounds {
        let count = settings.messages * (round + 1) / rounds - settings.messages * round / rounds;
        for i in order(round) {
            sides[i].round(&http, Load::OneAtATime(count), &mut one[i]).await;
            eprintln!(
                "  round {}/{rounds}, limits {}: {count} messages one at a time",
                round + 1,
                sides[i].limits.name()
            );
        }
    }
    let mut many = [Tally::default(), Tally::default()];
    let slice = settings.duration / rounds as u32;
    for round in 0..rounds {
        for i in order(round) {
            let stored = sides[i].round(&http, Load::InFlight(settings.concurrency, slice), &mut many[i]).await;
            eprintln!(
                "  round {}/{rounds}, limits {}: {:.0} stored/s with {} in flight",
                round + 1,
                sides[i].limits.name(),
                stored,
                settings.concurrency
            );
        }
    }
    let [one_off, one_on] = one;
    let [many_off, many_on] = many;
    let report = |limits: Limits, one: Tally, many: Tally| SideReport {
        limits,
        config: limits.config(),
        replies: limits.replies(),
        one_at_a_time: one.phase(),
        in_flight: many.phase(),
    };
    let (off, on) = (report(Limits::Off, one_off, many_off), report(Limits::On, one_on, many_on));
    let comparison = compare(&off, &on, settings.concurrency);
    Ok(Report { machine: Machine::probe(), settings: settings.clone(), off, on, comparison })
}

/// on / off for what the table shows.
fn compare(off: &SideReport, on: &SideReport, concurrency: usize) -> Vec<Row> {
    let row = |metric: String, value: &dyn Fn(&SideReport) -> f64| {
        let (off, on) = (value(off), value(on));
        Row { metric, off, on, ratio: on / off }
    };
    let p50: fn(&Summary) -> f64 = |s| s.p50_ms;
    let p99: fn(&Summary) -> f64 = |s| s.p99_ms;
    let at = |summary: &Option<Summary>, pick: fn(&Summary) -> f64| summary.as_ref().map_or(f64::NAN, pick);
    let cpu = |phase: &Phase| phase.adapter_cpu_us_per_msg.unwrap_or(f64::NAN);
    vec![
        row("send p50 ms, one at a time".into(), &|s| at(&s.one_at_a_time.send, p50)),
        row("send p99 ms, one at a time".into(), &|s| at(&s.one_at_a_time.send, p99)),
        row("send-to-wake p50 ms".into(), &|s| at(&s.one_at_a_time.send_to_wake, p50)),
        row("send-to-wake p99 ms".into(), &|s| at(&s.one_at_a_time.send_to_wake, p99)),
        row("adapter CPU us/msg, one at a time".into(), &|s| cpu(&s.one_at_a_time)),
        row(format!("stored/s, {concurrency} in flight"), &|s| s.in_flight.stored_per_s),
        row(format!("send p50 ms, {concurrency} in flight"), &|s| at(&s.in_flight.send, p50)),
        row(format!("send p99 ms, {concurrency} in flight"), &|s| at(&s.in_flight.send, p99)),
        row(format!("adapter CPU us/msg, {concurrency} in flight"), &|s| cpu(&s.in_flight)),
    ]
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "limits off vs on, sync_interval {}: per side {} messages one at a time and {} s with {} in flight, \
             in {} rounds taking turns",
            s.sync_interval.describe(),
            s.messages,
            s.duration.as_secs_f64(),
            s.concurrency,
            s.rounds
        )?;
        for side in [&self.off, &self.on] {
            let messages = if side.replies { "every other message a reply" } else { "plain messages" };
            writeln!(f, "  {:<4} [limits] {}; {messages}", format!("{}:", side.limits.name()), side.config.join(", "))?;
        }
        writeln!(f, "{:<34} {:>10} {:>10} {:>8}", "", "off", "on", "on/off")?;
        // Milliseconds to the hundredth, rates and microseconds whole.
        let number = |value: f64| if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") };
        for row in &self.comparison {
            writeln!(f, "{:<34} {:>10} {:>10} {:>7.2}x", row.metric, number(row.off), number(row.on), row.ratio)?;
        }
        for side in [&self.off, &self.on] {
            for (what, phase) in [("one at a time", &side.one_at_a_time), ("in flight", &side.in_flight)] {
                write!(
                    f,
                    "{:<3} {what}: {} sent, {} stored, {} errors, {} not woken",
                    side.limits.name(),
                    phase.sent,
                    phase.stored,
                    phase.errors,
                    phase.missing
                )?;
                match phase.error_examples.first() {
                    Some(example) => writeln!(f, " (e.g. {example})")?,
                    None => writeln!(f)?,
                }
            }
        }
        Ok(())
    }
}

/// How a round sends.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// This many messages, each sent when the one before was answered.
    OneAtATime(usize),
    /// This many senders, each sending again when answered, for this long.
    InFlight(usize, Duration),
}

/// One send as the client saw it.
struct Sent {
    /// Index of the recipient.
    to: usize,
    started: Instant,
    answered: Instant,
    /// The message id, or why there is none.
    outcome: Result<u64, String>,
}

/// One adapter, its gateway and its agents.
struct Side {
    limits: Limits,
    adapter: Adapter,
    gateway: Gateway,
    send_url: String,
    sender: String,
    recipients: Vec<String>,
    /// Recipients take turns.
    next: AtomicUsize,
    /// Makes every `Idempotency-Key` unique.
    keys: AtomicUsize,
}

impl Side {
    async fn start(limits: Limits, nats: &NatsServer, receiver: &Receiver) -> Arc<Side> {
        let name = limits.name();
        // On the receiving runtime, so a busy sender cannot delay a timestamp.
        let gateway = receiver.run(Gateway::start("limits-hook-token")).await;
        let sender = format!("{name}-sender");
        let recipients: Vec<String> = (0..RECIPIENTS).map(|i| format!("{name}-r{i}")).collect();
        let config = AdapterConfig::new(&format!("host-{name}"), nats.url()).agent(AgentSpec::silent(&sender));
        let config = recipients.iter().fold(config, |config, r| config.agent(AgentSpec::new(r, &gateway)));
        let config = limits.config().iter().fold(config, |config, line| config.limits(line));
        let adapter = Adapter::start(config).await;
        let send_url = format!("{}/api/send", adapter.base());
        Arc::new(Side {
            limits,
            adapter,
            gateway,
            send_url,
            sender,
            recipients,
            next: AtomicUsize::new(0),
            keys: AtomicUsize::new(0),
        })
    }

    /// Sends as `load` says, waits for the wakes, and adds it all to
    /// `tally`; returns the round's stored per second.
    async fn round(self: &Arc<Side>, http: &reqwest::Client, load: Load, tally: &mut Tally) -> f64 {
        let cpu_before = self.cpu();
        let began = Instant::now();
        let sent = match load {
            Load::OneAtATime(count) => self.send_while(http, |n| n < count).await,
            Load::InFlight(senders, duration) => {
                let deadline = began + duration;
                let mut tasks = JoinSet::new();
                for _ in 0..senders {
                    let (side, http) = (self.clone(), http.clone());
                    tasks.spawn(async move { side.send_while(&http, |_| Instant::now() < deadline).await });
                }
                tasks.join_all().await.into_iter().flatten().collect()
            }
        };
        let seconds = sent.iter().map(|s| s.answered).max().unwrap_or(began).duration_since(began).as_secs_f64();
        let woken = self.woken(&sent).await;
        let cpu = self.cpu().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
        tally.add(&sent, &woken, seconds, cpu)
    }

    /// Sends one message after another while `more(sent so far)`; with
    /// replies, every other message replies to the one before.
    async fn send_while(&self, http: &reqwest::Client, mut more: impl FnMut(usize) -> bool) -> Vec<Sent> {
        let mut sent = Vec::new();
        let mut parent = None;
        while more(sent.len()) {
            let reply_to = parent.take();
            let one = self.send(http, reply_to).await;
            if self.limits.replies() && reply_to.is_none() {
                parent = one.outcome.as_ref().ok().copied();
            }
            sent.push(one);
        }
        sent
    }

    /// One `POST /api/send` to the next recipient.
    async fn send(&self, http: &reqwest::Client, reply_to: Option<u64>) -> Sent {
        let to = self.next.fetch_add(1, Ordering::Relaxed) % self.recipients.len();
        let mut body = json!({"from": self.sender, "to": self.recipients[to], "content": CONTENT});
        if let Some(parent) = reply_to {
            body["reply_to"] = parent.into();
        }
        let key = format!("{}-{}", self.limits.name(), self.keys.fetch_add(1, Ordering::Relaxed));
        let request = http
            .post(&self.send_url)
            .header(CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .body(body.to_string());
        let started = Instant::now();
        let outcome = super::fleet::stored_id(request).await;
        Sent { to, started, answered: Instant::now(), outcome }
    }

    /// Waits until a wake covers every stored message of `sent` (or
    /// [`SETTLE`] passes); per stored message, in order, its send-to-wake
    /// latency, `None` if no wake came.
    async fn woken(&self, sent: &[Sent]) -> Vec<Option<Duration>> {
        let deadline = Instant::now() + SETTLE;
        let mut pause = Duration::from_millis(20);
        loop {
            let coverage = self.coverage();
            let woken: Vec<Option<Duration>> = sent
                .iter()
                .filter_map(|s| {
                    let id = *s.outcome.as_ref().ok()?;
                    let wakes = &coverage[s.to];
                    let first = wakes.get(wakes.partition_point(|&(up_to, _)| up_to < id));
                    Some(first.map(|&(_, arrived)| arrived.saturating_duration_since(s.started)))
                })
                .collect();
            if woken.iter().all(Option::is_some) || Instant::now() >= deadline {
                return woken;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Per recipient, its wakes as `(up_to, earliest arrival among the
    /// wakes covering at least up_to)`, ascending: a wake with
    /// `Clawbus-Up-To: U` covers every message to its agent up to id U.
    fn coverage(&self) -> Vec<Vec<(u64, Instant)>> {
        let mut wakes = vec![Vec::new(); self.recipients.len()];
        for wake in self.gateway.wakes() {
            let agent = wake.agent_id.and_then(|id| self.recipients.iter().position(|r| *r == id));
            if let (Some(agent), Some(up_to)) = (agent, wake.up_to) {
                wakes[agent].push((up_to, wake.arrived));
            }
        }
        for agent in &mut wakes {
            agent.sort_unstable_by_key(|&(up_to, _)| up_to);
            for i in (1..agent.len()).rev() {
                agent[i - 1].1 = agent[i - 1].1.min(agent[i].1);
            }
        }
        wakes
    }

    fn cpu(&self) -> Option<Duration> {
        self.adapter.resources().map(|r| r.cpu)
    }
}

/// One side's samples over the rounds of one kind.
#[derive(Default)]
struct Tally {
    send: Vec<Duration>,
    wake: Vec<Duration>,
    sent: usize,
    stored: usize,
    errors: usize,
    error_examples: Vec<String>,
    missing: usize,
    seconds: f64,
    rounds: Vec<f64>,
    /// Per round, the adapter's CPU time, if readable.
    cpu: Vec<Option<Duration>>,
}

impl Tally {
    /// Adds a round; returns its stored per second.
    fn add(&mut self, sent: &[Sent], woken: &[Option<Duration>], seconds: f64, cpu: Option<Duration>) -> f64 {
        let mut stored = 0;
        for s in sent {
            match &s.outcome {
                Ok(_) => {
                    stored += 1;
                    self.send.push(s.answered - s.started);
                }
                Err(err) => {
                    self.errors += 1;
                    if self.error_examples.len() < 5 && !self.error_examples.contains(err) {
                        self.error_examples.push(err.clone());
                    }
                }
            }
        }
        self.wake.extend(woken.iter().flatten());
        self.missing += woken.iter().filter(|w| w.is_none()).count();
        self.sent += sent.len();
        self.stored += stored;
        self.seconds += seconds;
        let rate = stored as f64 / seconds;
        self.rounds.push(rate);
        self.cpu.push(cpu);
        rate
    }

    fn phase(self) -> Phase {
        let stored = self.stored;
        let cpu: Option<Duration> = self.cpu.into_iter().sum();
        Phase {
            sent: self.sent,
            stored,
            errors: self.errors,
            error_examples: self.error_examples,
            missing: self.missing,
            seconds: self.seconds,
            stored_per_s: stored as f64 / self.seconds,
            rounds_stored_per_s: self.rounds,
            send: Summary::of(self.send),
            send_to_wake: Summary::of(self.wake),
            adapter_cpu_us_per_msg: cpu.filter(|_| stored > 0).map(|cpu| ms(cpu) * 1e3 / stored as f64),
        }
    }
}
