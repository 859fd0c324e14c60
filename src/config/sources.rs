//! Where settings come from besides the file: the environment, the machine's
//! name, and the duration syntax.

use std::time::Duration;

use figment::providers::Env;
use serde::{Deserialize, Deserializer};

/// `CLAWBUS_HOST`, `CLAWBUS_THREADS` and `CLAWBUS_{HTTP,NATS,WAKE,LOG,LIMITS}__*` variables; other
/// `CLAWBUS_*` names (`CLAWBUS_CONFIG`, a tool's own) are not configuration.
/// Keys are lower-cased except agent names under `http.tokens`, which are
/// case-sensitive.
pub(super) fn env_provider() -> Env {
    const SECTIONS: [&str; 7] = ["host", "threads", "http", "nats", "wake", "log", "limits"];
    Env::prefixed("CLAWBUS_")
        .filter(|key| {
            let section = key.as_str().split("__").next().unwrap_or_default();
            SECTIONS.iter().any(|known| section.eq_ignore_ascii_case(known))
        })
        .map(|key| {
            let mut out: Vec<String> = Vec::new();
            for part in key.as_str().split("__") {
                let is_token_name = out.len() == 2 && out[0] == "http" && out[1] == "tokens";
                out.push(if is_token_name { part.to_owned() } else { part.to_ascii_lowercase() });
            }
            out.join(".").into()
        })
        // Last: figment turns lower-casing back on with every `map`.
        .lowercase(false)
}

pub(super) fn default_host() -> String {
    let raw = gethostname::gethostname().to_string_lossy().into_owned();
    let short = raw.split('.').next().unwrap_or_default();
    let clean: String = short
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .take(crate::names::MAX_AGENT_NAME)
        .collect();
    if clean.is_empty() { "localhost".into() } else { clean }
}

/// Durations are written `20ms`, `30s`, `10m`, `7d`.
pub(super) fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(deserializer)?;
    humantime::parse_duration(raw.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {raw:?} ({e}); write e.g. 20ms, 30s, 10m, 7d")))
}
