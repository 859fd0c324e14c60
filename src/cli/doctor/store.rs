//! How full JetStream's store is, against each limit that refuses writes
//! once reached: the account's (JetStream account info), the server's
//! `max_file_store` and `max_memory_store` (its monitoring endpoint), and
//! the stream's `max_bytes` when one is set. At a limit, sends answer 507
//! until space is freed or the limit raised.

use async_nats::jetstream::account::Account;
use async_nats::jetstream::stream;
use serde_json::Value;

use super::{Report, Verdict};

/// Share of a limit from which doctor warns.
const WARN_AT: f64 = 0.8;
/// Share of a limit from which writes are refused or about to be: the
/// server checks a limit before each write, so usage ends just past it.
const FULL_AT: f64 = 0.95;

/// One kind of storage: bytes used, and the limit if there is one.
struct Usage {
    kind: &'static str,
    used: u64,
    limit: Option<u64>,
}

impl Usage {
    fn share(&self) -> Option<f64> {
        self.limit.filter(|&limit| limit > 0).map(|limit| self.used as f64 / limit as f64)
    }

    fn verdict(&self) -> Verdict {
        match self.share() {
            Some(share) if share >= FULL_AT => Verdict::Fail,
            Some(share) if share >= WARN_AT => Verdict::Warn,
            _ => Verdict::Ok,
        }
    }

    fn describe(&self) -> String {
        let used = size(self.used);
        match (self.limit, self.share()) {
            (Some(limit), Some(share)) => format!("{} {used} of {} ({:.0}%)", self.kind, size(limit), share * 100.0),
            _ => format!("{} {used} (no limit)", self.kind),
        }
    }
}

/// Prints one line for `usages`, judged by the fullest; `raise` names the
/// setting an operator raises.
fn line(report: &mut Report, what: &str, usages: &[Usage], raise: &str) {
    let verdict = usages.iter().map(Usage::verdict).max().unwrap_or(Verdict::Ok);
    let described = usages.iter().map(Usage::describe).collect::<Vec<_>>().join(", ");
    let advice = match verdict {
        Verdict::Ok => String::new(),
        Verdict::Warn => format!(": nearly full; at the limit sends answer 507 (free space or raise {raise})"),
        Verdict::Fail => format!(": full, sends answer 507 until space is freed or {raise} raised"),
    };
    report.line(verdict, what, format!("{described}{advice}"));
}

/// The account's usage against its own JetStream limits.
pub(super) fn account(account: &Account, report: &mut Report) {
    let limit = |value: Option<i64>| value.and_then(|v| u64::try_from(v).ok()).filter(|&v| v > 0);
    let usages = [
        Usage { kind: "file", used: account.storage, limit: limit(account.limits.max_storage) },
        Usage { kind: "memory", used: account.memory, limit: limit(account.limits.max_memory) },
    ];
    line(report, "account store", &usages, "the account's max_file");
}

/// The whole server's usage against `max_file_store` and
/// `max_memory_store`, from its `/varz`.
pub(super) fn server(varz: &Value, report: &mut Report) {
    let jetstream = &varz["jetstream"];
    let (stats, config) = (&jetstream["stats"], &jetstream["config"]);
    let usages = [
        Usage { kind: "file", used: stats["storage"].as_u64().unwrap_or(0), limit: config["max_storage"].as_u64() },
        Usage { kind: "memory", used: stats["memory"].as_u64().unwrap_or(0), limit: config["max_memory"].as_u64() },
    ];
    line(report, "server store", &usages, "max_file_store");
}

/// The stream's bytes against its `max_bytes`, when one is set.
pub(super) fn stream(info: &stream::Info, report: &mut Report) {
    let Ok(limit) = u64::try_from(info.config.max_bytes) else { return };
    if limit == 0 {
        return;
    }
    let usage = Usage { kind: "messages", used: info.state.bytes, limit: Some(limit) };
    line(report, "stream bytes", &[usage], "the stream's max_bytes");
}

/// Bytes for people: "8.1 MB".
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(used: u64, limit: Option<u64>) -> Usage {
        Usage { kind: "file", used, limit }
    }

    #[test]
    fn fullness_is_judged_against_the_limit() {
        assert_eq!(usage(10, None).verdict(), Verdict::Ok);
        assert_eq!(usage(79, Some(100)).verdict(), Verdict::Ok);
        assert_eq!(usage(80, Some(100)).verdict(), Verdict::Warn);
        assert_eq!(usage(95, Some(100)).verdict(), Verdict::Fail);
        assert_eq!(usage(101, Some(100)).verdict(), Verdict::Fail);
        assert_eq!(usage(8_500_000, Some(8 << 20)).describe(), "file 8.1 MB of 8.0 MB (101%)");
        assert_eq!(usage(512, None).describe(), "file 512 B (no limit)");
    }
}
