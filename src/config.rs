//! The adapter's configuration: a TOML file, then `CLAWBUS_*` environment
//! variables (`__` separates nesting levels, e.g. `CLAWBUS_NATS__URL`).
//!
//! Loading validates everything up front: a bad value stops start-up with a
//! message that names the key, rather than surfacing later as a failed wake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use reqwest::Url;
use serde::{Deserialize, Deserializer};

use crate::names::AgentName;

/// Default path of the config file when neither `--config` nor
/// `CLAWBUS_CONFIG` names one.
pub const DEFAULT_PATH: &str = "clawbus.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("{0}")]
    Parse(Box<figment::Error>),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name this adapter reports in the agent registry.
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub nats: NatsConfig,
    #[serde(default)]
    pub wake: WakeConfig,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub max_message_bytes: usize,
    /// May act as any agent and read the whole fleet.
    pub operator_token: Option<String>,
    /// Agent name → API token. Empty (and no operator token) means no auth.
    pub tokens: BTreeMap<String, String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8091)),
            max_message_bytes: 256 * 1024,
            operator_token: None,
            tokens: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// One or more server URLs, comma-separated.
    pub url: String,
    pub credentials: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub stream: String,
    pub replicas: usize,
    #[serde(deserialize_with = "duration")]
    pub max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub duplicate_window: Duration,
    /// How long a send may wait for JetStream's acknowledgement before the
    /// adapter settles its outcome another way (see `bus::publish`).
    #[serde(deserialize_with = "duration")]
    pub send_timeout: Duration,
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            user: None,
            password: None,
            token: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            stream: "CLAWBUS".into(),
            replicas: 1,
            max_age: Duration::from_secs(7 * 24 * 3600),
            duplicate_window: Duration::from_secs(600),
            send_timeout: Duration::from_secs(5),
        }
    }
}

impl NatsConfig {
    pub fn urls(&self) -> Vec<String> {
        self.url.split(',').map(str::trim).filter(|u| !u.is_empty()).map(String::from).collect()
    }
}

/// How an agent is told that messages are waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeMode {
    /// `POST /hooks/wake` with a short notice that carries no content.
    Wake,
    /// `POST /hooks/agent` with the messages themselves.
    Agent,
    /// No wake-ups: the agent polls or streams.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeConfig {
    pub mode: WakeMode,
    /// Extra wait after the first pending message, to fold more into one wake.
    #[serde(deserialize_with = "duration")]
    pub coalesce: Duration,
    #[serde(deserialize_with = "duration")]
    pub max_backoff: Duration,
    /// Per-attempt deadline of a gateway call.
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    /// Defaults for agents that do not set their own: one OpenClaw gateway
    /// usually serves every agent of a host.
    pub gateway: Option<String>,
    pub hook_token: Option<String>,
}

impl Default for WakeConfig {
    fn default() -> Self {
        Self {
            mode: WakeMode::Wake,
            coalesce: Duration::ZERO,
            max_backoff: Duration::from_secs(30),
            timeout: Duration::from_secs(15),
            gateway: None,
            hook_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub name: AgentName,
    pub gateway: Option<String>,
    pub hook_token: Option<String>,
    /// `agentId` sent to the gateway; default: the agent's name.
    pub openclaw_agent: Option<String>,
    pub wake: Option<WakeMode>,
}

/// An agent hosted by this adapter, with every default resolved.
#[derive(Debug, Clone)]
pub struct LocalAgent {
    pub name: AgentName,
    pub mode: WakeMode,
    /// `None` only when `mode` is [`WakeMode::None`].
    pub gateway: Option<Gateway>,
}

#[derive(Debug, Clone)]
pub struct Gateway {
    pub url: Url,
    pub hook_token: String,
    pub openclaw_agent: String,
}

impl Config {
    /// Loads `path` (or the default file, which may be absent), then the
    /// environment, and validates the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) if !path.exists() => return Err(ConfigError::Missing(path.to_owned())),
            Some(path) => path.to_owned(),
            None => PathBuf::from(DEFAULT_PATH),
        };
        Self::from_figment(Figment::new().merge(Toml::file(file)).merge(env_provider()))
    }

    /// Parses a TOML document (no environment); used by tests and tools.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        AgentName::parse(&self.host).map_err(|e| invalid("host", e.to_string()))?;
        AgentName::parse(&self.nats.stream)
            .map_err(|_| invalid("nats.stream", "may contain only letters, digits, '_' and '-'"))?;
        if self.nats.urls().is_empty() {
            return Err(invalid("nats.url", "no server URL given"));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(invalid("nats.replicas", "must be between 1 and 5"));
        }
        if self.nats.duplicate_window.is_zero() || self.nats.duplicate_window > self.nats.max_age {
            return Err(invalid("nats.duplicate_window", "must be positive and at most nats.max_age"));
        }
        if self.nats.send_timeout.is_zero() {
            return Err(invalid("nats.send_timeout", "must be positive"));
        }
        if self.http.max_message_bytes == 0 || self.http.max_message_bytes > 8 * 1024 * 1024 {
            return Err(invalid("http.max_message_bytes", "must be between 1 and 8388608"));
        }
        for (agent, token) in &self.http.tokens {
            let key = format!("http.tokens.{agent}");
            AgentName::parse(agent).map_err(|e| invalid(&key, e.to_string()))?;
            if token.is_empty() {
                return Err(invalid(key, "token is empty"));
            }
        }
        if self.http.operator_token.as_deref() == Some("") {
            return Err(invalid("http.operator_token", "token is empty"));
        }
        if self.wake.max_backoff < Duration::from_millis(100) {
            return Err(invalid("wake.max_backoff", "must be at least 100ms"));
        }
        if self.wake.timeout.is_zero() {
            return Err(invalid("wake.timeout", "must be positive"));
        }
        self.local_agents().map(drop)
    }

    /// The agents this adapter hosts, with gateway defaults applied.
    pub fn local_agents(&self) -> Result<Vec<LocalAgent>, ConfigError> {
        let mut seen = std::collections::HashSet::new();
        self.agents
            .iter()
            .enumerate()
            .map(|(i, agent)| {
                let key = |field: &str| format!("agents[{i}].{field}");
                if !seen.insert(agent.name.clone()) {
                    return Err(invalid(key("name"), format!("agent {} is listed twice", agent.name)));
                }
                let mode = agent.wake.unwrap_or(self.wake.mode);
                let gateway = match mode {
                    WakeMode::None => None,
                    WakeMode::Wake | WakeMode::Agent => Some(self.gateway_for(agent, &key)?),
                };
                Ok(LocalAgent { name: agent.name.clone(), mode, gateway })
            })
            .collect()
    }

    fn gateway_for(&self, agent: &AgentConfig, key: &dyn Fn(&str) -> String) -> Result<Gateway, ConfigError> {
        let raw = agent
            .gateway
            .as_ref()
            .or(self.wake.gateway.as_ref())
            .ok_or_else(|| invalid(key("gateway"), "required (here or as wake.gateway) unless wake = \"none\""))?;
        let url = Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| invalid(key("gateway"), format!("{raw:?} is not an http(s) URL")))?;
        let hook_token = agent
            .hook_token
            .as_ref()
            .or(self.wake.hook_token.as_ref())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid(key("hook_token"), "required (here or as wake.hook_token) unless wake = \"none\""))?
            .clone();
        let openclaw_agent = agent.openclaw_agent.clone().unwrap_or_else(|| agent.name.as_str().to_owned());
        if openclaw_agent.is_empty() {
            return Err(invalid(key("openclaw_agent"), "is empty"));
        }
        Ok(Gateway { url, hook_token, openclaw_agent })
    }

    /// Subject prefix of the stream: its name in lower case, so that several
    /// buses can share one NATS account.
    pub fn subject_prefix(&self) -> String {
        self.nats.stream.to_ascii_lowercase()
    }
}

/// `CLAWBUS_HOST` and `CLAWBUS_{HTTP,NATS,WAKE}__*` variables; other
/// `CLAWBUS_*` names (`CLAWBUS_CONFIG`, a tool's own) are not configuration.
/// Keys are lower-cased except agent names under `http.tokens`, which are
/// case-sensitive.
fn env_provider() -> Env {
    const SECTIONS: [&str; 4] = ["host", "http", "nats", "wake"];
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

fn default_host() -> String {
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
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let raw = String::deserialize(deserializer)?;
    humantime::parse_duration(raw.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {raw:?} ({e}); write e.g. 20ms, 30s, 10m, 7d")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        host = "mini-pc-3"
        [http]
        listen = "127.0.0.1:9000"
        [http.tokens]
        Alice = "s3cret"
        [nats]
        url = "nats://a:4222, nats://b:4222"
        max_age = "2d"
        [wake]
        coalesce = "20ms"
        gateway = "http://127.0.0.1:18789"
        hook_token = "hook"
        [[agents]]
        name = "bob"
        openclaw_agent = "main"
        [[agents]]
        name = "carol"
        wake = "none"
    "#;

    #[test]
    fn full_example_resolves_defaults() {
        let config = Config::from_toml(FULL).unwrap();
        assert_eq!(config.nats.urls(), ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.nats.max_age, Duration::from_secs(2 * 86400));
        assert_eq!(config.wake.coalesce, Duration::from_millis(20));
        assert_eq!(config.http.tokens["Alice"], "s3cret");
        let agents = config.local_agents().unwrap();
        let bob = agents[0].gateway.as_ref().unwrap();
        assert_eq!((bob.openclaw_agent.as_str(), bob.hook_token.as_str()), ("main", "hook"));
        assert!(agents[1].gateway.is_none());
        assert_eq!(config.subject_prefix(), "clawbus");
    }

    fn error_of(toml: &str) -> String {
        Config::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(error_of("[nats]\nmax_age = \"soon\"").contains("nats.max_age"));
        assert!(error_of("[http]\nlisten = 5").contains("http.listen"));
        assert!(error_of("[http]\nlistn = \"x\"").contains("listn"));
        assert!(error_of("[[agents]]\nname = \"a.b\"").contains("agents"));
        assert!(error_of("[[agents]]\nname = \"bob\"").contains("agents[0].gateway"));
        let no_token = "[[agents]]\nname = \"bob\"\ngateway = \"http://h:1\"";
        assert!(error_of(no_token).contains("agents[0].hook_token"));
        let twice = "[wake]\nmode = \"none\"\n[[agents]]\nname = \"b\"\n[[agents]]\nname = \"b\"";
        assert!(error_of(twice).contains("agents[1].name"));
        assert!(error_of("[nats]\nreplicas = 7").contains("nats.replicas"));
        assert!(error_of("[http.tokens]\n\"a*\" = \"x\"").contains("http.tokens.a*"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns figment::Error
    fn environment_overrides_the_file_and_keeps_token_case() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[nats]\nurl = \"nats://file:4222\"")?;
            jail.set_env("CLAWBUS_NATS__URL", "nats://env:4222");
            jail.set_env("CLAWBUS_HTTP__TOKENS__Bob", "t");
            jail.set_env("CLAWBUS_CONFIG", "not configuration");
            jail.set_env("CLAWBUS_BIN", "nor this");
            let config = Config::load(Some(Path::new("c.toml"))).unwrap();
            assert_eq!(config.nats.url, "nats://env:4222");
            assert_eq!(config.http.tokens["Bob"], "t");
            Ok(())
        });
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        assert!(matches!(Config::load(Some(Path::new("/nonexistent.toml"))), Err(ConfigError::Missing(_))));
    }
}
