//! What each agent's wakes came to, kept in the state bucket (`woken.<agent>`)
//! so that every adapter, and every restart, sees every host's: the wake
//! mark, the last call and its outcome, and counts.

use serde::{Deserialize, Serialize};

/// One agent's wakes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct WakeRecord {
    /// The wake mark: the newest message id covered by a call answered 200.
    pub up_to: u64,
    /// The host whose adapter wakes the agent.
    pub host: String,
    /// The last call.
    pub last: Option<LastWake>,
    /// Calls failed since the last success.
    pub failing: u32,
    /// Calls answered 200, and calls failed, in all.
    pub sent: u64,
    pub failed: u64,
    /// Messages covered by a wake they did not cause themselves.
    pub coalesced: u64,
}

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastWake {
    /// When, as the message timestamps are written.
    pub at: String,
    /// `queued` or `coalesced` (answered 200), `retryable` or `rejected`.
    pub outcome: String,
    /// From the oldest message covered being stored to the answer (successes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// The stored form. Older versions stored the mark alone, as a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Mark(u64),
    Record(Record),
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Record {
    up_to: u64,
    host: String,
    last: Option<LastWake>,
    failing: u32,
    sent: u64,
    failed: u64,
    coalesced: u64,
}

impl From<Stored> for WakeRecord {
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Mark(up_to) => WakeRecord { up_to, ..WakeRecord::default() },
            Stored::Record(r) => WakeRecord {
                up_to: r.up_to,
                host: r.host,
                last: r.last,
                failing: r.failing,
                sent: r.sent,
                failed: r.failed,
                coalesced: r.coalesced,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_mark_of_an_older_version_reads_as_a_record() {
        let old: WakeRecord = serde_json::from_str("42").unwrap();
        assert_eq!((old.up_to, old.sent), (42, 0));
        let record = WakeRecord { up_to: 7, host: "a".into(), failing: 2, ..WakeRecord::default() };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<WakeRecord>(&text).unwrap(), record);
    }
}
