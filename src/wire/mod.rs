//! The HTTP API's bodies and answers as typed values: what a request may
//! hold (decoded by serde, refusing unknown fields), and every answer of
//! API.md (encoded by serde). The endpoints and the command-line client
//! share them, so a field added here is one the compiler carries to both.

mod answer;
mod decode;
mod field;
mod query;
mod request;

pub(crate) use answer::{
    Acked, AgentEntry, Agents, ErrorAnswer, Health, History, HostRow, Inbox, Latencies, MessagePage, NatsStats,
    PathSteps, Ready, Released, Sent, Stats, StoppedThread, ThreadStats, WakeFailing, WakeStats,
};
pub(crate) use decode::{Invalid, agent_name, decode, decode_params};
pub(crate) use query::{HistoryParams, InboxParams, StreamParams};
pub(crate) use request::{AckBody, SendBody, bad_priority};

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value, with the strings the API gives meaning to among them.
    pub(crate) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            "\\PC{0,80}".prop_map(Value::from),
            prop_oneof![Just("bob"), Just("*"), Just("urgent"), Just("a.b")].prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| proptest::collection::vec(inner, 0..4).prop_map(Value::from))
    }
}
