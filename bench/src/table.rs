//! The run as the table `clawbus-bench` prints: per mode, each offered
//! rate with clawbus above raw JetStream and the HTTP floor, and clawbus's
//! ratio to raw, what was not sustained and why, throughput and what the
//! floors leave room for, the highest sustained rate, the adapters' CPU and
//! memory; then fsync's cost and the targets.

use std::fmt::{self, Write as _};
use std::time::Duration;

use super::report::{ModeReport, Report};
use super::stats::{Summary, p99};
use super::step::{Kind, Step};
use super::target::Side;

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (m, s) = (&self.machine, &self.settings);
        writeln!(f, "clawbus send-to-wake benchmark")?;
        writeln!(
            f,
            "machine: {} x {}, {:.1} GiB, {}; {}; adapter {}",
            m.cpus, m.cpu_model, m.memory_gib, m.kernel, m.nats_server, m.adapter_binary
        )?;
        writeln!(
            f,
            "load: {} agents on {} adapters, each message to an agent on another adapter; {} s per rate after a {} s warm-up",
            s.agents,
            s.adapters,
            s.step.as_secs_f64(),
            s.warmup.as_secs_f64()
        )?;
        writeln!(
            f,
            "latency: client clock just before the HTTP send → the wake's arrival at the gateway \
             (raw JetStream: before the publish → receipt at the consumer; http floor: before the send → \
             the endpoint's handler)"
        )?;
        writeln!(
            f,
            "CPU us/msg: the adapters' (http floor: its endpoint thread's); the closed-loop line adds every process"
        )?;
        for mode in &self.modes {
            write!(f, "\n{}", Table { mode, limit: s.p99_limit })?;
        }
        if let [always, default] = &self.modes[..] {
            write!(f, "\n{}", FsyncCost { always, default })?;
        }
        if !self.goals.is_empty() {
            writeln!(f, "\ntargets (sync_interval: always):")?;
            for goal in &self.goals {
                writeln!(f, "  {:<7}{}: {}", if goal.met { "met" } else { "MISSED" }, goal.goal, goal.value)?;
            }
        }
        Ok(())
    }
}

/// One mode's results.
struct Table<'a> {
    mode: &'a ModeReport,
    limit: Duration,
}

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = self.mode;
        writeln!(f, "sync_interval: {}", mode.sync_interval.describe())?;
        header(f)?;
        let mut notes = String::new();
        for rate in mode.fixed_rates() {
            for side in [Side::Clawbus, Side::Raw, Side::Http] {
                let Some(step) = mode.fixed(side, rate) else { continue };
                row(f, if side == Side::Clawbus { Some(rate) } else { None }, step)?;
                if !step.sustained {
                    let trouble = step.trouble(self.limit).join("; ");
                    writeln!(notes, "  {} at {}/s: {trouble}", side.name(), thousands(rate))?;
                }
            }
            if let Some(c) = mode.comparisons.iter().find(|c| c.rate == rate) {
                write!(f, "{:>9}  {:<8}", "", "ratio")?;
                for ratio in [c.p50, c.p90, c.p99, c.p999, c.max] {
                    write!(f, "{:>8}", format!("{ratio:.1}x"))?;
                }
                writeln!(f)?;
            }
        }
        if !notes.is_empty() {
            writeln!(f, "not sustained (p99 limit {} ms):\n{notes}", self.limit.as_millis())?;
        }
        self.throughput(f)?;
        self.highest(f)?;
        for adapter in &mode.adapters {
            writeln!(
                f,
                "adapter {}: CPU {:.1} s in all, RSS {:.1} MB (peak {:.1} MB)",
                adapter.host, adapter.cpu_s, adapter.rss_mb, adapter.peak_rss_mb
            )?;
        }
        Ok(())
    }
}

impl Table<'_> {
    fn throughput(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(t) = &self.mode.throughput else { return Ok(()) };
        let step = self.mode.steps.iter().find(|s| s.kind == Kind::Saturate).expect("throughput was measured");
        writeln!(
            f,
            "most messages stored per second ({} sends in flight): clawbus {}/s, raw JetStream {}/s: {:.2}x",
            step.concurrency.unwrap_or_default(),
            thousands(t.clawbus),
            thousands(t.raw),
            t.ratio
        )?;
        let Some(c) = &self.mode.ceiling else { return Ok(()) };
        writeln!(
            f,
            "  CPU per message in those runs, every process: clawbus {:.0} us (adapters {:.0}, nats-server {:.0}, \
             client and gateways {:.0}); raw JetStream {:.0} us; http floor {:.0} us (its endpoint {:.0}), \
             answering {}/s",
            c.clawbus_us,
            c.clawbus_adapters_us,
            c.clawbus_server_us,
            c.clawbus_bench_us,
            c.raw_us,
            c.http_us,
            c.http_endpoint_us,
            thousands(c.http_per_second)
        )?;
        writeln!(
            f,
            "  at those costs, one HTTP request and one publish with its delivery per message ({:.0} us) leave \
             room for {}/s on these cores: {:.2}x raw JetStream; clawbus reached {:.2} of that",
            c.raw_us + c.http_us,
            thousands(c.bound_per_second),
            c.bound_vs_raw,
            c.clawbus_vs_bound
        )
    }

    /// The highest sustained rates and the probes that found them.
    fn highest(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(h) = &self.mode.highest_sustained else { return Ok(()) };
        writeln!(
            f,
            "highest offered rate sustained with p99 under {} ms: clawbus {}/s, raw JetStream {}/s: {:.2}x",
            self.limit.as_millis(),
            thousands(h.clawbus),
            thousands(h.raw),
            h.ratio
        )?;
        for side in [Side::Clawbus, Side::Raw] {
            let probes: Vec<String> = self
                .mode
                .open_steps(side)
                .filter(|s| s.kind == Kind::Probe)
                .map(|s| {
                    let rate = thousands(s.offered_rate.unwrap_or_default());
                    format!("{rate}/s {} p99 {:.1} ms", if s.sustained { "ok" } else { "no" }, s.p99())
                })
                .collect();
            if !probes.is_empty() {
                writeln!(f, "  {} probes: {}", side.name(), probes.join(", "))?;
            }
        }
        Ok(())
    }
}

fn header(f: &mut fmt::Formatter<'_>) -> fmt::Result {
    writeln!(
        f,
        "{:>9}  {:<8}{:>8}{:>8}{:>8}{:>9}{:>8}{:>10}{:>8}{:>7}{:>11}{:>10}{:>11}{:>11}",
        "offered/s",
        "path",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "stored/s",
        "missing",
        "errors",
        "answer p99",
        "late p99",
        "CPU us/msg",
        "writes/msg"
    )
}

/// One step's line, the rate shown on the first line of each rate only.
fn row(f: &mut fmt::Formatter<'_>, rate: Option<f64>, step: &Step) -> fmt::Result {
    write!(f, "{:>9}  {:<8}", rate.map(thousands).unwrap_or_default(), step.side.name())?;
    for value in step.latency.as_ref().map_or([f64::NAN; 5], Summary::shown) {
        write!(f, "{value:>8.2}")?;
    }
    let per_message = |total: f64| total / step.stored as f64;
    let cpu = step.cost.adapters_cpu_ms.map_or("-".into(), |ms| format!("{:.0}", per_message(ms * 1e3)));
    let writes = step.cost.jetstream_writes.map_or("-".into(), |w| format!("{:.2}", per_message(w as f64)));
    writeln!(
        f,
        "{:>10}{:>8}{:>7}{:>11.2}{:>10.2}{:>11}{:>11}",
        thousands(step.stored_rate),
        step.missing,
        step.errors,
        p99(step.answer.as_ref()),
        p99(step.lateness.as_ref()),
        cpu,
        writes
    )
}

/// The same rates with and without fsync after every write.
struct FsyncCost<'a> {
    always: &'a ModeReport,
    default: &'a ModeReport,
}

impl fmt::Display for FsyncCost<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "fsync's cost: p50 / p99 in ms with sync_interval always vs default")?;
        for rate in self.always.fixed_rates() {
            write!(f, "{:>9}/s", thousands(rate))?;
            for side in [Side::Clawbus, Side::Raw] {
                let pair = |mode: &ModeReport| {
                    mode.fixed(side, rate).and_then(|s| s.latency.as_ref()).map(|l| (l.p50_ms, l.p99_ms))
                };
                if let (Some(always), Some(default)) = (pair(self.always), pair(self.default)) {
                    write!(
                        f,
                        "  {}: {:.2} / {:.2} vs {:.2} / {:.2}",
                        side.name(),
                        always.0,
                        always.1,
                        default.0,
                        default.1
                    )?;
                }
            }
            writeln!(f)?;
        }
        if let (Some(always), Some(default)) = (&self.always.throughput, &self.default.throughput) {
            writeln!(
                f,
                "most stored per second: clawbus {}/s vs {}/s, raw {}/s vs {}/s",
                thousands(always.clawbus),
                thousands(default.clawbus),
                thousands(always.raw),
                thousands(default.raw)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(1234567.0), "1,234,567");
    }
}
