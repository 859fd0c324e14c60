//! One measured step: what was offered, what came back, and whether the
//! path sustained it.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::load::Run;
use super::meter::Cost;
use super::stats::{Summary, ms, p99};
use super::table::thousands;
use super::target::{Arrivals, Attempt, Side};

/// Lateness (p99) beyond which the generator counts as behind schedule;
/// tokio's millisecond timer alone accounts for up to one.
const BEHIND: Duration = Duration::from_millis(5);
/// An open-loop step that stored less than this share of its offered rate
/// could not keep up: the path is saturated.
const KEPT_UP: f64 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Opens connections and fills caches; not compared.
    Warmup,
    /// One of the offered rates asked for.
    Fixed,
    /// A rate tried while searching for the highest sustained one.
    Probe,
    /// Closed loop: the most sends per second.
    Saturate,
}

/// How load was offered.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Open loop, sends per second.
    Rate(f64),
    /// Closed loop, sends in flight.
    InFlight(usize),
}

/// What a step ran.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub side: Side,
    pub kind: Kind,
    pub load: Load,
}

/// One measured step of one side.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub side: Side,
    pub kind: Kind,
    /// Sends per second offered (open loop).
    pub offered_rate: Option<f64>,
    /// Sends kept in flight (closed loop).
    pub concurrency: Option<usize>,
    /// From the first send to the last answer.
    pub seconds: f64,
    pub sent: usize,
    /// Answered 200 (clawbus, the HTTP floor) or acknowledged (raw).
    pub stored: usize,
    pub stored_rate: f64,
    pub errors: usize,
    /// A few distinct error texts.
    pub error_examples: Vec<String>,
    /// Stored but never woken (clawbus), received (raw) or seen by the
    /// endpoint (the HTTP floor).
    pub missing: usize,
    /// Wake calls (clawbus), consumer receipts (raw) or requests handled
    /// (the HTTP floor) during the step.
    pub deliveries: usize,
    /// Client clock just before the send → the wake's (receipt's, the
    /// endpoint's handler's) arrival.
    pub latency: Option<Summary>,
    /// The same from the time the send was scheduled: includes the
    /// generator's lateness, so coordinated omission cannot hide a queue.
    pub latency_from_schedule: Option<Summary>,
    /// The slowest messages and when in the step they were sent: one
    /// stall of the machine looks different from a slow path.
    pub slowest: Vec<Slow>,
    /// Just before the send → its answer (HTTP 200, publish ack).
    pub answer: Option<Summary>,
    /// Generator lateness: actual send minus scheduled time.
    pub lateness: Option<Summary>,
    pub generator_behind: bool,
    pub cost: Cost,
    /// Nothing lost, no errors, and p99 under the limit however measured.
    pub sustained: bool,
}

impl Step {
    pub fn new(plan: Plan, run: &Run, arrivals: &Arrivals, cost: Cost, limit: Duration) -> Step {
        let stored: Vec<&Attempt> = run.attempts.iter().filter(|a| a.outcome.is_ok()).collect();
        let mut error_examples: Vec<String> =
            run.attempts.iter().filter_map(|a| a.outcome.as_ref().err().cloned()).collect();
        let errors = error_examples.len();
        error_examples.sort();
        error_examples.dedup();
        error_examples.truncate(3);
        let arrived: Vec<(&Attempt, Instant)> =
            stored.iter().zip(&arrivals.at).filter_map(|(attempt, at)| Some((*attempt, (*at)?))).collect();
        let since = |from: Instant, to: Instant| to.saturating_duration_since(from);
        let latency = Summary::of(arrived.iter().map(|(a, at)| since(a.started, *at)).collect());
        let latency_from_schedule =
            Summary::of(arrived.iter().filter_map(|(a, at)| Some(since(a.scheduled?, *at))).collect());
        let lateness = Summary::of(run.attempts.iter().filter_map(|a| Some(since(a.scheduled?, a.started))).collect());
        let first = run.attempts.iter().map(|a| a.started).min();
        let last = run.attempts.iter().map(|a| a.answered).max();
        let seconds = first.zip(last).map_or(0.0, |(first, last)| since(first, last).as_secs_f64());
        let missing = stored.len() - arrived.len();
        let under = |summary: &Option<Summary>| summary.as_ref().is_none_or(|s| s.p99_ms < ms(limit));
        let (offered_rate, concurrency) = match plan.load {
            Load::Rate(rate) => (Some(rate), None),
            Load::InFlight(n) => (None, Some(n)),
        };
        let sustained =
            errors == 0 && missing == 0 && latency.is_some() && under(&latency) && under(&latency_from_schedule);
        Step {
            side: plan.side,
            kind: plan.kind,
            offered_rate,
            concurrency,
            seconds,
            sent: run.attempts.len(),
            stored: stored.len(),
            stored_rate: if seconds > 0.0 { stored.len() as f64 / seconds } else { 0.0 },
            errors,
            error_examples,
            missing,
            deliveries: arrivals.deliveries,
            sustained,
            generator_behind: lateness.as_ref().is_some_and(|l| l.p99_ms > ms(BEHIND)),
            latency,
            latency_from_schedule,
            slowest: slowest(run.began, &arrived),
            answer: Summary::of(stored.iter().map(|a| since(a.started, a.answered)).collect()),
            lateness,
            cost,
        }
    }

    pub(super) fn p99(&self) -> f64 {
        p99(self.latency.as_ref())
    }

    /// Why an open-loop step was not sustained, in words.
    pub(super) fn trouble(&self, limit: Duration) -> Vec<String> {
        let mut trouble = Vec::new();
        if let Some(offered) = self.offered_rate.filter(|&offered| self.stored_rate < KEPT_UP * offered) {
            let (stored, offered) = (thousands(self.stored_rate), thousands(offered));
            trouble.push(format!("saturated: stored {stored}/s of {offered}/s offered"));
        }
        let over = |summary: Option<&Summary>| summary.is_some_and(|s| s.p99_ms >= ms(limit));
        if over(self.latency.as_ref()) || over(self.latency_from_schedule.as_ref()) {
            let from_schedule = p99(self.latency_from_schedule.as_ref());
            trouble.push(format!("p99 {:.0} ms (from schedule {from_schedule:.0} ms)", self.p99()));
        }
        if self.generator_behind {
            let late = self.lateness.as_ref().map_or(0.0, |l| l.max_ms);
            trouble.push(format!("generator up to {late:.0} ms behind schedule"));
        }
        if self.errors > 0 {
            trouble.push(format!("{} errors, e.g. {:?}", self.errors, self.error_examples));
        }
        if self.missing > 0 {
            trouble.push(format!("{} stored but never {}", self.missing, self.side.arrival()));
        }
        trouble
    }
}

/// The slowest of the `arrived` messages, from a step begun at `began`.
fn slowest(began: Instant, arrived: &[(&Attempt, Instant)]) -> Vec<Slow> {
    let mut slowest: Vec<Slow> = arrived
        .iter()
        .map(|(attempt, at)| Slow {
            sent_at_s: attempt.started.saturating_duration_since(began).as_secs_f64(),
            latency_ms: ms(at.saturating_duration_since(attempt.started)),
        })
        .collect();
    slowest.sort_by(|a, b| b.latency_ms.total_cmp(&a.latency_ms));
    slowest.truncate(SLOWEST);
    slowest
}

/// How many of the slowest messages a step lists.
const SLOWEST: usize = 5;

/// One slow message.
#[derive(Clone, Debug, Serialize)]
pub struct Slow {
    /// Seconds from the start of the step to its send.
    pub sent_at_s: f64,
    pub latency_ms: f64,
}
